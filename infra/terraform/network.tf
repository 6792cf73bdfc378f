# A VPC with one private subnet for the cluster (S3 through a gateway
# endpoint; with internet_egress, everything else through a NAT gateway: http(s)
# image URLs) unless var.subnet_id names an existing subnet. The nodes install
# from the wheelhouse the deploy uploaded to S3, so they need no PyPI. All of it belongs to the cluster: none of it exists
# while cluster_enabled is false (make destroy-cluster).

locals {
  create_network = var.cluster_enabled && var.subnet_id == null
  # The public subnet, internet and NAT gateways and the private default route: only with internet_egress.
  nat_count = local.create_network && var.internet_egress ? 1 : 0
  # null while there is no network (cluster_enabled = false): coalesce would fail.
  az = var.availability_zone != null ? var.availability_zone : try(data.aws_availability_zones.available[0].names[0], null)
}

data "aws_availability_zones" "available" {
  count = local.create_network && var.availability_zone == null ? 1 : 0
  state = "available"
}

data "aws_subnet" "existing" {
  count = var.cluster_enabled && var.subnet_id != null ? 1 : 0
  id    = var.subnet_id
}

resource "aws_vpc" "this" {
  count = local.create_network ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # EMR needs DNS host names in the VPC

  tags = merge(local.emr_managed_tag, { Name = "${var.name}-vpc" })
}

# Lock down the default security group: nothing uses it.
resource "aws_default_security_group" "this" {
  count = local.create_network ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-default-deny" }
}

resource "aws_flow_log" "this" {
  count = local.create_network ? 1 : 0

  vpc_id               = aws_vpc.this[0].id
  traffic_type         = "REJECT"
  log_destination_type = "s3"
  log_destination      = aws_s3_bucket.this["logs"].arn # delivered under AWSLogs/<account>/vpcflowlogs/

  tags = { Name = "${var.name}-flow-log" }

  depends_on = [aws_s3_bucket_policy.this]
}

resource "aws_subnet" "private" {
  count = local.create_network ? 1 : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 0)
  availability_zone       = local.az
  map_public_ip_on_launch = false

  tags = merge(local.emr_managed_tag, { Name = "${var.name}-private" })
}

# The public subnet only holds the NAT gateway; no instance gets a public IP.
# Without internet_egress there is none of it: S3 only, through the gateway endpoint.
resource "aws_subnet" "public" {
  count = local.nat_count

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 1)
  availability_zone       = local.az
  map_public_ip_on_launch = false

  tags = { Name = "${var.name}-public-nat" }
}

resource "aws_internet_gateway" "this" {
  count = local.nat_count

  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-igw" }
}

resource "aws_eip" "nat" {
  count = local.nat_count

  domain = "vpc"
  tags   = { Name = "${var.name}-nat" }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = local.nat_count

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = "${var.name}-nat" }
}

resource "aws_route_table" "public" {
  count = local.nat_count

  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-public" }
}

resource "aws_route" "public_internet" {
  count = local.nat_count

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = local.nat_count

  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_route_table" "private" {
  count = local.create_network ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route" "private_nat" {
  count = local.nat_count

  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_route_table_association" "private" {
  count = local.create_network ? 1 : 0

  subnet_id      = aws_subnet.private[0].id
  route_table_id = aws_route_table.private[0].id
}

# S3 traffic (manifests, images in S3, model, outputs, logs) stays off the NAT.
resource "aws_vpc_endpoint" "s3" {
  count = local.create_network ? 1 : 0

  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private[0].id]

  tags = { Name = "${var.name}-s3" }
}

locals {
  subnet_id = local.create_network ? aws_subnet.private[0].id : var.subnet_id
  vpc_id    = local.create_network ? aws_vpc.this[0].id : one(data.aws_subnet.existing[*].vpc_id)
}

# ---------------------------------------------------------------------------
# Security groups. EMR adds its own cluster rules to these "EMR managed"
# groups at launch, so they carry no inline rules (no drift on refresh) and
# revoke every rule before deletion (the groups reference each other).
# ---------------------------------------------------------------------------

resource "aws_security_group" "master" {
  count = local.cluster_count

  name                   = "${var.name}-emr-master"
  description            = "EMR managed security group of the image-tagger master node"
  vpc_id                 = local.vpc_id
  revoke_rules_on_delete = true

  tags = merge(local.emr_managed_tag, { Name = "${var.name}-emr-master" })
}

resource "aws_security_group" "worker" {
  count = local.cluster_count

  name                   = "${var.name}-emr-worker"
  description            = "EMR managed security group of the image-tagger core and task nodes"
  vpc_id                 = local.vpc_id
  revoke_rules_on_delete = true

  tags = merge(local.emr_managed_tag, { Name = "${var.name}-emr-worker" })
}

resource "aws_security_group" "service_access" {
  count = local.cluster_count

  name                   = "${var.name}-emr-service-access"
  description            = "EMR service access security group (private subnet): 9443 from master, 8443 to nodes"
  vpc_id                 = local.vpc_id
  revoke_rules_on_delete = true

  tags = merge(local.emr_managed_tag, { Name = "${var.name}-emr-service-access" })
}

# Outbound from the nodes: HTTPS (S3, AWS APIs, image hosts) and HTTP
# (image hosts that serve plain http). Cluster-internal rules are EMR's.
resource "aws_vpc_security_group_egress_rule" "nodes" {
  for_each = var.cluster_enabled ? {
    master-https = { sg = aws_security_group.master[0].id, port = 443, what = "HTTPS to S3, AWS APIs and image hosts" }
    master-http  = { sg = aws_security_group.master[0].id, port = 80, what = "HTTP to image hosts and OS package mirrors" }
    worker-https = { sg = aws_security_group.worker[0].id, port = 443, what = "HTTPS to S3, AWS APIs and image hosts" }
    worker-http  = { sg = aws_security_group.worker[0].id, port = 80, what = "HTTP to image hosts and OS package mirrors" }
  } : {}

  security_group_id = each.value.sg
  description       = each.value.what
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = "0.0.0.0/0"

  tags = { Name = "${var.name}-${each.key}" }
}

# Minimum rules of the service access group (EMR in a private subnet): the
# master reaches the EMR service on 9443, the service reaches nodes on 8443.
resource "aws_vpc_security_group_ingress_rule" "master_to_service" {
  count = local.cluster_count

  security_group_id            = aws_security_group.service_access[0].id
  description                  = "EMR master node to the EMR service access endpoint"
  ip_protocol                  = "tcp"
  from_port                    = 9443
  to_port                      = 9443
  referenced_security_group_id = aws_security_group.master[0].id
}

resource "aws_vpc_security_group_egress_rule" "service_to_nodes" {
  for_each = var.cluster_enabled ? {
    master = aws_security_group.master[0].id
    worker = aws_security_group.worker[0].id
  } : {}

  security_group_id            = aws_security_group.service_access[0].id
  description                  = "EMR service access to the ${each.key} nodes"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = each.value
}
