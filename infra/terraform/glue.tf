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

resource "aws_glue_catalog_table" "tags" {
  name          = local.glue_table
  database_name = aws_glue_catalog_database.this.name
  description   = "Tags, head labels and embeddings written by jobs/tag_images.py with profile ${local.profile_name}; one row per image and run (filter by run_id / processed_at)."
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL       = "TRUE"
    classification = "parquet"
  }

  storage_descriptor {
    location      = local.output_location
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
      for_each = local.output_columns
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

# jobs/similar_images.py's two datasets, when it is run with
# --output s3://<data bucket>/outputs/<profile>/similar: each image's nearest
# neighbours, and the near-duplicate groups. Columns from the same resolution
# (similar_columns, from jobs.schema). Each run replaces them (docs/similar.md).
resource "aws_glue_catalog_table" "similar" {
  for_each = local.settings.similar_columns

  name          = each.key
  database_name = aws_glue_catalog_database.this.name
  description   = "${each.key} written by jobs/similar_images.py from the tags of profile ${local.profile_name}; replaced by each run."
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL       = "TRUE"
    classification = "parquet"
  }

  storage_descriptor {
    location      = "s3://${local.buckets.data}/outputs/${local.profile_name}/similar/${each.key}/"
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
      for_each = each.value
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}
