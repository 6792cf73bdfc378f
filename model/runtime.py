"""Model runtimes: a model artifact -> a callable that runs it on a batch.

A loaded model is a `ModelFn`: batch -> {output name: array}. A backbone answers
{"probabilities", "embedding"} for uint8 (N, H, W, 3) images; a head (a single-output
classifier) answers {"probabilities"} for (N, D) embeddings. The artifact's format picks the
runtime (RUNNERS): TensorFlow/Keras for model.keras, LiteRT (TFLite with XNNPACK) for
model.tflite. Each runtime pads a short last batch, so it keeps one compiled input shape.

The frameworks are imported inside the runners: importing this module costs nothing, and a
worker that runs LiteRT never imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.artifact import ArtifactError, ModelArtifact

ModelFn = Callable[[np.ndarray], dict[str, np.ndarray]]  # a loaded model: batch -> named outputs
Predict = Callable[[np.ndarray], np.ndarray]  # batch -> class probabilities


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


def _named(outputs) -> dict:
    # A single-output model (a classifier head) answers with its probabilities.
    return outputs if isinstance(outputs, dict) else {"probabilities": outputs}


def load_keras_model(artifact: ModelArtifact):
    """The Keras model of a keras-format artifact (Keras loads only from a file: a temporary one)."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifact.meta["model_file"]
        path.write_bytes(artifact.files[artifact.meta["model_file"]])
        return keras.saving.load_model(path, compile=False)


def keras_runner(artifact: ModelArtifact, batch_size: int, threads: int) -> ModelFn:
    """TensorFlow/Keras: load model.keras, trace one serving function."""
    configure_tensorflow(threads)
    import tensorflow as tf

    model = load_keras_model(artifact)
    spec = model.inputs[0]

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)])
    def serve(inputs):
        return _named(model(inputs, training=False))

    def call(batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        return {name: value.numpy()[:n] for name, value in serve(tf.constant(_pad(batch, batch_size))).items()}

    return call


def tflite_runner(artifact: ModelArtifact, batch_size: int, threads: int) -> ModelFn:
    """LiteRT (TFLite with XNNPACK): same weights, a fraction of TensorFlow's start-up and memory."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifact.files[artifact.meta["model_file"]], num_threads=threads or None)
    signature = interpreter.get_signature_runner("serving_default")
    (model_input,) = signature.get_input_details().values()
    outputs = {name: detail["index"] for name, detail in signature.get_output_details().items()}
    if len(outputs) == 1:
        outputs = {"probabilities": next(iter(outputs.values()))}
    del signature  # it pins the interpreter's buffers; resizing below needs them free
    input_index, dtype = model_input["index"], model_input["dtype"]
    interpreter.resize_tensor_input(input_index, [batch_size, *model_input["shape"][1:]])
    interpreter.allocate_tensors()

    def call(batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        interpreter.set_tensor(input_index, _pad(np.asarray(batch, dtype=dtype), batch_size))
        interpreter.invoke()
        return {name: interpreter.get_tensor(index)[:n].copy() for name, index in outputs.items()}

    return call


RUNNERS: dict[str, Callable[[ModelArtifact, int, int], ModelFn]] = {"keras": keras_runner, "tflite": tflite_runner}
# The module each format's runner imports, and what installs it: a LiteRT node has no TensorFlow
# (requirements-node-litert.txt), so a Keras profile there must say so before any work starts.
RUNTIME_MODULES: dict[str, tuple[str, str]] = {
    "keras": ("tensorflow", "TensorFlow (tensorflow-cpu; requirements-node-keras.txt, or -gpu)"),
    "tflite": ("ai_edge_litert", "LiteRT (ai-edge-litert; requirements-node-litert.txt)"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the module, or a broken parent package
        return False


def require_runtime(artifact: ModelArtifact) -> None:
    """Raise ArtifactError naming the runtime the artifact's format needs when this Python lacks it.

    Cheap (finds the module, does not import it), so the driver can check every model at start-up.
    """
    fmt = artifact.meta["format"]
    if fmt not in RUNNERS:
        raise ArtifactError(f"model {artifact.name}: unknown artifact format {fmt!r} (known: {', '.join(RUNNERS)})")
    module, runtime = RUNTIME_MODULES[fmt]
    if not _importable(module):
        raise ArtifactError(
            f"model {artifact.name} is a {fmt} artifact and needs {runtime}, but this Python has no {module!r}: "
            "deploy with a profile whose model format matches the nodes' runtime (the node environment is chosen "
            "from the profile's model formats at deploy), or use the model's tflite artifact"
        )


def build_model_runner(artifact: ModelArtifact, batch_size: int, threads: int = 0) -> ModelFn:
    """Backbone: uint8 (N, H, W, 3) -> {"probabilities", "embedding"}; head: (N, D) -> {"probabilities"}."""
    require_runtime(artifact)
    return RUNNERS[artifact.meta["format"]](artifact, batch_size, threads)


def build_predictor(artifact: ModelArtifact, batch_size: int, threads: int = 0) -> Predict:
    """batch -> class probabilities, whatever the artifact's format."""
    model = build_model_runner(artifact, batch_size, threads)
    return lambda batch: model(batch)["probabilities"]
