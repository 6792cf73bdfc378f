# Encryption settings of the cluster: EMRFS writes SSE-S3 objects.
resource "aws_emr_security_configuration" "this" {
  #checkov:skip=CKV_AWS_171:EMRFS uses SSE-S3, matching the buckets' default encryption; SSE-KMS needs a customer-managed key this job does not need.
  #checkov:skip=CKV_AWS_349:Local-disk encryption needs a KMS key or custom key provider; nodes hold only transient shuffle and spill data, and the cluster ends itself after idle_timeout_seconds.
  #checkov:skip=CKV_AWS_350:EBS encryption is part of EMR local-disk encryption (same KMS key requirement as CKV_AWS_349).
  #checkov:skip=CKV_AWS_351:In-transit encryption needs a TLS certificate provider (PEM bundle or custom provider) to be managed; traffic stays inside the private subnet.
  count = local.cluster_count

  name = "${var.name}-security"

  configuration = jsonencode({
    EncryptionConfiguration = {
      EnableInTransitEncryption = false
      EnableAtRestEncryption    = true
      AtRestEncryptionConfiguration = {
        S3EncryptionConfiguration = {
          EncryptionMode = "SSE-S3"
        }
      }
    }
    InstanceMetadataServiceConfiguration = {
      MinimumInstanceMetadataServiceVersion = 2
      HttpPutResponseHopLimit               = 2
    }
  })
}

resource "aws_emr_cluster" "this" {
  count = local.cluster_count

  name          = var.name
  release_label = var.release_label
  applications  = ["Hadoop", "Spark"]

  service_role           = aws_iam_role.emr_service[0].arn
  security_configuration = aws_emr_security_configuration.this[0].name
  log_uri                = "s3://${aws_s3_bucket.this["logs"].id}/emr/"

  # Steps are submitted by `make submit`; the cluster stays up between them
  # and ends itself after idle_timeout_seconds without work.
  keep_job_flow_alive_when_no_steps = true
  termination_protection            = false
  step_concurrency_level            = var.step_concurrency_level
  ebs_root_volume_size              = 32

  auto_termination_policy {
    idle_timeout = var.idle_timeout_seconds
  }

  ec2_attributes {
    subnet_id                         = local.subnet_id
    emr_managed_master_security_group = aws_security_group.master[0].id
    emr_managed_slave_security_group  = aws_security_group.worker[0].id
    service_access_security_group     = aws_security_group.service_access[0].id
    instance_profile                  = aws_iam_instance_profile.instance[0].arn
  }

  master_instance_group {
    name           = "master-on-demand"
    instance_type  = var.master_instance_type
    instance_count = 1
  }

  core_instance_group {
    name           = "core-on-demand"
    instance_type  = var.core_instance_type
    instance_count = var.core_instance_count

    ebs_config {
      size                 = var.ebs_volume_size_gb
      type                 = "gp3"
      volumes_per_instance = 1
    }
  }

  # Installs the packaged code and, from the uploaded wheelhouse (pip --no-index), its
  # Python dependencies on every node.
  bootstrap_action {
    name = "install-image-tagger"
    path = "s3://${aws_s3_object.bootstrap[0].bucket}/${aws_s3_object.bootstrap[0].key}"
    args = concat([
      "--code", "s3://${aws_s3_object.code[0].bucket}/${aws_s3_object.code[0].key}",
      "--wheelhouse", local.node_env_uri,
      "--install-dir", var.install_dir,
      "--python", var.python_bin,
    ], local.gpu_nodes ? ["--gpu"] : [])
  }

  # spark-defaults comes verbatim from the resolved job profile (locals.tf: spark_conf).
  configurations_json = jsonencode(local.configurations)

  tags = { Name = var.name, Profile = local.profile_name }

  # The models come from the resolved profile (model.uri, model.heads[*].uri) and are
  # uploaded by aws_s3_object.model; make submit points the job at the copies.
  lifecycle {
    precondition {
      condition     = local.node_env != null
      error_message = "No node environment at ${local.node_env_manifest}: make deploy-cluster builds it (make node-env PROFILE=...: the wheelhouse the bootstrap installs with --no-index)."
    }
    precondition {
      condition     = length(local.models_remote) == 0
      error_message = "Profile ${local.profile_name} names ${join(", ", local.models_remote)}: the profile must name local artifact directories (e.g. model/artifacts/efficientnet_lite0_tflite), which make deploy-cluster uploads and make submit points at their S3 copies."
    }
    precondition {
      condition     = length(local.models_missing) == 0
      error_message = "No model artifact (model.json missing) in ${join(", ", local.models_missing)}: run `make model` (the backbones; `make train-head` for the head) or fix the profile's model URIs."
    }
    precondition {
      condition     = length(distinct(local.model_basenames)) == length(local.model_basenames)
      error_message = "The profile's model directories must have distinct names (each is uploaded to models/<directory name>/): ${join(", ", keys(local.models))}."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.emr_service,
    aws_iam_role_policy.emr_service_pass_role,
    aws_iam_role_policy.instance_s3,
    aws_s3_object.model,
    aws_s3_object.node_env,
    aws_s3_bucket_policy.this,
    aws_vpc_security_group_egress_rule.nodes,
    aws_vpc_security_group_egress_rule.service_to_nodes,
    aws_vpc_security_group_ingress_rule.master_to_service,
    aws_route.private_nat,
    aws_route_table_association.private,
    aws_vpc_endpoint.s3,
  ]
}

# Task nodes on spot: executors only, no HDFS, so losing one costs only the
# tasks it was running.
resource "aws_emr_instance_group" "task_spot" {
  count = local.cluster_count

  name           = "task-spot"
  cluster_id     = aws_emr_cluster.this[0].id
  instance_type  = var.task_instance_type
  instance_count = var.task_spot_instance_count
  bid_price      = var.task_spot_bid_price

  ebs_config {
    size                 = var.ebs_volume_size_gb
    type                 = "gp3"
    volumes_per_instance = 1
  }
}

# On-demand fallback of the spot group. Instance groups cannot switch market by
# themselves, so `infra/scripts/emr_ctl.py fallback` (run by make
# deploy-cluster) grows this group by the spot nodes that did not arrive.
resource "aws_emr_instance_group" "task_on_demand" {
  count = local.cluster_count

  name           = "task-on-demand-fallback"
  cluster_id     = aws_emr_cluster.this[0].id
  instance_type  = var.task_instance_type
  instance_count = var.task_on_demand_instance_count

  ebs_config {
    size                 = var.ebs_volume_size_gb
    type                 = "gp3"
    volumes_per_instance = 1
  }

  lifecycle {
    ignore_changes = [instance_count]
  }
}
