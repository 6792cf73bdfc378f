data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(
    {
      Project   = var.name
      ManagedBy = "terraform"
      Component = "image-tagging"
    },
    var.tags,
  )

  # Resolve a relative path against this directory, keep an absolute one.
  profile_file   = startswith(var.profile_path, "/") ? var.profile_path : "${path.module}/${var.profile_path}"
  code_file      = startswith(var.code_package, "/") ? var.code_package : "${path.module}/${var.code_package}"
  bootstrap_file = startswith(var.bootstrap_script, "/") ? var.bootstrap_script : "${path.module}/${var.bootstrap_script}"
  model_path     = startswith(var.model_dir, "/") ? var.model_dir : "${path.module}/${var.model_dir}"

  # One source of truth: the job profile. Its spark.conf map becomes the
  # cluster's spark-defaults verbatim (EMR wants every value as a string).
  profile      = yamldecode(file(local.profile_file))
  profile_name = trimsuffix(basename(var.profile_path), ".yaml")
  spark_conf   = { for k, v in local.profile.spark.conf : k => tostring(v) }
  venv_python  = "${var.install_dir}/venv/bin/python"
  # GPU instance families (g4dn, g5, g6, p3, p4, p5...): the bootstrap installs CUDA TensorFlow.
  gpu_nodes     = anytrue([for t in [var.core_instance_type, var.task_instance_type] : can(regex("^(g[0-9]|p[0-9])", t))])
  model_name    = basename(trimsuffix(var.model_dir, "/"))
  model_files   = fileset(local.model_path, "**")
  code_checksum = filemd5(local.code_file)

  spark_env = merge(
    {
      PYSPARK_PYTHON        = local.venv_python
      PYSPARK_DRIVER_PYTHON = local.venv_python
    },
    var.spark_env,
  )

  configurations = [
    {
      Classification = "spark-defaults"
      Properties     = local.spark_conf
    },
    {
      Classification = "spark-env"
      Configurations = [
        {
          Classification = "export"
          Properties     = local.spark_env
        },
      ]
      Properties = {}
    },
  ]

  bucket_suffix = "${local.account_id}-${var.region}"
  buckets = {
    # manifests/ (inputs) and outputs/ (results) of the job
    data = "${var.name}-data-${local.bucket_suffix}"
    # code/, models/, bootstrap/: what the bootstrap action and the job read
    artifacts = "${var.name}-artifacts-${local.bucket_suffix}"
    # emr/ (cluster logs), s3-access/ (server access logs), AWSLogs/ (VPC flow logs)
    logs = "${var.name}-logs-${local.bucket_suffix}"
  }

  code_key      = "code/image-tagger-${substr(local.code_checksum, 0, 12)}.tar.gz"
  bootstrap_key = "bootstrap/bootstrap.sh"
  model_prefix  = "models/${local.model_name}"

  # Tag the EMR v2 managed service policy requires on network resources it
  # touches (AmazonEMRServicePolicy_v2 only acts on tagged resources).
  emr_managed_tag = { "for-use-with-amazon-emr-managed-policies" = "true" }
}
