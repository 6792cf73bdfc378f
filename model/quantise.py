"""Full-integer (int8) post-training quantisation of a backbone, and the quality gates it must pass.

EfficientNet-Lite was designed for int8: ReLU6 bounds every activation, and XNNPACK runs int8
kernels on x86 and ARM (about 2.2x the float model's rate per core here, one thread). Weights are quantised per
channel, activations per tensor with ranges from a representative set of images. The input
stays uint8 RGB (what the job feeds); the outputs stay float32, so the probabilities, the
embedding and the heads on it work unchanged.

Selective quantisation: a layer whose int8 output misses its float output by more than
MAX_ERROR_STEPS quantisation steps (RMS, measured on the representative set) stays float.
On EfficientNet-Lite0 that is the stem convolution and the first depthwise convolution, whose
batch-norm-folded weights spread over a wide range; keeping them float doubles the embedding's
agreement for ~4% of the int8 speed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable

import numpy as np

MAX_ERROR_STEPS = 1.0
QUANTISED_FORMAT = "tflite"
SCHEME = "int8 weights per channel, int8 activations per tensor, uint8 input, float32 outputs"


def rms_error_steps(stats: dict) -> float:
    """A layer's int8 error in quantisation steps: sqrt(mean squared error) / scale."""
    scale = stats.get("scale") or 0.0
    mse = stats.get("mean_squared_error")
    if not scale or mse is None or math.isnan(mse):
        return 0.0
    return math.sqrt(mse) / scale


def layers_to_keep_float(layer_stats: dict[str, dict], max_error_steps: float = MAX_ERROR_STEPS) -> list[str]:
    """Names of the layers whose int8 output errs by more than max_error_steps, worst first."""
    errors = {name: rms_error_steps(stats) for name, stats in layer_stats.items()}
    return sorted((name for name, error in errors.items() if error > max_error_steps), key=lambda n: -errors[n])


def layer_stats_from_csv(text: str) -> dict[str, dict]:
    """QuantizationDebugger's layer_statistics_dump -> {tensor name: {metric: float}}."""
    stats = {}
    for row in csv.DictReader(io.StringIO(text)):
        stats[row["tensor_name"]] = {k: float(v) for k, v in row.items() if k in ("scale", "mean_squared_error") and v}
    return stats


def quantise_saved_model(saved_model_dir: str, representative: np.ndarray) -> tuple[bytes, list[str]]:
    """Quantise a SavedModel (uint8 image input) to int8; returns (TFLite bytes, layers kept float).

    representative: uint8 (N, H, W, 3) images as the job prepares them; they set the activation
    ranges and measure each layer's error.
    """
    import tensorflow as tf

    def samples() -> Iterable[list[np.ndarray]]:
        for i in range(len(representative)):
            yield [representative[i : i + 1]]

    def converter():
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = samples
        return conv

    probe = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=samples)
    probe.run()
    dump = io.StringIO()
    probe.layer_statistics_dump(dump)  # the public form of the per-layer errors, with each layer's scale
    keep_float = layers_to_keep_float(layer_stats_from_csv(dump.getvalue()))
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=samples, debug_options=options)
    return debugger.get_nondebug_quantized_model(), keep_float


# --------------------------------------------------------------------------------------------
# Quality gates: int8 against float on the same images
# --------------------------------------------------------------------------------------------
CONFIDENT = 0.3  # the float model's top-1 probability from which its answer counts as confident
# A real photo whose float top-1 leads its top-2 by less than this is a near-tie: int8 may swap the
# two (chelsea.png: Egyptian cat 0.3735 against tiger cat 0.3710), so it need only keep float's
# top-1 within its own top-2. A clearer answer must stay int8's top-1.
NEAR_TIE = 0.02
GATES = {
    # name: (threshold, higher is better)
    "top1_agreement_confident": 0.97,
    "top1_in_top5": 0.99,
    "real_photos_kept": 1.0,
    "embedding_cosine_median": 0.98,
}
HEAD_ACCURACY_MAX_DROP = 0.01  # the category head's test accuracy on int8 embeddings, at most 1 point lower


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def agreement(float_probs: np.ndarray, int8_probs: np.ndarray, min_confidence: float = 0.0) -> tuple[float, int]:
    """Share of rows (float top-1 probability >= min_confidence) where int8's top-1 is float's; (share, rows)."""
    rows = float_probs.max(axis=1) >= min_confidence
    if not rows.any():
        return float("nan"), 0
    same = float_probs[rows].argmax(axis=1) == int8_probs[rows].argmax(axis=1)
    return float(same.mean()), int(rows.sum())


