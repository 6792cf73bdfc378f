"""Build the int8 backbone artifact and measure its quality gates against the float model.

    python -m tools.build_int8 [--src model/artifacts/efficientnet_lite0] [--out model/artifacts/efficientnet_lite0_int8]

Steps (all seeded, so a rebuild gives the same bytes and the same version):
1. representative set: REPRESENTATIVE_IMAGES generated product photos and views of the real
   photos (tools.sample_data, seed REPRESENTATIVE_SEED), JPEG-encoded and prepared by the job's own
   decode (jobs.decode.prepare), so the activation ranges are those of production inputs;
2. quantise (model.quantise): full-integer post-training quantisation, the layers that int8
   would hurt most kept float;
3. gates: on GATE_IMAGES other images (seed GATE_SEED) plus the original real photos, the float
   TFLite model and the int8 one side by side (model.quantise.gate_measurements), and the
   category head's test accuracy on both models' embeddings (HEAD_TEST_ITEMS Fashion-MNIST test
   items rendered as the head's own test renders them);
4. write the artifact (model.json records the scheme, the float layers, the measurements and the
   verdict: `quality.adopted`) and reports/int8/quality.json.

A dev tool: it uses the sample-data generator and the job's decode, so it lives outside the
packages that EMR nodes install.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.config import DecodeSettings
from jobs.decode import prepare_with
from model import quantise
from model.artifact import ModelArtifact, load_artifact, save_tflite_artifact
from model.runtime import build_model_runner, load_keras_model
from tools.datasets import real_photo_paths
from tools.sample_data import sample_images

SRC = Path("model/artifacts/efficientnet_lite0")
FLOAT_TFLITE = Path("model/artifacts/efficientnet_lite0_tflite")
OUT = Path("model/artifacts/efficientnet_lite0_int8")
HEAD = Path("model/artifacts/product_category_tflite")
REPORT = Path("reports/int8/quality.json")
REPRESENTATIVE_IMAGES, REPRESENTATIVE_SEED, REPRESENTATIVE_PHOTO_SHARE = 400, 31, 0.3
GATE_IMAGES, GATE_SEED, GATE_PHOTO_SHARE = 1000, 1111, 0.15
HEAD_TEST_ITEMS, HEAD_TEST_SEED = 2000, 7  # tools/category_head.py renders its test items with seed 7
JPEG_QUALITY = 90
log = logging.getLogger(__name__)


def prepared_images(count: int, seed: int, photo_share: float) -> tuple[np.ndarray, list[str]]:
    """Generated images as the job would feed them: JPEG bytes through jobs.decode.prepare."""
    images, sources = [], []
    for img, source in sample_images(count, np.random.default_rng(seed), photo_share):
        images.append(prepare_jpeg(img))
        sources.append(source)
    return np.stack(images), sources


def prepare_jpeg(img: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return prepare_with(buffer.getvalue(), DecodeSettings())


def run_model(artifact, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every output of a model on images, batch by batch."""
    model = build_model_runner(artifact, batch_size, threads=0)
    parts = [model(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def head_accuracy(head_dir: Path, float_backbone, int8_backbone) -> dict | None:
    """The category head's test accuracy on float and on int8 embeddings of the same renders."""
    if not (head_dir / "model.json").is_file():
        log.warning("no head at %s: the head gate is skipped", head_dir)
        return None
    from tools.category_head import render_items
    from tools.datasets import fashion_mnist

    items, labels = fashion_mnist("t10k")
    indices = np.arange(HEAD_TEST_ITEMS)
    images = render_items(items, indices, split="t10k", seed=HEAD_TEST_SEED, decode=DecodeSettings())
    head = load_artifact(str(head_dir))
    accuracy = {}
    for name, backbone in (("float", float_backbone), ("int8", int8_backbone)):
        embeddings = run_model(backbone, images)["embedding"]
        predicted = run_model(head, embeddings.astype(np.float32))["probabilities"].argmax(axis=1)
        accuracy[name] = float((predicted == labels[indices]).mean())
    return {**accuracy, "items": HEAD_TEST_ITEMS, "head": head.name, "head_version": head.version}


def photo_answers(names: list[str], float_probs: np.ndarray, int8_probs: np.ndarray, classes: list[str]) -> list[dict]:
    """Per real photo: float's two best classes and int8's best, with probabilities (a near-tie shows)."""
    answers = []
    for name, fp, qp in zip(names, float_probs, int8_probs, strict=True):
        first, second = np.argsort(-fp)[:2]
        best = int(qp.argmax())
        answers.append({
            "photo": name,
            "float": [[classes[first], round(float(fp[first]), 4)], [classes[second], round(float(fp[second]), 4)]],
            "int8": [classes[best], round(float(qp[best]), 4)],
            "kept": bool(best == first),
        })  # fmt: skip
    return answers


def saved_model_of(artifact: ModelArtifact, tmp: str) -> str:
    """The Keras artifact exported as a SavedModel under tmp (what the TFLite quantiser reads)."""
    load_keras_model(artifact).export(f"{tmp}/saved_model", format="tf_saved_model", verbose=False)
    return f"{tmp}/saved_model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=SRC, help="the float Keras backbone artifact")
    parser.add_argument("--float-tflite", type=Path, default=FLOAT_TFLITE, help="its float TFLite twin (the gates' reference)")
    parser.add_argument("--head", type=Path, default=HEAD, help="a head on the backbone's embedding, for the head gate")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    source = load_artifact(str(args.src))
    log.info("representative set: %d images (seed %d)", REPRESENTATIVE_IMAGES, REPRESENTATIVE_SEED)
    representative, _ = prepared_images(REPRESENTATIVE_IMAGES, REPRESENTATIVE_SEED, REPRESENTATIVE_PHOTO_SHARE)
    with tempfile.TemporaryDirectory() as tmp:
        tflite, keep_float = quantise.quantise_saved_model(saved_model_of(source, tmp), representative)
    log.info("quantised: %d bytes, kept float: %s", len(tflite), keep_float)

    # The int8 model in memory, as the job's runtime loads it.
    int8 = ModelArtifact(
        {**source.meta, "format": "tflite", "model_file": "model.tflite"},
        {"model.tflite": tflite, source.meta["classes_file"]: source.files[source.meta["classes_file"]]},
    )
    log.info("gates: %d images + %d real photos (seed %d)", GATE_IMAGES, len(real_photo_paths()), GATE_SEED)
    gate_images, _ = prepared_images(GATE_IMAGES, GATE_SEED, GATE_PHOTO_SHARE)
    photos = np.stack([prepare_jpeg(Image.open(path)) for path in real_photo_paths()])
    images = np.concatenate([gate_images, photos])
    photo_rows = np.arange(len(images)) >= len(gate_images)
    float_tflite = load_artifact(str(args.float_tflite))
    float_out, int8_out = run_model(float_tflite, images), run_model(int8, images)
    measured = quantise.gate_measurements(float_out, int8_out, photo_rows)
    head = head_accuracy(args.head, float_tflite, int8)
    verdict = quantise.judge(measured, head)
    quality = {
        **verdict,
        "measured": measured,
        "head_accuracy": head,
        "real_photos": photo_answers(
            [p.name for p in real_photo_paths()],
            float_out["probabilities"][photo_rows],
            int8_out["probabilities"][photo_rows],
            source.class_names,
        ),
        "reference": f"{float_tflite.name} {float_tflite.version} (tflite float)",
        "representative": f"{REPRESENTATIVE_IMAGES} images, seed {REPRESENTATIVE_SEED}, photo share {REPRESENTATIVE_PHOTO_SHARE}",
        "gate_set": f"{GATE_IMAGES} images, seed {GATE_SEED}, photo share {GATE_PHOTO_SHARE}, + {len(photos)} real photos",
    }
    extra = {k: v for k, v in source.meta.items() if k not in {"name", "version", "format", "model_file", "classes_file"}}
    meta = save_tflite_artifact(
        tflite, [np.frombuffer(tflite, np.uint8)], args.out, name=f"{source.name}_int8", class_names=source.class_names,
        extra_meta={
            **extra, "converted_from": source.version, "quantisation": quantise.SCHEME, "kept_float": keep_float,
            "quality": quality,
        },
    )  # fmt: skip
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"artifact": str(args.out), "version": meta["version"], **quality}, indent=2) + "\n")
    for gate in verdict["gates"]:
        log.info("gate %-26s %.4f (threshold %.2f): %s", gate["gate"], gate["value"], gate["threshold"],
                 "pass" if gate["passed"] else "FAIL")  # fmt: skip
    log.info("%s version %s -> %s; adopted: %s", meta["name"], meta["version"], args.out, verdict["adopted"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
