# EMR cluster targets: included by the top-level Makefile, or run alone with
# `make -f infra/infra.mk TARGET`. See docs/cluster.md.
#
# AWS access is whatever the AWS CLI/SDKs use: AWS_PROFILE or access keys,
# and AWS_ENDPOINT_URL to talk to another endpoint (an emulator) instead.

VENV ?= .venv
PY ?= $(VENV)/bin/python
INFRA_VENV ?= .venv-infra
CHECKOV ?= $(INFRA_VENV)/bin/checkov
TERRAFORM ?= terraform
TF_DIR ?= infra/terraform
# Local provider mirror (offline); empty = download from the Terraform registry.
TF_PLUGIN_DIR ?=
# Extra terraform arguments, e.g. TF_ARGS='-var-file=prod.tfvars -var core_instance_count=4'
TF_ARGS ?=
REGION ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION),eu-west-1)
# Profile name (or path) under conf/: PROFILE=emr or PROFILE=conf/emr.yaml. Its
# spark.conf becomes the cluster's spark-defaults; make submit passes it to the
# job. Defaults to emr unless PROFILE is given on the command line or in the
# environment (the top-level Makefile's local default does not apply here).
ifneq ($(filter command line environment,$(origin PROFILE)),)
EMR_PROFILE ?= $(basename $(notdir $(PROFILE)))
else
EMR_PROFILE ?= emr
endif
# The profile as Terraform reads it: `python -m jobs.config --resolve`, every default
# filled in (Terraform never reads the YAML itself), written before each terraform run.
RESOLVED_PROFILE ?= dist/profile-$(EMR_PROFILE).json
# What the profile's relative model URIs (model.uri, model.heads[*].uri) resolve
# against: the repository root. Terraform uploads each artifact directory they name.
ARTIFACTS_ROOT ?= .
CODE_PACKAGE ?= dist/image-tagger-code.tar.gz
# Tree to package (jobs/, model/, conf/, requirements.txt, setup.py); e.g. a clean checkout.
PACKAGE_ROOT ?= .
# The nodes' Python environment, built once per deploy from the resolved profile (its model formats
# pick LiteRT or TensorFlow; infra/scripts/node_env.py): a wheelhouse for the nodes' platform that
# Terraform uploads to code/wheelhouse-<hash>/ and the bootstrap installs with --no-index, and for
# EMR Serverless the same packed as a virtual environment (spark.archives).
NODE_ENV ?= dist/node-env
NODE_ENV_ARCHIVE ?= dist/node-env.tar.gz

# make submit. OUTPUT defaults to s3://<data bucket>/outputs/<profile>/tags/, the Glue
# table's location; runs add to it (--incremental) unless REPLACE=1.
MANIFEST ?=
OUTPUT ?=
REPLACE ?= 0
SET ?=
WAIT ?= 1
POLL ?= 30
TIMEOUT ?= 7200
# make deploy-cluster: how long to wait for spot task nodes before the on-demand fallback
FALLBACK_TIMEOUT ?= 900
# make plan-cluster: extra plan arguments, e.g. -detailed-exitcode or -out=tfplan
PLAN_ARGS ?=

TF = TF_IN_AUTOMATION=1 $(TERRAFORM) -chdir=$(TF_DIR)
TF_INIT_ARGS = -input=false $(if $(TF_PLUGIN_DIR),-plugin-dir=$(abspath $(TF_PLUGIN_DIR)))
TF_VARS = -var 'region=$(REGION)' \
	-var 'resolved_profile_path=$(abspath $(RESOLVED_PROFILE))' \
	-var 'code_package=$(abspath $(CODE_PACKAGE))' \
	-var 'artifacts_root=$(abspath $(ARTIFACTS_ROOT))' \
	-var 'bootstrap_script=$(abspath infra/scripts/bootstrap.sh)' \
	-var 'node_env_dir=$(abspath $(NODE_ENV))' \
	-var 'node_env_archive=$(abspath $(NODE_ENV_ARCHIVE))' \
	-var 'entry_point=$(abspath jobs/tag_images.py)' \
	$(TF_ARGS)
EMR_CTL = $(PY) infra/scripts/emr_ctl.py --tf-dir $(TF_DIR) --terraform $(TERRAFORM)
# The -var that wins over TF_ARGS: the compute exists (1) or not (0).
CLUSTER_ON = -var cluster_enabled=true
CLUSTER_OFF = -var cluster_enabled=false
SERVERLESS_ON = -var serverless_enabled=true
SERVERLESS_OFF = -var serverless_enabled=false
# Whether a terraform output is set (true) or null/absent (false): the cluster and the Serverless
# application deploy independently, so each target keeps the other as it is deployed now.
deployed = $(if $(filter-out null,$(shell $(TF) output -json $(1) 2>/dev/null)),true,false)
CLUSTER_KEEP = -var cluster_enabled=$(call deployed,cluster_id)
SERVERLESS_KEEP = -var serverless_enabled=$(call deployed,serverless)
# The packed environment is built when the application exists or is being deployed.
PACK_NODE_ENV ?= $(call deployed,serverless)

