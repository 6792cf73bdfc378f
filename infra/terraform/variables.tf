# ---------------------------------------------------------------------------
# General
# ---------------------------------------------------------------------------

variable "cluster_enabled" {
  type        = bool
  description = "false removes the compute (EMR cluster, instance groups, security configuration, IAM roles, network) and the artifacts bucket, and keeps the data and logs buckets with their contents: `make destroy-cluster` applies false, `make deploy-cluster` true."
  default     = true
}

variable "region" {
  type        = string
  description = "AWS region for every resource."
  default     = "eu-west-1"
}

variable "name" {
  type        = string
  description = "Name prefix of every resource; bucket names append the account id and region to stay globally unique."
  default     = "image-tagger"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,23}$", var.name))
    error_message = "name must be 2-24 characters of lower-case letters, digits and hyphens, starting with a letter (it becomes part of S3 bucket names)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags merged into the default tags of every resource."
  default     = {}
}

# ---------------------------------------------------------------------------
# Inputs packaged by `make deploy-cluster`
# ---------------------------------------------------------------------------

variable "resolved_profile_path" {
  type        = string
  description = "Path of the resolved job profile: the JSON that `python -m jobs.config --resolve conf/<profile>.yaml` prints (make deploy-cluster writes it to dist/profile-<profile>.json), every setting with the job's defaults filled in, plus the profile's name and its output columns. Its spark.conf becomes the cluster's spark-defaults, its models are uploaded, its output_columns are the Glue table's. Relative paths are resolved against this directory."
  default     = "../../dist/profile-emr.json"

  validation {
    condition     = endswith(var.resolved_profile_path, ".json")
    error_message = "resolved_profile_path must name the JSON file written by `python -m jobs.config --resolve conf/<profile>.yaml > FILE.json` (make deploy-cluster does it), not the YAML profile itself."
  }
}

variable "code_package" {
  type        = string
  description = "Path of the code tarball built by infra/scripts/package.py (jobs/, model/, conf/, requirements.txt, setup.py)."
  default     = "../../dist/image-tagger-code.tar.gz"
}

variable "node_env_dir" {
  type        = string
  description = "Folder of the node environment infra/scripts/node_env.py builds at deploy (make deploy-cluster): the wheelhouse of the profile's runtime (LiteRT, or TensorFlow for a Keras profile) for the nodes' platform, and node-env.json, which names its content-addressed key prefix code/wheelhouse-<hash>/. Uploaded there; the bootstrap action installs from it with pip --no-index."
  default     = "../../dist/node-env"
}

variable "node_env_archive" {
  type        = string
  description = "The packed virtual environment (node_env.py --pack: the wheelhouse installed, plus the job's code and conf/) that EMR Serverless job runs unpack through spark.archives. Read only while serverless_enabled."
  default     = "../../dist/node-env.tar.gz"
}

variable "entry_point" {
  type        = string
  description = "The job's entry point script, uploaded for EMR Serverless (start-job-run's entryPoint)."
  default     = "../../jobs/tag_images.py"
}

variable "bootstrap_script" {
  type        = string
  description = "Path of the EMR bootstrap action script uploaded to s3://<artifacts bucket>/bootstrap/bootstrap.sh."
  default     = "../scripts/bootstrap.sh"
}

variable "artifacts_root" {
  type        = string
  description = "Directory the profile's relative model URIs (model.uri, model.heads[*].uri) resolve against: the repository root (itself relative to infra/terraform unless absolute). Each artifact directory the profile names (model.json, model file, classes.txt) is uploaded to s3://<artifacts bucket>/models/<directory name>/."
  default     = "../.."
}

variable "install_dir" {
  type        = string
  description = "Directory on every node where the bootstrap action unpacks the code and creates the Python virtual environment."
  default     = "/opt/image-tagger"
}

variable "python_bin" {
  type        = string
  description = "Python interpreter on the nodes used to create the job's virtual environment (EMR 7.x ships python3.11 beside the system python3.9)."
  default     = "python3.11"
}

# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------

