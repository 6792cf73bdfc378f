"""Convert a Keras model artifact (backbone or head) into a TFLite artifact with the same weights.

    python -m model.convert --src model/artifacts/product_category --out model/artifacts/product_category_tflite

The TFLite artifact keeps the source's metadata (kind, backbone, classes...), records the
source version as `converted_from`, and gets its own version (the format is part of it).
Workers then run it with LiteRT, without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.artifact import load_artifact, save_tflite_artifact
from model.build import tflite_bytes
from model.runtime import load_keras_model

log = logging.getLogger(__name__)
OWN_KEYS = {"name", "version", "format", "model_file", "classes_file"}


def convert(src: Path, out: Path) -> dict:
    artifact = load_artifact(str(src))
    if artifact.meta["format"] != "keras":
        raise SystemExit(f"{src}: expected a keras artifact, found {artifact.meta['format']}")
    model = load_keras_model(artifact)
    extra = {k: v for k, v in artifact.meta.items() if k not in OWN_KEYS}
    return save_tflite_artifact(
        tflite_bytes(model),
        model.get_weights(),
        out,
        name=artifact.name,
        class_names=artifact.class_names,
        extra_meta={**extra, "converted_from": artifact.version},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="Keras artifact directory")
    parser.add_argument("--out", type=Path, required=True, help="TFLite artifact directory to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    meta = convert(args.src, args.out)
    log.info("wrote %s (tflite) version %s to %s", meta["name"], meta["version"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