.PHONY: deploy-cluster plan-cluster submit destroy-cluster destroy-all check-infra install-infra package-code \
	deploy-serverless submit-serverless destroy-serverless node-env infra-preflight infra-init infra-model infra-profile

deploy-cluster: infra-preflight infra-profile package-code infra-model infra-init node-env ## Package the code, build missing models and the node environment, terraform apply the cluster and buckets, upload bootstrap/code/wheelhouse/the profile's models
	$(TF) apply -input=false -auto-approve $(TF_VARS) $(CLUSTER_ON) $(SERVERLESS_KEEP)
	$(EMR_CTL) fallback --poll $(POLL) --timeout $(FALLBACK_TIMEOUT)
	@$(TF) output

plan-cluster: infra-preflight infra-profile package-code infra-model infra-init node-env ## terraform plan of the cluster (PLAN_ARGS=-detailed-exitcode etc.)
	$(TF) plan -input=false $(TF_VARS) $(CLUSTER_ON) $(SERVERLESS_KEEP) $(PLAN_ARGS)

submit: ## Add a spark-submit step (adds to the profile's output dataset, prints the Athena query): make submit MANIFEST=s3://... [PROFILE=emr OUTPUT=s3://... REPLACE=1 SET='k=v ...' WAIT=0 POLL=30 TIMEOUT=7200]
	@test -n "$(MANIFEST)" || { echo "submit: set MANIFEST=s3://bucket/path/manifest" >&2; exit 2; }
	@test -f conf/$(EMR_PROFILE).yaml || { echo "submit: no profile conf/$(EMR_PROFILE).yaml" >&2; exit 2; }
	$(EMR_CTL) submit --manifest '$(MANIFEST)' --profile '$(EMR_PROFILE)' \
		$(if $(OUTPUT),--output '$(OUTPUT)') $(if $(filter 1 yes true,$(REPLACE)),--replace) $(foreach kv,$(SET),--set '$(kv)') \
		$(if $(filter 0 no false,$(WAIT)),--no-wait) --poll $(POLL) --timeout $(TIMEOUT)

destroy-cluster: infra-preflight infra-profile infra-init ## Remove the cluster, network, roles and artifacts bucket; KEEP the data and logs buckets and their contents
	$(TF) apply -input=false -auto-approve $(TF_VARS) $(CLUSTER_OFF) $(SERVERLESS_KEEP)
	@echo "destroy-cluster: kept the data and logs buckets; make deploy-cluster brings the cluster back, make destroy-all deletes them"

# One shell: with nothing in the state there is nothing to do (an apply would create the buckets).
# The apply removes the compute first (a running cluster writes logs until it ends) and stores
# force_destroy=true, which Terraform reads from state at delete time: objects that arrive after
# the emptying (late S3 access logs) do not stop the destroy.
destroy-all: infra-preflight infra-profile infra-init ## DESTRUCTIVE: delete EVERYTHING, the data bucket (manifests, outputs, all versions) and the logs bucket included
	@state=$$($(TF) show -json) || exit 1; \
	if ! echo "$$state" | grep -q '"resources"'; then echo "destroy-all: nothing deployed from $(TF_DIR)"; exit 0; fi; \
	echo "destroy-all: deleting the cluster and every bucket with ALL its objects (data: manifests/, outputs/; logs)"; \
	set -ex; \
	$(TF) apply -input=false -auto-approve $(TF_VARS) $(CLUSTER_OFF) -var force_destroy_buckets=true; \
	$(EMR_CTL) empty-buckets; \
	$(TF) destroy -input=false -auto-approve $(TF_VARS) $(CLUSTER_OFF) -var force_destroy_buckets=true

deploy-serverless: PACK_NODE_ENV = true
deploy-serverless: infra-preflight infra-profile package-code infra-model infra-init node-env ## EMR Serverless: terraform apply the application, its job role, the packed environment and entry point (same buckets, Glue table, models; the cluster stays as it is)
	$(TF) apply -input=false -auto-approve $(TF_VARS) $(SERVERLESS_ON) $(CLUSTER_KEEP)
	@$(TF) output serverless

