# Image tagging on Spark. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
SPARK_SUBMIT := $(VENV)/bin/spark-submit
PROFILE ?= conf/local.yaml
MODEL_DIR := model/artifacts/efficientnet_lite0
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
LOCAL_IMAGES ?= 200
# make rehearse-emr: the AWS CLI the bootstrap action calls. The wheels its nodes install (--no-index)
# are the node environment make deploy-cluster builds and uploads (infra/infra.mk: NODE_ENV).
AWS_CLI_VENV := .venv-aws

# Python workers run the venv's interpreter; Spark logs only warnings; TF keeps quiet.
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_CONF_DIR := $(abspath conf/spark)
export TF_CPP_MIN_LOG_LEVEL := 2
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help install check-prereqs system-packages model test test-fast lint run-local similar-local lock clean rehearsal-tools rehearse-emr

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

install: check-prereqs system-packages $(VENV)/.installed model install-infra rehearsal-tools ## Create .venv (job + dev tools), .venv-infra (checkov), .venv-aws and dist/node-env (rehearse-emr); build the model artifacts

check-prereqs: ## Check Python 3.11 and Java 17+ (Spark needs both)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	@command -v java >/dev/null || { echo "error: Java 17 is required for Spark but 'java' is not on PATH (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  [ -n "$$v" ] && [ "$$v" -ge 17 ] || { echo "error: Java 17+ is required for Spark, found: $$(java -version 2>&1 | head -1)"; exit 1; }

system-packages: $(FASHION_MNIST) ## Debian packages the tests and benchmarks use (Fashion-MNIST)

$(FASHION_MNIST):
	@command -v apt-get >/dev/null || { echo "error: $@ is missing and apt-get is not available: install Debian's dataset-fashion-mnist"; exit 1; }
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; } || \
	  { echo "error: could not install the Debian package dataset-fashion-mnist"; exit 1; }

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements.lock setup.py
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-dev.txt -c requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) check >/dev/null || { $(PIP) check; exit 1; }
	$(PIP) install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c 'import pyspark, tensorflow, PIL, boto3, pandas, pyarrow, chispa, moto' || { echo "error: dependencies failed to install"; exit 1; }
	touch $@

model: $(MODEL_DIR)/model.json $(MODEL_DIR)_int8/model.json ## Build the EfficientNet-Lite0 artifacts: Keras, TFLite and int8 TFLite with its quality gates (real ImageNet weights)

$(MODEL_DIR)/model.json: $(VENV)/.installed model/build.py model/checkpoint.py model/efficientnet_lite.py model/artifact.py model/imagenet_classes.txt
	$(PY) -m model.build --out $(MODEL_DIR) --tflite-out $(MODEL_DIR)_tflite

# The int8 twin, quantised from the float model; the gates (vs the float TFLite model, and the
# category head on int8 embeddings) go into its model.json and reports/int8/quality.json.
$(MODEL_DIR)_int8/model.json: $(MODEL_DIR)/model.json model/quantise.py tools/build_int8.py tools/sample_data.py tools/datasets.py \
  jobs/decode.py model/artifacts/product_category_tflite/model.json
	$(PY) -m tools.build_int8 --src $(MODEL_DIR) --float-tflite $(MODEL_DIR)_tflite --out $(MODEL_DIR)_int8

rehearsal-tools: $(AWS_CLI_VENV)/bin/aws ## The AWS CLI (.venv-aws) and the EMR profile's node environment (dist/node-env) make rehearse-emr needs

$(AWS_CLI_VENV)/bin/aws: requirements-aws.txt
	@[ -x $(AWS_CLI_VENV)/bin/python ] || $(PYTHON) -m venv $(AWS_CLI_VENV)
	$(AWS_CLI_VENV)/bin/python -m pip --disable-pip-version-check install -q -r requirements-aws.txt 2>&1 | grep -v "^WARNING: Location" || true
	@test -x $@ || { echo "error: the AWS CLI did not install into $(AWS_CLI_VENV)"; exit 1; }

rehearse-emr: ## Rehearse EMR here: deploy to the AWS emulator, a 2-worker Spark cluster bootstrapped like EMR nodes, the submitted step, spot and driver loss
	$(PY) infra/scripts/rehearse_emr.py $(REHEARSE_ARGS)

test: ## Run the test suite, every test (what CI runs)
	$(PY) -m pytest

# Markers in pyproject.toml: e2e runs spark-submit, infra the Terraform cycle, rehearsal make rehearse-emr.
test-fast: ## Unit and DataFrame tests only, under 3 minutes: no spark-submit, whole in-process job runs, Terraform or EMR rehearsal
	$(PY) -m pytest -m "not e2e and not job and not infra and not rehearsal"

lint: ## ruff: lint (ruff check) and format check (ruff format --check)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

run-local: ## Tag real photos + generated product photos on Spark local mode; summary on stdout
	@manifest=$$($(PY) -m tools.sample_data --demo --out data/local --images $(LOCAL_IMAGES)) && \
	  mapfile -t spark_args < <($(PY) -m jobs.spark_args --profile $(PROFILE)) && \
	  time $(SPARK_SUBMIT) "$${spark_args[@]}" jobs/tag_images.py \
	    --manifest $$manifest --output out/local --profile $(PROFILE)

similar-local: run-local ## Similar images and near-duplicates of the local sample (run-local's embeddings) into out/local-similar; prints a few
	@mapfile -t spark_args < <($(PY) -m jobs.spark_args --profile $(PROFILE)) && \
	  time $(SPARK_SUBMIT) "$${spark_args[@]}" jobs/similar_images.py --tags out/local --output out/local-similar --profile $(PROFILE)
	@$(PY) -m jobs.similar_show out/local-similar

lock: ## Re-pin requirements.lock from the current .venv
	@{ sed -n '1,2p' requirements.lock; $(PIP) freeze --exclude-editable 2>/dev/null; } > requirements.lock.new && mv requirements.lock.new requirements.lock

clean: ## Remove generated data and outputs (keeps .venv and the model)
	rm -rf data out reports/latest spark-warehouse metastore_db

include infra/infra.mk
# rehearsal-tools also builds the wheelhouse make deploy-cluster uploads for conf/emr.yaml (NODE_ENV is
# infra.mk's), ahead: deploy reuses it while the requirements are unchanged, so the rehearsal downloads nothing.
rehearsal-tools: $(NODE_ENV)/node-env.json
$(NODE_ENV)/node-env.json: requirements.txt requirements.lock $(wildcard requirements-node-*.txt)
	$(MAKE) --no-print-directory node-env PROFILE=emr
include tools/benchmark/bench.mk
include tools/head.mk
