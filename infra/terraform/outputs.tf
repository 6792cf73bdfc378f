output "cluster_id" {
  description = "EMR cluster id (j-...)."
  value       = aws_emr_cluster.this.id
}

output "master_public_dns" {
  description = "DNS name of the master node (private DNS when the cluster runs in a private subnet)."
  value       = aws_emr_cluster.this.master_public_dns
}

output "bucket_names" {
  description = "Project buckets by purpose: data (manifests/, outputs/), artifacts (code/, models/, bootstrap/), logs."
  value       = local.bucket_names
}

output "log_uri" {
  description = "Where EMR writes cluster and step logs."
  value       = aws_emr_cluster.this.log_uri
}

output "model_uri" {
  description = "S3 prefix of the uploaded model artifact; make submit passes it as --set model.uri=..."
  value       = "s3://${aws_s3_bucket.artifacts.id}/${local.model_prefix}"
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
  description = "Task instance group ids: spot and its on-demand fallback."
  value = {
    spot      = aws_emr_instance_group.task_spot.id
    on_demand = aws_emr_instance_group.task_on_demand.id
  }
}
