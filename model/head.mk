# Product-category head (issue 6). The Makefile includes this file; on its own:
#   make -f model/head.mk train-head [TRAIN_HEAD_ARGS="--train-size 20000"]
VENV ?= .venv
PY ?= $(VENV)/bin/python
HEAD_BACKBONE_JSON ?= model/artifacts/efficientnet_lite0/model.json
TRAIN_HEAD_ARGS ?=

.PHONY: train-head

train-head: $(HEAD_BACKBONE_JSON) ## Train the product-category head on the frozen backbone; evaluation in reports/train-head
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m model.train_head $(TRAIN_HEAD_ARGS)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m model.convert --src model/artifacts/product_category --out model/artifacts/product_category_tflite
