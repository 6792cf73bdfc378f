"""The one head trainer: split, train, choose, calibrate, evaluate, write, and the one report shape.

Every head goes through it (tools/train_head.py, `make train-head`): a head on your own labelled
images (embedded by the tagging job) and the built-in product-category head (whose labelled
images are Fashion-MNIST renders, tools/category_head.py). A source hands over
LabelledEmbeddings (embeddings, classes, the split); fit_head and write_head do the rest. Nothing
here reads images or knows where embeddings came from: arrays in, a Keras model, artifacts and
plain dicts out.

Rules:
- classes (own labels): at least two, each with at least MIN_EXAMPLES_PER_CLASS usable images
  (one for validation, one for test, three for training); otherwise LabelError names the classes;
- split (own labels): per class, a seeded shuffle, then round(n * val_fraction) (at least 1) for
  validation, round(n * test_fraction) (at least 1) for test, the rest for training;
- heads: linear and MLP, the MLP kept only when it beats the linear head on validation accuracy
  by more than mlp_margin (choose_head);
- calibration: temperature scaling fitted on the validation split (minimum NLL) and baked into
  the last Dense layer (kernel / T, bias / T), so the artifact itself outputs calibrated softmax;
- min_score: see recommend_min_score; evaluated on validation, reported on test.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.artifact import save_keras_artifact
from model.efficientnet_lite import HEAD_CHANNELS

MIN_EXAMPLES_PER_CLASS = 5
ECE_BINS = 15
# Per head kind: layer and optimiser settings. The MLP overfits within 2 epochs at 1e-3; at
# 1e-4 with dropout 0.6 it gained ~1 point of validation accuracy over the linear head (50k items).
HEAD_SETTINGS = {
    "linear": {"learning_rate": 1e-3},
    "mlp": {"hidden": 2048, "dropout": 0.6, "learning_rate": 1e-4},
}
log = logging.getLogger(__name__)


class LabelError(ValueError):
    """The labelled images cannot train a head (too few per class, one class...); the message says why."""


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def stratified_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` positions of labels, each class in proportion (to within one), random within it.

    Any smaller count gives a prefix of the same order, so subsets are nested.
    """
    if not 0 <= count <= len(labels):
        raise ValueError(f"cannot take {count} of {len(labels)} items")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    rank = np.empty(len(labels))
    for c in np.unique(labels):
        members = shuffled[labels[shuffled] == c]
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = np.lexsort((rng.random(len(labels)), rank))
    return order[:count]


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train positions, validation positions) of labels, both sorted."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    val = np.sort(stratified_subset(labels, round(len(labels) * val_fraction), seed))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def build_head(
    kind: str,
    train_x: np.ndarray,
    num_classes: int,
    *,
    hidden: int = 2048,
    dropout: float = 0.6,
    name: str = "head",
    min_std_share: float = 0.1,
    clip: float | None = None,
):
    """float32 (N, 1280) embedding -> softmax (N, num_classes); the last layer is Dense "probabilities".

    Standardisation (per-feature mean/variance of the training embeddings) is a layer of the
    head, so the job feeds the embedding as it is (raw or L2-normalised, whichever the head was
    trained on: artifact meta input_normalisation) and the artifact carries its own statistics.
    A feature (nearly) constant in training, as some are in a few hundred images, is divided by
    at least min_std_share of the median feature's std: else an unseen value of it, divided by
    ~0, swamps the logits (a 300-image head reached a validation NLL of 73 that way).
    clip: standardised features are clipped to [-clip, clip] (built-in layers only, so the artifact
    loads anywhere): an image unlike every training image, whose features lie many standard
    deviations out, then cannot drive the logits to extremes by itself.
    """
    import keras
    from keras import layers

    if kind not in ("linear", "mlp"):
        raise ValueError(f"head kind must be 'linear' or 'mlp', got {kind!r}")
    inputs = keras.Input((train_x.shape[1],), dtype="float32", name="embedding")
    train_x = np.asarray(train_x, np.float64)
    variance = train_x.var(axis=0)
    floor = (min_std_share * float(np.median(np.sqrt(variance)))) ** 2
    variance = np.maximum(variance, floor)
    mean = train_x.mean(axis=0) - (clip * np.sqrt(variance) if clip else 0.0)  # clip: z + clip, so ReLU can cut at 0
    standardise = layers.Normalization(mean=mean.astype(np.float32), variance=variance.astype(np.float32), name="standardise")
    x = standardise(inputs)
    if clip:
        x = layers.ReLU(max_value=2 * clip, name="clip")(x)  # clip(z + clip, 0, 2 clip)
        x = layers.Rescaling(1.0, offset=-clip, name="centre")(x)  # clip(z, -clip, clip)
    if kind == "mlp":
        x = layers.Dense(hidden, activation="relu", name="hidden")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{name}_{kind}")


