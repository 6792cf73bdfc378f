# Three buckets, one per concern:
#   data      - manifests/ in, outputs/ out (versioned: protects results)
#   artifacts - code/, models/, bootstrap/ (versioned: a bad upload can be rolled back)
#   logs      - EMR logs, S3 access logs, VPC flow logs (expire after log_retention_days)
# Each resource below is one for_each over the buckets that exist: the
# artifacts bucket belongs to the cluster (only while cluster_enabled), so make
# destroy-cluster removes it with its objects and keeps data and logs; make
# destroy-all empties those two and destroys them. moved.tf maps the addresses
# of the former one-resource-per-bucket layout onto these.

locals {
  # name by purpose (locals.tf: buckets) of every bucket that exists now.
  deployed_buckets = { for purpose, name in local.buckets : purpose => name if purpose != "artifacts" || local.artifacts_enabled }
  # data and artifacts keep replaced versions for a while and log their access
  # into the logs bucket; the logs bucket's own objects simply expire.
  versioned_buckets = { for purpose, name in local.deployed_buckets : purpose => name if purpose != "logs" }
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed: manifests and artifacts are re-created by make deploy-cluster and outputs by re-running the job; logs are transient.
  #checkov:skip=CKV_AWS_145:Encrypted with SSE-S3 (AES256, below); a customer-managed KMS key adds cost and key-policy upkeep that this batch job does not need.
  #checkov:skip=CKV2_AWS_62:No consumer listens for S3 events: jobs are started by make submit, not by uploads.
  for_each = local.deployed_buckets

  bucket = each.value
  # The artifacts are rebuilt from the repository by every deploy; data and
  # logs go with their objects only once destroy-all has applied force_destroy_buckets.
  force_destroy = each.key == "artifacts" ? true : var.force_destroy_buckets

  tags = { Name = each.value, Purpose = each.key }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = aws_s3_bucket.this

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  policy = data.aws_iam_policy_document.bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.versioned_buckets

  bucket = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

# Versioned buckets: replaced and deleted versions expire. Logs: the objects expire.
resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    id     = each.key == "logs" ? "expire-logs" : "expire-old-versions"
    status = "Enabled"
    filter {}

    dynamic "noncurrent_version_expiration" {
      for_each = each.key == "logs" ? [] : [var.noncurrent_version_retention_days]
      content {
        noncurrent_days = noncurrent_version_expiration.value
      }
    }
    dynamic "expiration" {
      for_each = each.key == "logs" ? [var.log_retention_days] : []
      content {
        days = expiration.value
      }
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = each.key == "logs" ? 1 : 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

# S3 server access logs of the versioned buckets, into the logs bucket (which
# is not logged itself: that would loop).
resource "aws_s3_bucket_logging" "this" {
  for_each = local.versioned_buckets

  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.this["logs"].id
  target_prefix = "s3-access/${each.key}/"

  # The logs bucket must grant the logging service first.
  depends_on = [aws_s3_bucket_policy.this]
}

# ---------------------------------------------------------------------------
# Bucket policies: TLS only; the logs bucket also accepts S3 server access
# logs and VPC flow logs from this account.
# ---------------------------------------------------------------------------

locals {
  # artifacts: null after make destroy-cluster.
  bucket_names = { for purpose in keys(local.buckets) : purpose => try(aws_s3_bucket.this[purpose].id, null) }
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

  # VPC flow logs: the delivery service writes objects and checks the bucket's ACL.
  dynamic "statement" {
    for_each = each.key == "logs" ? {
      VpcFlowLogsWrite    = { action = "s3:PutObject", resource = "${each.value}/AWSLogs/${local.account_id}/*" }
      VpcFlowLogsAclCheck = { action = "s3:GetBucketAcl", resource = each.value }
    } : {}
    content {
      sid       = statement.key
      effect    = "Allow"
      actions   = [statement.value.action]
      resources = [statement.value.resource]
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

  bucket = aws_s3_bucket.this["artifacts"].id
  key    = local.bootstrap_key
  source = local.bootstrap_file
  etag   = filemd5(local.bootstrap_file)

  content_type = "text/x-shellscript"

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_s3_object" "code" {
  count = local.cluster_count

  bucket = aws_s3_bucket.this["artifacts"].id
  key    = local.code_key
  source = local.code_file
  etag   = local.code_checksum

  content_type = "application/gzip"

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}

# The nodes' Python environment, content-addressed (code/wheelhouse-<hash>/): a new set of wheels
# is a new prefix, so a changed environment replaces the cluster like changed code does.
resource "aws_s3_object" "node_env" {
  for_each = toset(local.node_env_files)

  bucket      = aws_s3_bucket.this["artifacts"].id
  key         = "${local.node_env.prefix}/${each.key}"
  source      = "${local.node_env_dir}/${each.key}"
  source_hash = filemd5("${local.node_env_dir}/${each.key}") # wheels over 5 MiB go up in parts: no MD5 ETag

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_s3_object" "model" {
  for_each = local.model_files

  bucket = aws_s3_bucket.this["artifacts"].id
  key    = each.value.key
  source = each.value.source
  # Not etag: the provider uploads files over 5 MiB (model weights) in parts,
  # so S3's ETag is not their MD5 and would differ on every plan.
  source_hash = filemd5(each.value.source)

  depends_on = [aws_s3_bucket_versioning.this, aws_s3_bucket_server_side_encryption_configuration.this]
}