def in_top_k(float_probs: np.ndarray, int8_probs: np.ndarray, k: int = 5) -> float:
    """Share of rows whose float top-1 is among int8's k best classes."""
    best_k = np.argsort(-int8_probs, axis=1, kind="stable")[:, :k]
    return float((best_k == float_probs.argmax(axis=1)[:, None]).any(axis=1).mean())


def photos_kept(float_probs: np.ndarray, int8_probs: np.ndarray, near_tie: float = NEAR_TIE) -> float:
    """Share of rows that keep float's answer: its top-1 stays int8's top-1 where float leads its
    top-2 by at least near_tie, and stays within int8's top-2 where the call is closer."""
    ordered = np.sort(float_probs, axis=1)
    close_call = ordered[:, -1] - ordered[:, -2] < near_tie
    best = float_probs.argmax(axis=1)
    int8_best2 = np.argsort(-int8_probs, axis=1, kind="stable")[:, :2]
    kept = np.where(close_call, (int8_best2 == best[:, None]).any(axis=1), int8_best2[:, 0] == best)
    return float(kept.mean())


def gate_measurements(float_out: dict, int8_out: dict, photo_rows: np.ndarray) -> dict:
    """What the gates read, from both models' outputs on the same images.

    float_out / int8_out: {"probabilities": (N, C), "embedding": (N, D)}; photo_rows: a boolean
    (N,) mask of the original real photos, each of which must keep its answer (`photos_kept`).
    """
    fp, qp = float_out["probabilities"], int8_out["probabilities"]
    confident, confident_rows = agreement(fp, qp, CONFIDENT)
    cos = cosine(float_out["embedding"], int8_out["embedding"])
    photos_top1_kept, _ = agreement(fp[photo_rows], qp[photo_rows])
    return {
        "images": len(fp),
        "real_photos": int(photo_rows.sum()),
        "confident_images": confident_rows,
        "top1_agreement_confident": confident,
        "top1_in_top5": in_top_k(fp, qp, 5),
        "top1_agreement": agreement(fp, qp)[0],
        "real_photos_kept": photos_kept(fp[photo_rows], qp[photo_rows]),
        "real_photos_top1_kept": photos_top1_kept,  # reported, not gated: a near-tie may swap
        "embedding_cosine_median": float(np.median(cos)),
        "embedding_cosine_p1": float(np.percentile(cos, 1)),
        "float_top1_probability_median": float(np.median(fp.max(axis=1))),
    }


def judge(measured: dict, head_accuracy: dict | None) -> dict:
    """Each gate's verdict and whether int8 is adopted (every gate passed).

    head_accuracy: {"float": a, "int8": b} of the category head on the same test images, or None
    when there is no head to check (then that gate is not part of the verdict).
    """
    verdicts = [
        {"gate": name, "value": measured[name], "threshold": threshold, "passed": bool(measured[name] >= threshold)}
        for name, threshold in GATES.items()
    ]
    if head_accuracy is not None:
        drop = head_accuracy["float"] - head_accuracy["int8"]
        verdicts.append(
            {"gate": "head_accuracy_drop", "value": drop, "threshold": HEAD_ACCURACY_MAX_DROP,
             "passed": bool(drop <= HEAD_ACCURACY_MAX_DROP)}
        )  # fmt: skip
    return {"gates": verdicts, "adopted": all(v["passed"] for v in verdicts)}