def train_head(
    kind: str,
    train_x,
    train_y,
    val_x,
    val_y,
    *,
    num_classes: int,
    seed: int,
    epochs: int = 100,
    batch_size: int = 256,
    patience: int = 6,
    min_delta: float = 0.0,
    learning_rate: float | None = None,
    name: str = "head",
    clip: float | None = None,
):
    """Fit a head with Adam and early stopping on validation loss (best weights kept): training
    stops after `patience` epochs that did not lower it by more than min_delta.

    Layer sizes and the default learning rate come from HEAD_SETTINGS[kind].
    Returns (model, info) where info has the epochs run, the best epoch and the seconds taken.
    """
    import keras

    keras.utils.set_random_seed(seed)
    settings = dict(HEAD_SETTINGS.get(kind, {}))
    learning_rate = learning_rate or settings.pop("learning_rate", 1e-3)
    settings.pop("learning_rate", None)
    model = build_head(kind, train_x, num_classes, name=name, clip=clip, **settings)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,  # XLA compiling costs more than it saves on a model this small
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta, restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(
        train_x,
        train_y,
        validation_data=(val_x, val_y),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[stop],
        verbose=0,
        shuffle=True,
    )
    val_loss = history.history["val_loss"]
    info = {
        "epochs_run": len(val_loss),
        "best_epoch": int(np.argmin(val_loss)) + 1,
        "train_s": round(time.perf_counter() - started, 2),
    }
    return model, info


def predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=1024, verbose=0))


