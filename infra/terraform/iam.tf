# ---------------------------------------------------------------------------
# EMR service role: AWS's managed v2 policy (acts only on resources tagged
# for-use-with-amazon-emr-managed-policies=true) plus PassRole for our own
# instance role, which the managed policy does not cover.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "emr_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["elasticmapreduce.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "emr_service" {
  count = local.cluster_count

  name               = "${var.name}-emr-service"
  description        = "EMR service role of the image-tagger cluster"
  assume_role_policy = data.aws_iam_policy_document.emr_assume.json
}

resource "aws_iam_role_policy_attachment" "emr_service" {
  count = local.cluster_count

  role       = aws_iam_role.emr_service[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
}

data "aws_iam_policy_document" "emr_service_pass_role" {
  count = local.cluster_count

  statement {
    sid       = "PassInstanceRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.instance[0].arn]
    condition {
      test     = "StringLike"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com*"]
    }
  }
}

resource "aws_iam_role_policy" "emr_service_pass_role" {
  count = local.cluster_count

  name   = "pass-instance-role"
  role   = aws_iam_role.emr_service[0].id
  policy = data.aws_iam_policy_document.emr_service_pass_role[0].json
}

# ---------------------------------------------------------------------------
# EC2 instance profile of the nodes: S3 only, only the project's buckets
# (plus var.extra_read_bucket_arns read-only).
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  count = local.cluster_count

  name               = "${var.name}-emr-instance"
  description        = "Role of the image-tagger EMR nodes (S3 access to the project buckets only)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

locals {
  read_bucket_arns = concat(values(local.bucket_arns), var.extra_read_bucket_arns)
}

data "aws_iam_policy_document" "instance_s3" {
  statement {
    sid       = "ListProjectBuckets"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = local.read_bucket_arns
  }

  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = [for arn in local.read_bucket_arns : "${arn}/*"]
  }

  statement {
    sid = "WriteOutputs"
    actions = [
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${local.bucket_arns.data}/outputs/*"]
  }

  statement {
    sid       = "ListMultipartUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [local.bucket_arns.data]
  }

  # EMR uploads step, container and node logs to log_uri with the instance profile.
  statement {
    sid       = "WriteClusterLogs"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arns.logs}/emr/*"]
  }
}

resource "aws_iam_role_policy" "instance_s3" {
  count = local.cluster_count

  name   = "project-buckets"
  role   = aws_iam_role.instance[0].id
  policy = data.aws_iam_policy_document.instance_s3.json
}

resource "aws_iam_instance_profile" "instance" {
  count = local.cluster_count

  name = "${var.name}-emr-instance"
  role = aws_iam_role.instance[0].name
}
