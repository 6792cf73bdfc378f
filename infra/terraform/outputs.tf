# Null-safe: after `make destroy-cluster` (cluster_enabled = false) the
# cluster outputs are null or empty and only the kept buckets remain.

output "cluster_id" {
  description = "EMR cluster id (j-...); null while no cluster is deployed."
  value       = one(aws_emr_cluster.this[*].id)
}

output "master_public_dns" {
  description = "DNS name of the master node (private DNS when the cluster runs in a private subnet)."
  value       = one(aws_emr_cluster.this[*].master_public_dns)
}

output "bucket_names" {
  description = "Project buckets by purpose: data (manifests/, outputs/), artifacts (code/, models/, bootstrap/; null without a cluster), logs."
  value       = local.bucket_names
}

output "log_uri" {
  description = "Where EMR writes cluster and step logs."
  value       = one(aws_emr_cluster.this[*].log_uri)
}

output "model_uris" {
  description = "Each model URI exactly as the resolved profile has it (model.uri, model.heads[*].uri; the defaults where the profile names none) => the s3:// prefix of its uploaded copy; make submit passes these to the job."
  value       = { for uri, prefix in local.model_prefixes : uri => "s3://${aws_s3_bucket.this["artifacts"].id}/${prefix}" }
}

output "install_dir" {
  description = "Where the bootstrap action installed the code on every node."
  value       = var.install_dir
}

output "profile_name" {
  description = "Profile whose spark.conf the cluster's spark-defaults were built from."
  value       = local.profile_name
}

output "region" {
  description = "Region of the cluster."
  value       = var.region
}

output "task_instance_groups" {
  description = "Task instance group ids: spot and its on-demand fallback (null without a cluster)."
  value = var.cluster_enabled ? {
    spot      = aws_emr_instance_group.task_spot[0].id
    on_demand = aws_emr_instance_group.task_on_demand[0].id
  } : null
}

output "glue_table" {
  description = "The Glue/Athena table over the stable output prefix (kept by destroy-cluster): database, table, location (make submit's default output), and its head columns."
  value = {
    database = aws_glue_catalog_database.this.name
    table    = aws_glue_catalog_table.this[local.glue_table].name
    location = aws_glue_catalog_table.this[local.glue_table].storage_descriptor[0].location
    heads    = local.output_head_names
  }
}

output "node_env" {
  description = "The nodes' Python environment: runtime (litert, keras or gpu, from the profile's model formats) and the s3:// prefix of its wheelhouse the bootstrap installs from (null without a cluster)."
  value       = local.node_env == null ? null : { runtime = local.node_env.runtime, uri = local.node_env_uri }
}

output "serverless" {
  description = "The EMR Serverless application and what make submit-serverless needs: application id, job role, the packed environment and entry point in S3, where job logs go (null while serverless_enabled is false)."
  value = var.serverless_enabled ? {
    application_id = aws_emrserverless_application.this[0].id
    job_role_arn   = aws_iam_role.serverless_job[0].arn
    archive_uri    = "s3://${aws_s3_object.node_env_archive[0].bucket}/${aws_s3_object.node_env_archive[0].key}"
    entry_point    = "s3://${aws_s3_object.entry_point[0].bucket}/${aws_s3_object.entry_point[0].key}"
    log_uri        = local.serverless_logs
    release_label  = aws_emrserverless_application.this[0].release_label
  } : null
}