# --------------------------------------------------------------------------------------------
# evaluate and write
# --------------------------------------------------------------------------------------------
def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def evaluate(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Top-1 accuracy, per-class precision/recall/support and the confusion matrix (as lists)."""
    predicted = probabilities.argmax(axis=1)
    counts = confusion_matrix(labels, predicted, len(class_names))
    hits = np.diag(counts)
    per_class = []
    for c, name in enumerate(class_names):
        called, support = counts[:, c].sum(), counts[c].sum()
        per_class.append(
            {
                "class": name,
                "precision": round(float(hits[c] / called), 4) if called else None,
                "recall": round(float(hits[c] / support), 4) if support else None,
                "support": int(support),
            }
        )
    return {
        "accuracy": round(float(hits.sum() / max(1, len(labels))), 4),
        "count": len(labels),
        "per_class": per_class,
        "confusion_matrix": counts.tolist(),
    }


def plot_confusion(counts: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """A row-normalised confusion matrix as PNG, with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(counts)
    share = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_head_artifact(
    model,
    out_dir: Path,
    *,
    name: str,
    class_names: list[str],
    backbone_meta: dict,
    head_kind: str,
    input_normalisation: str = "none",
    extra: dict | None = None,
) -> dict:
    """model.keras + classes.txt + model.json (version: content hash of weights, classes, name).

    backbone_meta: {"name", "version"} of the Keras backbone (a TFLite backbone's converted_from);
    input_normalisation: "none" (raw embedding) or "l2" (the job L2-normalises it for this head).
    """
    if input_normalisation not in ("none", "l2"):
        raise ValueError(f"input_normalisation must be 'none' or 'l2', got {input_normalisation!r}")
    for layer in model.layers:
        if layer.name.startswith("_"):
            raise ValueError(f"layer name {layer.name!r} starts with '_' (Keras 3 SavedModel export refuses it)")
    return save_keras_artifact(
        model,
        out_dir,
        name=name,
        class_names=class_names,
        extra_meta={
            "kind": "head",
            "head": head_kind,
            "input": "embedding",
            "input_dim": HEAD_CHANNELS,
            "input_dtype": "float32",
            "input_normalisation": input_normalisation,
            "output": f"softmax probabilities (N, {len(class_names)})",
            "backbone": backbone_meta["name"],
            "backbone_version": backbone_meta["version"],
            "num_classes": len(class_names),
            **(extra or {}),
        },
    )


def choose_head(val_accuracy: dict[str, float], margin: float) -> str:
    """The linear head unless the MLP beats it on validation by more than margin."""
    if "linear" not in val_accuracy:
        return max(val_accuracy, key=val_accuracy.__getitem__)
    if "mlp" in val_accuracy and val_accuracy["mlp"] - val_accuracy["linear"] > margin:
        return "mlp"
    return "linear"


# --------------------------------------------------------------------------------------------
# own labelled images: class rules and the three-way split
# --------------------------------------------------------------------------------------------
def check_classes(labels: Sequence[str], minimum: int = MIN_EXAMPLES_PER_CLASS) -> list[str]:
    """The sorted class names when the labels can train a head; LabelError naming the problem otherwise.

    Refused: no labels at all, a single class (a classifier needs two), and any class with
    fewer than `minimum` images (each class needs one for validation, one for test and the rest,
    at least one, for training; 5 leaves 3 to learn from).
    """
    if minimum < 3:
        raise ValueError(f"minimum must be at least 3 (train, validation, test), got {minimum}")
    counts = Counter(labels)
    if not counts:
        raise LabelError("no usable labelled images are left (see the dropped counts)")
    if len(counts) == 1:
        ((name, n),) = counts.items()
        raise LabelError(f"only one class, {name!r} ({n} images): a head needs at least two classes")
    small = sorted(c for c, n in counts.items() if n < minimum)
    if small:
        listed = ", ".join(f"{c!r} ({counts[c]})" for c in small)
        raise LabelError(
            f"too few usable images in class {listed}: each class needs at least {minimum} "
            "(one for validation, one for test, the rest for training); add images or remove the class"
        )
    return sorted(counts)


def split_by_class(
    labels: np.ndarray, *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, validation, test) positions of labels, each sorted and disjoint.

    Per class: a seeded shuffle; round(n * val_fraction) (at least 1) to validation,
    round(n * test_fraction) (at least 1) to test, the rest (at least 1) to training.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction}: each in (0, 1), sum below 1")
    rng = np.random.default_rng([seed, 11])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        members = rng.permutation(np.nonzero(labels == c)[0])
        n_val = max(1, round(len(members) * val_fraction))
        n_test = max(1, round(len(members) * test_fraction))
        if len(members) - n_val - n_test < 1:
            raise LabelError(f"class {c} has {len(members)} images: too few to split into train, validation and test")
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    train, val, test = (np.sort(np.concatenate(parts[k])) for k in ("train", "val", "test"))
    return train, val, test


# --------------------------------------------------------------------------------------------
# calibration: temperature scaling, expected calibration error, a score floor
# --------------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def head_logits(model, x: np.ndarray) -> np.ndarray:
    """The pre-softmax outputs (float64) of a head whose last layer is Dense "probabilities" (build_head)."""
    import keras

    final = model.get_layer("probabilities")
    features = keras.Model(model.inputs, final.input)
    kernel, bias = final.get_weights()
    return np.asarray(features.predict(x, batch_size=1024, verbose=0), np.float64) @ kernel + bias


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    z = np.asarray(logits, np.float64) / temperature
    z_max = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in bounds minimising the validation NLL of softmax(logits / T).

    The NLL is convex in 1/T, so a golden-section search over log T finds the minimum. When
    every prediction is right the NLL keeps falling as T -> 0 (no evidence of over- or
    under-confidence, only of a small, separable validation set): T stays 1 then.
    """
    labels = np.asarray(labels)
    if len(labels) == 0 or (np.asarray(logits).argmax(axis=1) == labels).all():
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 confidence: sum over equal-width bins of share * |accuracy - mean confidence|."""
    probabilities = np.asarray(probabilities, np.float64)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in np.unique(which):
        members = which == b
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def bake_temperature(model, temperature: float):
    """Divide the last Dense layer's kernel and bias by T: the model then outputs softmax(logits / T)."""
    final = model.get_layer("probabilities")
    kernel, bias = final.get_weights()
    final.set_weights([kernel / temperature, bias / temperature])
    return model


