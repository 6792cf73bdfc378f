# EMR Serverless: the second target (make deploy-serverless / submit-serverless /
# destroy-serverless). No cluster to size or end: the application starts its
# workers on a job run and releases them after serverless_idle_timeout_minutes.
# It reuses the data and logs buckets, the Glue table and the models; the job's
# Python comes in the packed environment (spark.archives) instead of a bootstrap
# action, which EMR Serverless does not have. Switched by serverless_enabled,
# independently of cluster_enabled.

locals {
  # Read only while the application exists: the cluster targets need no archive.
  archive_checksum = var.serverless_enabled ? filemd5(local.node_env_archive) : ""
  entry_checksum   = var.serverless_enabled ? filemd5(local.entry_point_file) : ""
  archive_key      = "code/node-env-${substr(local.archive_checksum, 0, 12)}.tar.gz"
  entry_point_key  = "code/tag_images-${substr(local.entry_checksum, 0, 12)}.py"
  serverless_logs  = "s3://${local.buckets.logs}/serverless/"
}

resource "aws_emrserverless_application" "this" {
  count = local.serverless_count

  name          = "${var.name}-serverless"
  release_label = var.serverless_release_label
  type          = "SPARK" # as the API documents it (AWS answers "Spark"; the provider compares in lower case)

  maximum_capacity {
    cpu    = "${var.serverless_max_vcpu} vCPU"
    memory = "${var.serverless_max_memory_gb} GB"
  }

  auto_start_configuration {
    enabled = true
  }

  auto_stop_configuration {
    enabled              = true
    idle_timeout_minutes = var.serverless_idle_timeout_minutes
  }

  tags = { Name = "${var.name}-serverless", Profile = local.profile_name }
}

resource "aws_s3_object" "node_env_archive" {
  count = local.serverless_count

  bucket      = aws_s3_bucket.this["artifacts"].id
  key         = local.archive_key
  source      = local.node_env_archive
  source_hash = local.archive_checksum # uploaded in parts: no MD5 ETag

  content_type = "application/gzip"

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_s3_object" "entry_point" {
  count = local.serverless_count

  bucket = aws_s3_bucket.this["artifacts"].id
  key    = local.entry_point_key
  source = local.entry_point_file
  etag   = local.entry_checksum

  content_type = "text/x-python"

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}

# The role job runs assume: the same S3 access as the cluster's nodes (iam.tf:
# instance_s3), plus its own log prefix.
data "aws_iam_policy_document" "serverless_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["emr-serverless.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "serverless_job" {
  count = local.serverless_count

  name               = "${var.name}-serverless-job"
  description        = "Role of the image-tagger EMR Serverless job runs (S3 access to the project buckets only)"
  assume_role_policy = data.aws_iam_policy_document.serverless_assume.json
}

resource "aws_iam_role_policy" "serverless_s3" {
  count = local.serverless_count

  name   = "project-buckets"
  role   = aws_iam_role.serverless_job[0].id
  policy = data.aws_iam_policy_document.instance_s3.json
}

data "aws_iam_policy_document" "serverless_logs" {
  statement {
    sid       = "WriteServerlessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arns.logs}/serverless/*"]
  }
}

resource "aws_iam_role_policy" "serverless_logs" {
  count = local.serverless_count

  name   = "serverless-logs"
  role   = aws_iam_role.serverless_job[0].id
  policy = data.aws_iam_policy_document.serverless_logs.json
}
