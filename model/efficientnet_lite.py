"""EfficientNet-Lite0 in Keras, with weights ported from the PyTorch checkpoint.

Architecture (Tan & Le; the "Lite" variant drops squeeze-excite and uses ReLU6):
stem 3x3/2 conv -> 16 MBConv blocks in 7 stages -> 1x1 conv to 1280 -> global average
pool (the embedding) -> dense 1000 (logits). Layer names mirror the checkpoint's keys so
the port is a table lookup, and never start with "_" (Keras 3 SavedModel export refuses).
"""

from __future__ import annotations

import numpy as np

BN_EPSILON = 1e-3
# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The network was trained on (pixel - 127) / 128; the model takes raw uint8 RGB.
INPUT_SCALE = 1.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0


def block_specs():
    """Yield (index, kernel, stride, expand, in_ch, out_ch) for each of the 16 blocks."""
    index = 0
    for repeats, kernel, stride, expand, in_ch, out_ch in STAGES:
        for repeat in range(repeats):
            first = repeat == 0
            yield index, kernel, stride if first else 1, expand, in_ch if first else out_ch, out_ch
            index += 1


def build(num_classes: int = 1000, image_size: int = 224):
    """Return a Keras model: uint8 images (N, H, W, 3) -> {probabilities, embedding}."""
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, name, activation=True):
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x

    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="normalise")(inputs)
    x = conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for index, kernel, stride, expand, in_ch, out_ch in block_specs():
        name = f"block{index}"
        shortcut = x
        if expand != 1:
            x = conv_bn(x, in_ch * expand, 1, 1, f"{name}_expand")
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
        x = conv_bn(x, out_ch, 1, 1, f"{name}_project", activation=False)
        if stride == 1 and in_ch == out_ch:
            x = layers.Add(name=f"{name}_add")([shortcut, x])
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    embedding = layers.GlobalAveragePooling2D(name="embedding")(x)
    logits = layers.Dense(num_classes, name="logits")(embedding)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, {"probabilities": probabilities, "embedding": embedding}, name="efficientnet_lite0")


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)


def _bn(state: dict, prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def keras_weights_from_torch(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch state_dict onto Keras layer names -> weight lists."""
    weights = {
        "stem_conv": [_conv_kernel(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0"),
        "head_conv": [_conv_kernel(state["_conv_head.weight"])],
        "head_bn": _bn(state, "_bn1"),
        "logits": [state["_fc.weight"].T, state["_fc.bias"]],
    }
    for index, _kernel, _stride, expand, _in, _out in block_specs():
        src, dst = f"_blocks.{index}", f"block{index}"
        if expand != 1:
            weights[f"{dst}_expand_conv"] = [_conv_kernel(state[f"{src}._expand_conv.weight"])]
            weights[f"{dst}_expand_bn"] = _bn(state, f"{src}._bn0")
        weights[f"{dst}_dw_conv"] = [_depthwise_kernel(state[f"{src}._depthwise_conv.weight"])]
        weights[f"{dst}_dw_bn"] = _bn(state, f"{src}._bn1")
        weights[f"{dst}_project_conv"] = [_conv_kernel(state[f"{src}._project_conv.weight"])]
        weights[f"{dst}_project_bn"] = _bn(state, f"{src}._bn2")
    return weights


def load_weights(model, weights: dict[str, list[np.ndarray]]) -> None:
    """Set every weighted layer of `model`; fail if any layer or weight is left over."""
    weighted = {layer.name for layer in model.layers if layer.weights}
    missing, unused = weighted - weights.keys(), weights.keys() - weighted
    if missing or unused:
        raise ValueError(f"weight port mismatch: missing {sorted(missing)}, unused {sorted(unused)}")
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