def recommend_min_score(
    probabilities: np.ndarray, labels: np.ndarray, *, precision: float = 0.9, keep_correct: float = 0.95
) -> float | None:
    """A score floor from the validation split: the larger of two thresholds, rounded down to 4 decimals.

    1. the smallest top-1 score t such that the predictions scoring >= t are at least `precision`
       correct (0 when all of them together already are);
    2. the score that `keep_correct` of the correct predictions reach (their 5th percentile for
       0.95): an accurate head still gets a floor that in-domain images clear and that
       out-of-domain images, which score lower, may not.
    None when no threshold reaches the precision.
    """
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    if not len(confidence):
        return None
    order = np.argsort(-confidence, kind="stable")
    ranked, hits = confidence[order], correct[order]
    kept_precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    # A threshold at ranked[i] keeps every score >= ranked[i]: the tie group's last position.
    last = np.searchsorted(-ranked, -ranked, side="right") - 1
    meets = kept_precision[last] >= precision
    if not meets.any():
        return None
    precision_floor = 0.0 if meets[-1] else float(ranked[np.nonzero(meets)[0].max()])
    correct_scores = np.sort(confidence[correct])
    keep_floor = 0.0
    if len(correct_scores):
        keep_floor = float(correct_scores[math.floor((1 - keep_correct) * len(correct_scores) + 1e-9)])
    return math.floor(max(precision_floor, keep_floor) * 1e4) / 1e4


def floor_effect(probabilities: np.ndarray, labels: np.ndarray, min_score: float | None) -> dict:
    """What a floor does: the share of predictions kept (score >= min_score) and their precision."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    kept = confidence >= (min_score or 0.0)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    return {
        "count": len(confidence),
        "kept": int(kept.sum()),
        "kept_share": round(float(kept.mean()), 4) if len(kept) else None,
        "kept_precision": round(float(correct[kept].mean()), 4) if kept.any() else None,
    }


def out_of_domain_report(probabilities: dict[str, np.ndarray], class_names: list[str], min_score: float | None) -> dict:
    """Per out-of-domain image its top label and score; how many of them clear min_score."""
    per_image = []
    for image, p in probabilities.items():
        best = int(np.argmax(p))
        score = float(p[best])
        per_image.append(
            {"image": image, "label": class_names[best], "score": round(score, 4), "above_min_score": score >= (min_score or 0.0)}
        )
    return {
        "images": len(per_image),
        "labelled_above_min_score": sum(r["above_min_score"] for r in per_image),
        "min_score": min_score,
        "per_image": per_image,
    }


# --------------------------------------------------------------------------------------------
# one head, end to end: labelled embeddings in, calibrated model + the one report shape out
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How a head is trained and scored; the same steps for every head, whatever its images."""

    kinds: tuple[str, ...] = ("linear", "mlp")
    epochs: int = 200  # at most: early stopping on validation loss
    min_delta: float = 1e-3
    clip: float | None = 5.0  # standardised features clipped to +-clip (build_head)
    mlp_margin: float = 0.005
    target_precision: float = 0.9  # what recommended_min_score keeps on validation
    keep_correct: float = 0.95
    seed: int = 7