variable "log_retention_days" {
  type        = number
  description = "Days after which EMR logs, S3 access logs and VPC flow logs expire from the logs bucket."
  default     = 30

  validation {
    condition     = var.log_retention_days >= 1
    error_message = "log_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days a replaced or deleted object version is kept in the versioned data and artifacts buckets."
  default     = 30
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let Terraform delete the data and logs buckets while they still hold objects. Terraform uses the value stored in state when it deletes a bucket, so it only takes effect through an apply: `make destroy-all` applies true, then empties and destroys. Keep false otherwise so that a plain destroy cannot erase results."
  default     = false
}

variable "extra_read_bucket_arns" {
  type        = list(string)
  description = "ARNs of further S3 buckets the nodes may read (for example buckets the manifests' image URIs point at). The project buckets need not be listed."
  default     = []
}

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

variable "internet_egress" {
  type        = bool
  description = "With the created network (subnet_id null): a NAT gateway gives the nodes the internet, which manifests of http(s) image URLs need. false leaves only the S3 gateway endpoint (cheaper, least privilege): enough for manifests whose images are all s3:// URLs in this region, since the nodes install from the uploaded wheelhouse, not PyPI."
  default     = true
}

variable "subnet_id" {
  type        = string
  description = "Existing subnet for the cluster. null creates a VPC with a private subnet (S3 gateway endpoint; a NAT gateway when internet_egress). An existing subnet needs outbound HTTPS and, with the EMR v2 managed service policy, the tag for-use-with-amazon-emr-managed-policies=true on the VPC and subnet."
  default     = null
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR block of the VPC created when subnet_id is null."
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "availability_zone" {
  type        = string
  description = "Availability zone of the created subnets; null picks the region's first available zone."
  default     = null
}

# ---------------------------------------------------------------------------
# EMR cluster
# ---------------------------------------------------------------------------

variable "release_label" {
  type        = string
  description = "EMR release. Only releases whose Spark is 3.5.6 (emr-7.11.x, emr-7.12.x, emr-7.13.x) are accepted: the job pins pyspark==3.5.6, so local tests run the cluster's Spark. The AWS provider itself passes any string through."
  default     = "emr-7.13.0"

  validation {
    condition     = can(regex("^emr-7\\.1[123]\\.[0-9]+$", var.release_label))
    error_message = "release_label must be an EMR release that ships Spark 3.5.6 (emr-7.11.x, emr-7.12.x or emr-7.13.x): the job's pinned pyspark (3.5.6, requirements.txt) must match the cluster's Spark. Moving to another Spark means changing that pin and rerunning the suite first."
  }
}

variable "master_instance_type" {
  type        = string
  description = "EC2 type of the on-demand master node (runs the Spark driver in client mode)."
  default     = "m6i.xlarge"
}

variable "core_instance_type" {
  type        = string
  description = "EC2 type of the on-demand core nodes (HDFS and executors). GPU types such as g5.xlarge or g6.xlarge are accepted."
  default     = "m6i.2xlarge"
}

variable "core_instance_count" {
  type        = number
  description = "Number of on-demand core nodes."
  default     = 2

  validation {
    condition     = var.core_instance_count >= 1
    error_message = "core_instance_count must be at least 1."
  }
}

variable "task_instance_type" {
  type        = string
  description = "EC2 type of the task nodes (executors only). GPU types such as g5.2xlarge or g6.2xlarge are accepted."
  default     = "m6i.2xlarge"
}

variable "task_spot_instance_count" {
  type        = number
  description = "Number of spot task nodes; 0 leaves the spot task group empty."
  default     = 2

  validation {
    condition     = var.task_spot_instance_count >= 0
    error_message = "task_spot_instance_count must not be negative."
  }
}

variable "task_spot_bid_price" {
  type        = string
  description = "Maximum spot price per task node in USD per hour (EMR instance groups need an explicit bid; set it to the on-demand price of task_instance_type to pay at most on-demand)."
  default     = "0.40"

  validation {
    condition     = can(tonumber(var.task_spot_bid_price)) && tonumber(var.task_spot_bid_price) > 0
    error_message = "task_spot_bid_price must be a positive number such as \"0.40\"."
  }
}

variable "task_on_demand_instance_count" {
  type        = number
  description = "Initial size of the on-demand task group that backs the spot group. infra/scripts/emr_ctl.py fallback resizes it to cover spot nodes that did not arrive; Terraform ignores later changes to its size."
  default     = 0

  validation {
    condition     = var.task_on_demand_instance_count >= 0
    error_message = "task_on_demand_instance_count must not be negative."
  }
}

variable "ebs_volume_size_gb" {
  type        = number
  description = "gp3 EBS volume size per core and task node in GiB (shuffle, spill, Python environment)."
  default     = 64
}

variable "idle_timeout_seconds" {
  type        = number
  description = "Auto-termination: the cluster terminates after this many idle seconds (60-604800)."
  default     = 3600

  validation {
    condition     = var.idle_timeout_seconds >= 60 && var.idle_timeout_seconds <= 604800
    error_message = "idle_timeout_seconds must be between 60 and 604800."
  }
}

variable "step_concurrency_level" {
  type        = number
  description = "Number of steps the cluster runs at the same time."
  default     = 1
}

variable "spark_env" {
  type        = map(string)
  description = "Extra spark-env exports merged over the defaults (PYSPARK_PYTHON points at the bootstrap's virtual environment)."
  default     = {}
}

# ---------------------------------------------------------------------------
# EMR Serverless (make deploy-serverless): a second target beside the cluster
# ---------------------------------------------------------------------------

variable "serverless_enabled" {
  type        = bool
  description = "An EMR Serverless application (and its job role, entry point and packed environment) beside or instead of the cluster, using the same buckets, Glue table and models: make deploy-serverless applies true, make destroy-serverless false; the cluster targets keep its current value."
  default     = false
}

variable "serverless_release_label" {
  type        = string
  description = "EMR Serverless release. As for the cluster, only releases whose Spark is the job's pinned 3.5.6 (emr-7.11.x to emr-7.13.x)."
  default     = "emr-7.13.0"

  validation {
    condition     = can(regex("^emr-7\\.1[123]\\.[0-9]+$", var.serverless_release_label))
    error_message = "serverless_release_label must ship Spark 3.5.6 (emr-7.11.x, emr-7.12.x or emr-7.13.x), the job's pinned pyspark."
  }
}

variable "serverless_max_vcpu" {
  type        = number
  description = "Maximum capacity of the application: vCPUs of all its workers together (the bill's ceiling)."
  default     = 400

  validation {
    condition     = var.serverless_max_vcpu >= 1
    error_message = "serverless_max_vcpu must be at least 1."
  }
}

variable "serverless_max_memory_gb" {
  type        = number
  description = "Maximum capacity of the application: memory of all its workers together, in GB."
  default     = 3000

  validation {
    condition     = var.serverless_max_memory_gb >= 2
    error_message = "serverless_max_memory_gb must be at least 2."
  }
}

variable "serverless_idle_timeout_minutes" {
  type        = number
  description = "Auto-stop: the application releases its workers after this many idle minutes (it starts again on the next job run)."
  default     = 15

  validation {
    condition     = var.serverless_idle_timeout_minutes >= 1 && var.serverless_idle_timeout_minutes <= 10080
    error_message = "serverless_idle_timeout_minutes must be between 1 and 10080."
  }
}
