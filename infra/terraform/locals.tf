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

  # count of every compute resource (cluster, roles, network, artifacts
  # bucket): 0 after `make destroy-cluster`, which keeps the data and logs buckets.
  cluster_count = var.cluster_enabled ? 1 : 0
  # The artifacts bucket (code, node environment, models) serves the cluster and the
  # Serverless application alike: it exists while either does.
  artifacts_enabled = var.cluster_enabled || var.serverless_enabled
  serverless_count  = var.serverless_enabled ? 1 : 0

  # Resolve a relative path against this directory, keep an absolute one.
  resolved_profile_file = startswith(var.resolved_profile_path, "/") ? var.resolved_profile_path : "${path.module}/${var.resolved_profile_path}"
  code_file             = startswith(var.code_package, "/") ? var.code_package : "${path.module}/${var.code_package}"
  bootstrap_file        = startswith(var.bootstrap_script, "/") ? var.bootstrap_script : "${path.module}/${var.bootstrap_script}"
  artifacts_root        = startswith(var.artifacts_root, "/") ? var.artifacts_root : "${path.module}/${var.artifacts_root}"
  node_env_dir          = startswith(var.node_env_dir, "/") ? var.node_env_dir : "${path.module}/${var.node_env_dir}"
  node_env_archive      = startswith(var.node_env_archive, "/") ? var.node_env_archive : "${path.module}/${var.node_env_archive}"
  entry_point_file      = startswith(var.entry_point, "/") ? var.entry_point : "${path.module}/${var.entry_point}"

  # One source of truth: the job profile, as the job's own config resolves it
  # (`python -m jobs.config --resolve conf/<profile>.yaml`, written by make
  # deploy-cluster): every setting present, the defaults of jobs/config.py
  # filled in, validated. Terraform never reads the YAML nor knows a default.
  # Its spark.conf map becomes the cluster's spark-defaults verbatim (values
  # already strings, as EMR wants them).
  settings     = jsondecode(file(local.resolved_profile_file))
  profile_name = local.settings.profile
  spark_conf   = local.settings.spark.conf
  venv_python  = "${var.install_dir}/venv/bin/python"
  # GPU instance families (g4dn, g5, g6, p3, p4, p5...): the bootstrap installs CUDA TensorFlow.
  gpu_nodes = anytrue([for t in [var.core_instance_type, var.task_instance_type] : can(regex("^(g[0-9]|p[0-9])", t))])
  # Read only while the cluster exists: destroy-cluster needs no code package.
  code_checksum = var.cluster_enabled ? filemd5(local.code_file) : ""
  # The nodes' wheelhouse (infra/scripts/node_env.py): its manifest names the runtime and the
  # content-addressed prefix; every file goes there. Read only while the cluster exists.
  # A missing one stops the plan with a precondition (emr.tf) that says how to build it.
  node_env_manifest = "${local.node_env_dir}/node-env.json"
  node_env          = var.cluster_enabled && fileexists(local.node_env_manifest) ? jsondecode(file(local.node_env_manifest)) : null
  node_env_files    = local.node_env == null ? [] : fileset(local.node_env_dir, "*")
  node_env_uri      = local.node_env == null ? "" : "s3://${local.buckets.artifacts}/${local.node_env.prefix}/"

  # The models of the profile (backbone, then heads), exactly as written
  # there: local artifact directories, relative to artifacts_root unless
  # absolute. Each is uploaded to models/<basename>/.
  model_uris_named = distinct(concat([local.settings.model.uri], [for head in local.settings.model.heads : head.uri]))
  models = local.artifacts_enabled ? {
    for uri in local.model_uris_named : uri => {
      dir  = startswith(uri, "/") ? trimsuffix(uri, "/") : "${local.artifacts_root}/${trimsuffix(uri, "/")}"
      name = basename(trimsuffix(uri, "/"))
    }
  } : {}
  models_remote   = [for uri in keys(local.models) : uri if can(regex("^[A-Za-z][A-Za-z0-9+.-]*://", uri))]
  models_missing  = [for uri, m in local.models : "${uri} (${m.dir})" if !contains(local.models_remote, uri) && !fileexists("${m.dir}/model.json")]
  model_prefixes  = { for uri, m in local.models : uri => "models/${m.name}" }
  model_basenames = [for m in values(local.models) : m.name]
  # "<directory name>/<file>" => where it comes from and where it goes.
  model_files = merge([
    for uri, m in local.models : {
      for f in fileset(m.dir, "**") : "${m.name}/${f}" => { source = "${m.dir}/${f}", key = "${local.model_prefixes[uri]}/${f}" }
    }
  ]...)

  # The output's columns for the Glue table (glue.tf), in the order the job
  # writes them, in Hive types: computed by the job's code from the resolved
  # settings (heads add <name> and <name>_score, model.embedding the embedding).
  output_columns    = local.settings.output_columns
  output_head_names = [for head in local.settings.model.heads : head.name]
  # One stable output dataset per profile: make submit writes here by default
  # (emr_ctl.py default_output_uri), the Glue table reads it. Athena and Glue
  # names allow only lower-case letters, digits and underscores.
  output_location = "s3://${local.buckets.data}/outputs/${local.profile_name}/tags/"
  glue_database   = replace(var.name, "-", "_")
  glue_table      = "tags"

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

  # ARNs built from the names, so that policies naming the artifacts bucket
  # (instance role, logs bucket) stay the same whether or not it exists.
  bucket_arns = { for purpose, bucket in local.buckets : purpose => "arn:${local.partition}:s3:::${bucket}" }

  code_key      = "code/image-tagger-${substr(local.code_checksum, 0, 12)}.tar.gz"
  bootstrap_key = "bootstrap/bootstrap.sh"

  # Tag the EMR v2 managed service policy requires on network resources it
  # touches (AmazonEMRServicePolicy_v2 only acts on tagged resources).
  emr_managed_tag = { "for-use-with-amazon-emr-managed-policies" = "true" }
}
