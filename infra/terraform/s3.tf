# Three buckets, one per concern:
#   data      - manifests/ in, outputs/ out (versioned: protects results)
#   artifacts - code/, models/, bootstrap/ (versioned: a bad upload can be rolled back)
#   logs      - EMR logs, S3 access logs, VPC flow logs (expire after log_retention_days)
# Written out per bucket (no for_each) so that checkov can follow each
# bucket's settings. The artifacts bucket belongs to the cluster (count =
# local.cluster_count): make destroy-cluster removes it with its objects and
# keeps data and logs; make destroy-all empties those two and destroys them.

# ---------------------------------------------------------------------------
# data: manifests/ in, outputs/ out
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed: manifests and artifacts are re-created by make deploy-cluster and outputs by re-running the job; logs are transient.
  #checkov:skip=CKV_AWS_145:Encrypted with SSE-S3 (AES256, below); a customer-managed KMS key adds cost and key-policy upkeep that this batch job does not need.
  #checkov:skip=CKV2_AWS_62:No consumer listens for S3 events: jobs are started by make submit, not by uploads.
  bucket        = local.buckets.data
  force_destroy = var.force_destroy_buckets

  tags = { Name = local.buckets.data, Purpose = "data" }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket = aws_s3_bucket.data.id
  policy = data.aws_iam_policy_document.bucket["data"].json

  depends_on = [aws_s3_bucket_public_access_block.data]
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

resource "aws_s3_bucket_logging" "data" {
  bucket        = aws_s3_bucket.data.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/data/"

  # The logs bucket must grant the logging service first.
  depends_on = [aws_s3_bucket_policy.logs]
}

# ---------------------------------------------------------------------------
# artifacts: code/, models/, bootstrap/
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed: manifests and artifacts are re-created by make deploy-cluster and outputs by re-running the job; logs are transient.
  #checkov:skip=CKV_AWS_145:Encrypted with SSE-S3 (AES256, below); a customer-managed KMS key adds cost and key-policy upkeep that this batch job does not need.
  #checkov:skip=CKV2_AWS_62:No consumer listens for S3 events: jobs are started by make submit, not by uploads.
  count = local.cluster_count

  bucket        = local.buckets.artifacts
  force_destroy = true # rebuilt from the repository by every deploy

  tags = { Name = local.buckets.artifacts, Purpose = "artifacts" }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  count = local.cluster_count

  bucket                  = aws_s3_bucket.artifacts[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  policy = data.aws_iam_policy_document.bucket["artifacts"].json

  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

resource "aws_s3_bucket_versioning" "artifacts" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.artifacts]
}

resource "aws_s3_bucket_logging" "artifacts" {
  count = local.cluster_count

  bucket        = aws_s3_bucket.artifacts[0].id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/artifacts/"

  # The logs bucket must grant the logging service first.
  depends_on = [aws_s3_bucket_policy.logs]
}

# ---------------------------------------------------------------------------
# logs: EMR logs, S3 access logs, VPC flow logs
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed: manifests and artifacts are re-created by make deploy-cluster and outputs by re-running the job; logs are transient.
  #checkov:skip=CKV_AWS_145:Encrypted with SSE-S3 (AES256, below); a customer-managed KMS key adds cost and key-policy upkeep that this batch job does not need.
  #checkov:skip=CKV2_AWS_62:No consumer listens for S3 events: jobs are started by make submit, not by uploads.
  #checkov:skip=CKV_AWS_18:This is the access-log target bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_21:Logs expire after log_retention_days; versioning would keep expired logs as noncurrent versions.
  bucket        = local.buckets.logs
  force_destroy = var.force_destroy_buckets

  tags = { Name = local.buckets.logs, Purpose = "logs" }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.bucket["logs"].json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}

    expiration {
      days = var.log_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# ---------------------------------------------------------------------------
# Bucket policies: TLS only; the logs bucket also accepts S3 server access
# logs and VPC flow logs from this account.
# ---------------------------------------------------------------------------

locals {
  bucket_names = {
    data      = aws_s3_bucket.data.id
    artifacts = one(aws_s3_bucket.artifacts[*].id) # null after make destroy-cluster
    logs      = aws_s3_bucket.logs.id
  }
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.bucket_arns

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value,
      "${each.value}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # One statement per source bucket: the delivery is scoped to its prefix.
  dynamic "statement" {
    for_each = each.key == "logs" ? ["data", "artifacts"] : []
    content {
      sid       = "S3ServerAccessLogsFrom${title(statement.value)}"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${each.value}/s3-access/${statement.value}/*"]
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = [local.bucket_arns[statement.value]]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = each.key == "logs" ? [1] : []
    content {
      sid       = "VpcFlowLogsWrite"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${each.value}/AWSLogs/${local.account_id}/*"]
      principals {
        type        = "Service"
        identifiers = ["delivery.logs.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = each.key == "logs" ? [1] : []
    content {
      sid       = "VpcFlowLogsAclCheck"
      effect    = "Allow"
      actions   = ["s3:GetBucketAcl"]
      resources = [each.value]
      principals {
        type        = "Service"
        identifiers = ["delivery.logs.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }
}

# ---------------------------------------------------------------------------
# What the bootstrap action and the job read: code, bootstrap script, and
# every model the profile names (model.uri, model.heads[*].uri), each to
# models/<directory name>/. Terraform uploads them so the cluster (which
# depends on them) never boots before they exist; destroy-cluster removes them
# with the artifacts bucket.
# ---------------------------------------------------------------------------

resource "aws_s3_object" "bootstrap" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  key    = local.bootstrap_key
  source = local.bootstrap_file
  etag   = filemd5(local.bootstrap_file)

  content_type = "text/x-shellscript"

  depends_on = [aws_s3_bucket_versioning.artifacts, aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

resource "aws_s3_object" "code" {
  count = local.cluster_count

  bucket = aws_s3_bucket.artifacts[0].id
  key    = local.code_key
  source = local.code_file
  etag   = local.code_checksum

  content_type = "application/gzip"

  depends_on = [aws_s3_bucket_versioning.artifacts, aws_s3_bucket_server_side_encryption_configuration.artifacts]
}

resource "aws_s3_object" "model" {
  for_each = local.model_files

  bucket = aws_s3_bucket.artifacts[0].id
  key    = each.value.key
  source = each.value.source
  # Not etag: the provider uploads files over 5 MiB (model weights) in parts,
  # so S3's ETag is not their MD5 and would differ on every plan.
  source_hash = filemd5(each.value.source)

  depends_on = [aws_s3_bucket_versioning.artifacts, aws_s3_bucket_server_side_encryption_configuration.artifacts]
}