@dataclass
class LabelledEmbeddings:
    """What a source of labelled images hands the trainer: embeddings, class indices and the split.

    x: (N, 1280) embeddings as the head will receive them (raw or L2-normalised: input_normalisation);
    train, val, test: disjoint positions into x; other_tests: more test sets scored the same way
    (name -> (embeddings, class indices)), e.g. the same test items in another render.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    split_rule: str
    input_normalisation: str
    other_tests: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class TrainedHead:
    """The chosen, calibrated head and what the evaluation says about it."""

    model: object
    kind: str
    class_names: list[str]
    record: dict = field(default_factory=dict)
    test_confusion: np.ndarray | None = None


def training_batch_size(train_count: int) -> int:
    """32 for small sets (a few hundred images: enough steps per epoch to learn), 256 from 10,000 up."""
    return 32 if train_count < 10_000 else 256


def labelled_embeddings(
    x: np.ndarray, labels: Sequence[str], *, val_fraction: float, test_fraction: float, min_per_class: int, seed: int
) -> LabelledEmbeddings:
    """Own labelled images: refuse what cannot train a head (check_classes), then split per class (split_by_class)."""
    class_names = check_classes(labels, min_per_class)
    index = {c: i for i, c in enumerate(class_names)}
    y = np.array([index[label] for label in labels], np.int64)
    train, val, test = split_by_class(y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    rule = (
        f"per class, seeded: round(n*{val_fraction}) (>=1) validation, round(n*{test_fraction}) (>=1) test, "
        f"the rest training; every class needs >= {min_per_class} usable images"
    )
    return LabelledEmbeddings(np.asarray(x, np.float32), y, class_names, train, val, test, rule, "l2")


def calibration_numbers(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """ECE and NLL of softmax(logits) before and after dividing by the temperature."""
    return {
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 4),
        "ece_after": round(expected_calibration_error(softmax(logits / temperature), labels), 4),
        "nll_before": round(nll(logits, labels), 4),
        "nll_after": round(nll(logits, labels, temperature), 4),
    }


def fit_head(
    data: LabelledEmbeddings, *, name: str, recipe: Recipe, out_of_domain: dict[str, np.ndarray] | None = None
) -> TrainedHead:
    """Train every kind, choose on validation, calibrate (T baked in), evaluate on test and the other tests.

    out_of_domain: image name -> embedding of images that belong to no class.
    """
    started = time.perf_counter()
    x, y, class_names = data.x, data.y, data.class_names
    train, val, test = data.train, data.val, data.test
    batch_size = training_batch_size(len(train))

    heads, candidates = {}, {}
    for kind in recipe.kinds:
        heads[kind], info = train_head(
            kind,
            x[train],
            y[train],
            x[val],
            y[val],
            num_classes=len(class_names),
            seed=recipe.seed,
            epochs=recipe.epochs,
            min_delta=recipe.min_delta,
            batch_size=batch_size,
            name=name,
            clip=recipe.clip,
        )
        val_accuracy = evaluate(predict(heads[kind], x[val]), y[val], class_names)["accuracy"]
        candidates[kind] = {"validation_accuracy": val_accuracy, **info}
        log.info("%s head: %s", kind, candidates[kind])
    chosen = choose_head({k: c["validation_accuracy"] for k, c in candidates.items()}, recipe.mlp_margin)
    model = heads[chosen]

    tests = {"test": (x[test], y[test]), **data.other_tests}
    val_logits = head_logits(model, x[val])
    test_logits = {split: head_logits(model, tx) for split, (tx, _) in tests.items()}
    temperature = fit_temperature(val_logits, y[val])
    calibration = {
        "method": "temperature scaling: T minimises the validation NLL, baked into the last Dense layer (kernel/T, bias/T)",
        "temperature": round(temperature, 4),
        "ece_bins": ECE_BINS,
        "note": None if temperature != 1.0 else "every validation prediction is right: no evidence to calibrate, T = 1",
        "validation": calibration_numbers(val_logits, y[val], temperature),
        **{split: calibration_numbers(test_logits[split], ty, temperature) for split, (_, ty) in tests.items()},
    }
    bake_temperature(model, temperature)

    val_probabilities = predict(model, x[val])
    test_probabilities = {split: predict(model, tx) for split, (tx, _) in tests.items()}
    scored = {split: evaluate(test_probabilities[split], ty, class_names) for split, (_, ty) in tests.items()}
    test_record = scored.pop("test")
    min_score = recommend_min_score(
        val_probabilities, y[val], precision=recipe.target_precision, keep_correct=recipe.keep_correct
    )
    if min_score is None:
        log.warning("no score floor reaches %.2f validation precision: recommended_min_score is null", recipe.target_precision)
    ood = None
    if out_of_domain:
        names = list(out_of_domain)
        scores = predict(model, np.stack([out_of_domain[n] for n in names]).astype(np.float32))
        ood = out_of_domain_report(dict(zip(names, scores, strict=True)), class_names, min_score)

    def class_counts(positions: np.ndarray) -> dict[str, int]:
        return {c: int((y[positions] == i).sum()) for i, c in enumerate(class_names)}

    record = {
        "head_type": chosen,
        "head_choice": f"linear unless the MLP beats it on validation accuracy by more than {recipe.mlp_margin}",
        "candidates": candidates,
        "classes": class_names,
        "split": {
            "rule": data.split_rule,
            "train": len(train),
            "validation": len(val),
            "test": len(test),
            "per_class": {"train": class_counts(train), "validation": class_counts(val), "test": class_counts(test)},
            "seed": recipe.seed,
            "batch_size": batch_size,
        },
        "test_accuracy": test_record["accuracy"],
        "validation_accuracy": evaluate(val_probabilities, y[val], class_names)["accuracy"],
        "test": test_record,
        "other_tests": {split: {k: r[k] for k in ("accuracy", "count", "per_class")} for split, r in scored.items()},
        "calibration": calibration,
        "recommended_min_score": min_score,
        "min_score_rule": (
            f"the larger of: the smallest top-1 score at which the kept validation predictions are >= "
            f"{recipe.target_precision:.0%} correct, and the score {recipe.keep_correct:.0%} of the correct validation "
            "predictions reach; rounded down; a profile's min_score leaves the label null below it"
        ),
        "min_score_effect": {
            "validation": floor_effect(val_probabilities, y[val], min_score),
            "test": floor_effect(test_probabilities["test"], y[test], min_score),
            **{split: floor_effect(test_probabilities[split], ty, min_score) for split, (_, ty) in data.other_tests.items()},
        },
        "out_of_domain": ood,
        "train_s": round(time.perf_counter() - started, 1),
    }
    return TrainedHead(model, chosen, class_names, record, np.array(test_record["confusion_matrix"]))


def profile_entry(name: str, uri: str, min_score: float | None) -> str:
    floor = f", min_score: {min_score}" if min_score is not None else ""
    return f"model.heads: [{{name: {name}, uri: {uri}{floor}}}]"


def write_head(
    head: TrainedHead,
    *,
    name: str,
    input_normalisation: str,
    backbone: dict,
    artifacts: Path,
    reports: Path,
    about: dict,
    target: float | None = None,
) -> dict:
    """The one output of head training: ARTIFACTS/NAME (Keras) + NAME_tflite, REPORTS/NAME/evaluation.json + PNG.

    about: what the source says of its images (labels, counts, how they were embedded, checks),
    placed in the report after the artifact keys. target: the test accuracy the head needs to be
    written at all (None: any); below it the report says so and no artifact is touched.
    Returns the record (its "passed" key: the target was met).
    """
    from model.convert import convert

    trained = dict(head.record)
    accuracy = trained.pop("test_accuracy")
    passed = target is None or accuracy >= target
    keras_dir, tflite_dir = artifacts / name, artifacts / f"{name}_tflite"
    meta = tflite_meta = None
    if passed:
        meta = write_head_artifact(
            head.model,
            keras_dir,
            name=name,
            class_names=head.class_names,
            backbone_meta=backbone,
            head_kind=head.kind,
            input_normalisation=input_normalisation,
            extra={
                "trained_on": f"{about['labels']}: {trained['split']['train']} images (tools/train_head.py)",
                "test_accuracy": accuracy,
                "temperature": trained["calibration"]["temperature"],
                "recommended_min_score": trained["recommended_min_score"],
            },
        )
        tflite_meta = convert(keras_dir, tflite_dir)
    record = {
        "head": name,
        "head_version": meta and meta["version"],
        "artifact": str(keras_dir) if passed else None,
        "tflite_artifact": str(tflite_dir) if passed else None,
        "tflite_version": tflite_meta and tflite_meta["version"],
        "profile_entry": profile_entry(name, str(tflite_dir), trained["recommended_min_score"]) if passed else None,
        "test_accuracy": accuracy,
        "target_test_accuracy": target,
        "passed": passed,
        "input_normalisation": input_normalisation,
        "backbone": backbone["name"],
        "backbone_version": backbone["version"],
        **about,
        **trained,
    }
    plot_confusion(
        head.test_confusion,
        head.class_names,
        reports / name / "confusion_matrix.png",
        f"{name} ({head.kind}), {trained['split']['test']} test images: top-1 {accuracy:.2%}",
    )
    (reports / name / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
