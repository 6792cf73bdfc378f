terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }
}

# Credentials, profile and endpoint come from the usual AWS environment
# (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...): nothing here is
# specific to one account or one endpoint.
provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
