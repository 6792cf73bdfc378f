"""Inference stage: a batch of uint8 images -> top-k (label, score) per image.

`Tagger` wraps any `predict(batch) -> probabilities` callable, so it tests with a fake
model. `tagger_for_worker` builds the real one from a broadcast artifact once per Python
worker process and reuses it for every batch and task that worker runs.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.artifact import ModelArtifact

Predict = Callable[[np.ndarray], np.ndarray]
Run = Callable[[np.ndarray], dict[str, np.ndarray]]


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first."""
    k = min(k, probabilities.shape[1])
    part = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(probabilities, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


@dataclass
class Tagger:
    """Turns image batches into tags with a model's predict function."""

    predict: Predict
    class_names: list[str]
    top_k: int
    batch_size: int

    def tag(self, images: np.ndarray) -> list[list[tuple[str, float]]]:
        """images: uint8 (N, H, W, 3) -> per image, top_k (label, probability), best first."""
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(images), self.batch_size):
            probabilities = np.asarray(self.predict(images[start : start + self.batch_size]))
            indices, scores = top_k(probabilities, self.top_k)
            for row_indices, row_scores in zip(indices, scores, strict=True):
                results.append([(self.class_names[i], float(s)) for i, s in zip(row_indices, row_scores, strict=True)])
        return results


def configure_tensorflow(threads: int) -> None:
    """Pin TF's thread pools (before first use) so workers sharing a node do not fight."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF already initialised in this process; settings are fixed by then
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU between workers
        except RuntimeError:
            pass


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    # A short last batch is padded so the runtime keeps one compiled input shape.
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])


def keras_runner(artifact: ModelArtifact, batch_size: int, threads: int) -> Run:
    """TensorFlow/Keras: load model.keras, trace one serving function."""
    configure_tensorflow(threads)
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifact.meta["model_file"]
        path.write_bytes(artifact.files[artifact.meta["model_file"]])
        model = keras.saving.load_model(path, compile=False)
    size = int(artifact.meta.get("image_size", 224))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def serve(images):
        return model(images, training=False)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        return {name: value.numpy()[:n] for name, value in serve(tf.constant(_pad(batch, batch_size))).items()}

    return run


def tflite_runner(artifact: ModelArtifact, batch_size: int, threads: int) -> Run:
    """LiteRT (TFLite with XNNPACK): same weights, a fraction of TensorFlow's start-up and memory."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact.files[artifact.meta["model_file"]], num_threads=threads or None)
    signature = interpreter.get_signature_runner("serving_default")
    image_index = signature.get_input_details()["image"]["index"]
    outputs = {name: detail["index"] for name, detail in signature.get_output_details().items()}
    del signature  # it pins the interpreter's buffers; resizing below needs them free
    size = int(artifact.meta.get("image_size", 224))
    interpreter.resize_tensor_input(image_index, [batch_size, size, size, 3])
    interpreter.allocate_tensors()

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        interpreter.set_tensor(image_index, _pad(batch, batch_size))
        interpreter.invoke()
        return {name: interpreter.get_tensor(index)[:n].copy() for name, index in outputs.items()}

    return run


RUNNERS = {"keras": keras_runner, "tflite": tflite_runner}


def build_model_runner(artifact: ModelArtifact, batch_size: int, threads: int = 0) -> Run:
    """batch (N, H, W, 3) uint8 -> {"probabilities": (N, classes), "embedding": (N, 1280)}."""
    fmt = artifact.meta["format"]
    if fmt not in RUNNERS:
        raise ValueError(f"model {artifact.name}: unknown artifact format {fmt!r} (known: {', '.join(RUNNERS)})")
    return RUNNERS[fmt](artifact, batch_size, threads)


def build_predictor(artifact: ModelArtifact, batch_size: int, threads: int = 0) -> Predict:
    """batch -> class probabilities, whatever the artifact's format."""
    run = build_model_runner(artifact, batch_size, threads)
    return lambda batch: run(batch)["probabilities"]


_WORKER_TAGGERS: dict[tuple, Tagger] = {}
_WORKER_LOCK = threading.Lock()


def tagger_for_worker(artifact: ModelArtifact, *, top_k: int, batch_size: int, threads: int) -> Tagger:
    """The worker's Tagger for this artifact version, built on first use (once per process)."""
    key = (artifact.name, artifact.version, top_k, batch_size, os.getpid())
    with _WORKER_LOCK:
        if key not in _WORKER_TAGGERS:
            predict = build_predictor(artifact, batch_size, threads)
            _WORKER_TAGGERS[key] = Tagger(predict, artifact.class_names, top_k, batch_size)
        return _WORKER_TAGGERS[key]


def worker_model_loads() -> int:
    """How many models this process has built (tests prove 'once per worker' with it)."""
    return len(_WORKER_TAGGERS)
