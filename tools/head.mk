# Heads on the backbone's embedding (issue 6, issue 10). The Makefile includes this file; on its own:
#   make -f tools/head.mk train-head [TRAIN_HEAD_ARGS="--train-size 20000"]
#   make train-head LABELS=data/labelled/manifest.csv NAME=product_type [PROFILE=...] [TRAIN_HEAD_ARGS="--set fetch.threads=4"]
# One trainer, tools/train_head.py, for both: with LABELS (CSV/Parquet with url,label, local or s3://,
# or a folder of class folders) and NAME, a head on your own images, embedded by the tagging job
# itself; without LABELS, the built-in product-category head, whose labelled images are
# Fashion-MNIST renders (tools/category_head.py). Both take the profile's backbone and decode settings.
VENV ?= .venv
PY ?= $(VENV)/bin/python
PROFILE ?= conf/local.yaml
HEAD_BACKBONE_JSON ?= model/artifacts/efficientnet_lite0/model.json
TRAIN_HEAD_ARGS ?=
LABELS ?=
NAME ?=
LABELLED_DIR := data/labelled
LABELLED_IMAGES ?= 300

.PHONY: train-head labelled-sample

train-head: $(HEAD_BACKBONE_JSON) $(filter $(LABELLED_DIR)/manifest.csv,$(LABELS)) ## Train a head: Fashion-MNIST product category, or LABELS=URI NAME=name for your own labelled images
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m tools.train_head $(if $(strip $(LABELS)),--labels '$(LABELS)' --name '$(NAME)') --profile $(PROFILE) $(TRAIN_HEAD_ARGS)

labelled-sample: ## data/labelled/manifest.csv: LABELLED_IMAGES generated product photos with url,label (their Fashion-MNIST class)
	$(PY) -m tools.sample_data --labelled --out $(LABELLED_DIR) --images $(LABELLED_IMAGES)

$(LABELLED_DIR)/manifest.csv:
	$(PY) -m tools.sample_data --labelled --out $(LABELLED_DIR) --images $(LABELLED_IMAGES)
