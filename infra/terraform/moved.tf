# Where the buckets' resources lived when s3.tf wrote each bucket out longhand
# (aws_s3_bucket.data, aws_s3_bucket.artifacts[0], ...): Terraform moves them in
# the state to the for_each instances instead of destroying and re-creating the
# buckets. A source that is not in the state (the artifacts bucket after
# destroy-cluster) is skipped. Safe to delete once every deployment has applied
# this layout.

moved {
  from = aws_s3_bucket.data
  to   = aws_s3_bucket.this["data"]
}

moved {
  from = aws_s3_bucket.artifacts[0]
  to   = aws_s3_bucket.this["artifacts"]
}

moved {
  from = aws_s3_bucket.logs
  to   = aws_s3_bucket.this["logs"]
}

moved {
  from = aws_s3_bucket_public_access_block.data
  to   = aws_s3_bucket_public_access_block.this["data"]
}

moved {
  from = aws_s3_bucket_public_access_block.artifacts[0]
  to   = aws_s3_bucket_public_access_block.this["artifacts"]
}

moved {
  from = aws_s3_bucket_public_access_block.logs
  to   = aws_s3_bucket_public_access_block.this["logs"]
}

moved {
  from = aws_s3_bucket_ownership_controls.data
  to   = aws_s3_bucket_ownership_controls.this["data"]
}

moved {
  from = aws_s3_bucket_ownership_controls.artifacts[0]
  to   = aws_s3_bucket_ownership_controls.this["artifacts"]
}

moved {
  from = aws_s3_bucket_ownership_controls.logs
  to   = aws_s3_bucket_ownership_controls.this["logs"]
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.data
  to   = aws_s3_bucket_server_side_encryption_configuration.this["data"]
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.artifacts[0]
  to   = aws_s3_bucket_server_side_encryption_configuration.this["artifacts"]
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.logs
  to   = aws_s3_bucket_server_side_encryption_configuration.this["logs"]
}

moved {
  from = aws_s3_bucket_policy.data
  to   = aws_s3_bucket_policy.this["data"]
}

moved {
  from = aws_s3_bucket_policy.artifacts[0]
  to   = aws_s3_bucket_policy.this["artifacts"]
}

moved {
  from = aws_s3_bucket_policy.logs
  to   = aws_s3_bucket_policy.this["logs"]
}

moved {
  from = aws_s3_bucket_versioning.data
  to   = aws_s3_bucket_versioning.this["data"]
}

moved {
  from = aws_s3_bucket_versioning.artifacts[0]
  to   = aws_s3_bucket_versioning.this["artifacts"]
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.data
  to   = aws_s3_bucket_lifecycle_configuration.this["data"]
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.artifacts[0]
  to   = aws_s3_bucket_lifecycle_configuration.this["artifacts"]
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.logs
  to   = aws_s3_bucket_lifecycle_configuration.this["logs"]
}

moved {
  from = aws_s3_bucket_logging.data
  to   = aws_s3_bucket_logging.this["data"]
}

moved {
  from = aws_s3_bucket_logging.artifacts[0]
  to   = aws_s3_bucket_logging.this["artifacts"]
}

# The Glue tables: one for_each resource (glue.tf) since the similar-images tables joined the tags.
moved {
  from = aws_glue_catalog_table.tags
  to   = aws_glue_catalog_table.this["tags"]
}

moved {
  from = aws_glue_catalog_table.similar["neighbours"]
  to   = aws_glue_catalog_table.this["neighbours"]
}

moved {
  from = aws_glue_catalog_table.similar["duplicates"]
  to   = aws_glue_catalog_table.this["duplicates"]
}