submit-serverless: ## Start an EMR Serverless job run (same arguments as make submit): make submit-serverless MANIFEST=s3://... [PROFILE=emr OUTPUT=... REPLACE=1 SET='k=v ...' WAIT=0 POLL=30 TIMEOUT=7200]
	@test -n "$(MANIFEST)" || { echo "submit-serverless: set MANIFEST=s3://bucket/path/manifest" >&2; exit 2; }
	@test -f conf/$(EMR_PROFILE).yaml || { echo "submit-serverless: no profile conf/$(EMR_PROFILE).yaml" >&2; exit 2; }
	$(EMR_CTL) submit-serverless --manifest '$(MANIFEST)' --profile '$(EMR_PROFILE)' \
		$(if $(OUTPUT),--output '$(OUTPUT)') $(if $(filter 1 yes true,$(REPLACE)),--replace) $(foreach kv,$(SET),--set '$(kv)') \
		$(if $(filter 0 no false,$(WAIT)),--no-wait) --poll $(POLL) --timeout $(TIMEOUT)

destroy-serverless: PACK_NODE_ENV = false
destroy-serverless: infra-preflight infra-profile package-code infra-model infra-init node-env ## Remove the EMR Serverless application, its role and uploads; the cluster, buckets and Glue table stay as they are
	$(TF) apply -input=false -auto-approve $(TF_VARS) $(SERVERLESS_OFF) $(CLUSTER_KEEP)

node-env: infra-profile infra-model ## Build the nodes' Python environment for the profile (dist/node-env; PACK_NODE_ENV=true also the packed one)
	$(PY) infra/scripts/node_env.py --resolved $(RESOLVED_PROFILE) --artifacts-root $(ARTIFACTS_ROOT) --out $(NODE_ENV) \
		$(if $(filter true,$(PACK_NODE_ENV)),--pack $(NODE_ENV_ARCHIVE))

check-infra: infra-preflight ## terraform fmt -check, terraform validate and checkov on infra/terraform
	$(TERRAFORM) fmt -check -recursive -diff $(TF_DIR)
	$(TF) init -backend=false $(TF_INIT_ARGS) >/dev/null
	$(TF) validate
	@test -x $(CHECKOV) || { echo "check-infra: $(CHECKOV) missing: run make install-infra" >&2; exit 1; }
	$(CHECKOV) --directory $(TF_DIR) --framework terraform --skip-download --compact --quiet

install-infra: ## Create .venv-infra with checkov (its pins clash with the job's, so it lives apart)
	test -x $(INFRA_VENV)/bin/python || python3 -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet -r requirements-infra.txt

package-code: ## Build the code tarball the bootstrap action installs (dist/image-tagger-code.tar.gz)
	$(PY) infra/scripts/package.py --root $(PACKAGE_ROOT) --output $(CODE_PACKAGE)

# Internal helpers.
infra-preflight:
	@command -v $(TERRAFORM) >/dev/null 2>&1 || { \
		echo "infra: terraform not found (TERRAFORM=$(TERRAFORM)); install Terraform >= 1.5 or set TERRAFORM=/path/to/terraform" >&2; exit 127; }
	@if [ -n "$(TF_PLUGIN_DIR)" ] && [ ! -d "$(TF_PLUGIN_DIR)/registry.terraform.io/hashicorp/aws" ]; then \
		echo "infra: no hashicorp/aws provider under TF_PLUGIN_DIR=$(TF_PLUGIN_DIR) (expected $(TF_PLUGIN_DIR)/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/)" >&2; exit 1; fi

infra-init: infra-preflight
	$(TF) init $(TF_INIT_ARGS)

# Exits 2 naming the key when the profile is invalid; the file is replaced only when it is whole.
infra-profile:
	@mkdir -p $(dir $(RESOLVED_PROFILE))
	$(PY) -m jobs.config --resolve conf/$(EMR_PROFILE).yaml > $(RESOLVED_PROFILE).tmp && mv $(RESOLVED_PROFILE).tmp $(RESOLVED_PROFILE) \
		|| { rm -f $(RESOLVED_PROFILE).tmp; exit 2; }

# Builds the artifacts with the top-level `make model` when one the profile names is missing
# (exit 3 of check-models); the product-category head is committed (make train-head rebuilds it).
CHECK_MODELS = $(EMR_CTL) check-models --profile '$(EMR_PROFILE)' --artifacts-root '$(abspath $(ARTIFACTS_ROOT))'
infra-model:
	@$(CHECK_MODELS) >/dev/null; rc=$$?; \
	if [ $$rc -eq 3 ]; then \
		echo "infra: a model artifact conf/$(EMR_PROFILE).yaml names is missing; building with make model"; \
		$(MAKE) model || { echo "infra: make model failed" >&2; exit 1; }; \
		$(CHECK_MODELS) || { echo "infra: still missing after make model (the category head: make train-head)" >&2; exit 1; }; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi
