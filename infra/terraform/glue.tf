# ---------------------------------------------------------------------------
# The output in the Glue Data Catalog: one database and one EXTERNAL Parquet
# table over the stable output prefix s3://<data bucket>/outputs/<profile>/tags/
# that `make submit` writes to by default (incrementally: runs accumulate in
# one dataset). Athena can query it as soon as a run has written:
#   SELECT url, category FROM image_tagger.tags LIMIT 10
# The columns follow the deployed profile: its resolution lists them (locals.tf:
# output_columns, from the job's own jobs.schema), so they match the job's: heads
# add <name> and <name>_score, model.embedding adds embedding and
# embedding_norm. No partitions: the job appends unpartitioned Parquet files
# and readers filter by run_id / processed_at (see docs/cluster.md).
#
# Data, not compute: no cluster_count. destroy-cluster keeps the database and
# the table with the data bucket; destroy-all deletes them.
# ---------------------------------------------------------------------------

resource "aws_glue_catalog_database" "this" {
  name        = local.glue_database
  description = "Outputs of the image-tagging job (${var.name}); the tables point at s3://${local.buckets.data}/outputs/."
}

# One table per dataset: the tags, and jobs/similar_images.py's two datasets when
# it is run with --output s3://<data bucket>/outputs/<profile>/similar (each
# image's nearest neighbours, the near-duplicate groups; columns from the same
# resolution: similar_columns, from jobs.schema; each run replaces them, see
# docs/similar.md).
locals {
  glue_tables = merge(
    {
      (local.glue_table) = {
        location    = local.output_location
        columns     = local.output_columns
        description = "Tags, head labels and embeddings written by jobs/tag_images.py with profile ${local.profile_name}; one row per image and run (filter by run_id / processed_at)."
      }
    },
    {
      for name, columns in local.settings.similar_columns : name => {
        location    = "s3://${local.buckets.data}/outputs/${local.profile_name}/similar/${name}/"
        columns     = columns
        description = "${name} written by jobs/similar_images.py from the tags of profile ${local.profile_name}; replaced by each run."
      }
    },
  )
}

resource "aws_glue_catalog_table" "this" {
  for_each = local.glue_tables

  name          = each.key
  database_name = aws_glue_catalog_database.this.name
  description   = each.value.description
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL       = "TRUE"
    classification = "parquet"
  }

  storage_descriptor {
    location      = each.value.location
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      name                  = "parquet"
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = each.value.columns
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}
