"""Inference stage: a batch of uint8 images -> top-k tags, head labels, embeddings per image.

The backbone runs once per image; heads (small classifiers trained on the backbone's
embedding, e.g. product categories) run on its output, so extra models cost almost nothing.
`Tagger` wraps any model callable, `model(batch) -> {"probabilities", "embedding"}` (a
model.runtime.ModelFn), so it tests with a fake model. `tagger_for_worker` builds the real
one from broadcast artifacts (model/runtime.py: Keras or LiteRT) once per Python worker
process and reuses it for every batch and task that worker runs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

from jobs.fetch import s3_client
from model.artifact import ArtifactError, ModelArtifact, load_artifact
from model.runtime import ModelFn, build_model_runner, require_runtime


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first."""
    k = min(k, probabilities.shape[1])
    part = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(probabilities, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class ModelBundle:
    """The backbone and its heads, as bytes: what the driver broadcasts to the workers.

    heads: (output column name, artifact) pairs; min_scores: each head's floor, in the same order
    (None: no floor), below which its label is left null and only the score is kept.
    """

    backbone: ModelArtifact
    heads: tuple[tuple[str, ModelArtifact], ...] = ()
    min_scores: tuple[float | None, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.backbone.version, *((name, head.version) for name, head in self.heads), self.min_scores)

    def versions(self) -> dict[str, str]:
        """Every model's name -> version, recorded on each output row."""
        return {self.backbone.name: self.backbone.version, **{head.name: head.version for _, head in self.heads}}

    def min_score(self, index: int) -> float | None:
        return self.min_scores[index] if index < len(self.min_scores) else None


def load_bundle(uri: str, heads: list[dict]) -> ModelBundle:
    """Read the backbone and each head (driver side); a head must match the backbone's weights."""
    backbone = load_artifact(uri, s3_client=s3_client)
    require_runtime(backbone)  # a Keras model on a LiteRT-only node: exit 2 now, not in every task
    loaded = []
    for head in heads:
        artifact = load_artifact(head["uri"], s3_client=s3_client)
        require_runtime(artifact)
        if artifact.meta.get("kind") != "head":
            raise ArtifactError(f"model.heads {head['name']}: {head['uri']} is not a head artifact (kind != head)")
        compatible = {backbone.version, backbone.meta.get("converted_from")}
        if artifact.meta.get("backbone_version") not in compatible:
            raise ArtifactError(
                f"model.heads {head['name']}: trained on backbone {artifact.meta.get('backbone')} "
                f"{artifact.meta.get('backbone_version')}, but the profile's backbone is {backbone.name} {backbone.version}"
            )
        loaded.append((head["name"], artifact))
    return ModelBundle(backbone, tuple(loaded), tuple(head.get("min_score") for head in heads))


@dataclass
class Head:
    """A classifier on the backbone's embedding; adds columns <name> and <name>_score."""

    name: str
    model: ModelFn
    class_names: list[str]
    l2_input: bool = False  # trained on the L2-normalised embedding (else on the raw one)
    min_score: float | None = None  # below it the label is null; the score is kept
    batch_size: int = 32  # rows per call of `model` (a runtime compiled for this batch size)

    def top1(self, raw: np.ndarray | None, unit: np.ndarray | None) -> list[tuple[str | None, float]]:
        """(label, probability) of the best class per row; the label is None under min_score."""
        inputs = unit if self.l2_input else raw
        probabilities = np.concatenate(
            [
                np.asarray(self.model(inputs[start : start + self.batch_size])["probabilities"])
                for start in range(0, len(inputs), self.batch_size)
            ]
        )
        best = probabilities.argmax(axis=1)
        floor = self.min_score if self.min_score is not None else -1.0
        return [(self.class_names[b] if p[b] >= floor else None, float(p[b])) for b, p in zip(best, probabilities, strict=True)]


@dataclass
class Prediction:
    tags: list[tuple[str, float]]
    embedding: list[float] | None = None
    embedding_norm: float | None = None  # raw = embedding * norm: heads on raw embeddings need it later
    heads: list[tuple[str | None, float]] = field(default_factory=list)  # top-1 per head, in profile order


@dataclass
class Tagger:
    """Turns image batches into predictions: backbone once, then every head on its embedding."""

    model: ModelFn
    class_names: list[str]
    top_k: int
    batch_size: int
    heads: list[Head] = field(default_factory=list)
    embedding: bool = False

    def tag(self, images: np.ndarray) -> list[Prediction]:
        """images: uint8 (N, H, W, 3) -> one Prediction per image, tags best first."""
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            outputs = self.model(images[start : start + self.batch_size])
            indices, scores = top_k(np.asarray(outputs["probabilities"]), self.top_k)
            tags = [
                [(self.class_names[i], float(s)) for i, s in zip(row_i, row_s, strict=True)]
                for row_i, row_s in zip(indices, scores, strict=True)
            ]
            raw = np.asarray(outputs["embedding"], dtype=np.float32) if (self.heads or self.embedding) else None
            needs_unit = self.embedding or any(head.l2_input for head in self.heads)
            unit = l2_normalise(raw) if needs_unit else None
            norms = np.linalg.norm(raw, axis=1) if self.embedding else None
            head_top = [head.top1(raw, unit) for head in self.heads]
            for row in range(len(tags)):
                results.append(
                    Prediction(
                        tags=tags[row],
                        embedding=unit[row].tolist() if self.embedding else None,
                        embedding_norm=float(norms[row]) if self.embedding else None,
                        heads=[per_head[row] for per_head in head_top],
                    )
                )
        return results


def heads_on_stored(heads: list[Head], unit: np.ndarray, norms: np.ndarray, needed: list[set[str]]) -> list[dict]:
    """Heads from stored embeddings, no image: per row, {head name: (label, score)} of the heads it needs.

    unit: (N, D) L2-normalised embeddings as the output stores them; norms: (N,) their raw norms
    (raw = unit x norm, for heads trained on the raw embedding).
    """
    results: list[dict] = [{} for _ in range(len(unit))]
    for head in heads:
        rows = [i for i, wanted in enumerate(needed) if head.name in wanted]
        if not rows:
            continue
        picked = unit[rows]
        raw = None if head.l2_input else picked * norms[rows, None]
        for row, answer in zip(rows, head.top1(raw, picked), strict=True):
            results[row][head.name] = answer
    return results


_WORKER_TAGGERS: dict[tuple, Tagger | list[Head]] = {}
_WORKER_LOCK = threading.Lock()


def takes_unit_embedding(head: ModelArtifact) -> bool:
    return head.meta.get("input_normalisation") == "l2"


def _build_heads(models: ModelBundle, batch_size: int, threads: int) -> list[Head]:
    return [
        Head(
            name,
            build_model_runner(head, batch_size, threads),
            head.class_names,
            takes_unit_embedding(head),
            models.min_score(i),
            batch_size,
        )
        for i, (name, head) in enumerate(models.heads)
    ]


def tagger_for_worker(models: ModelBundle, *, top_k: int, batch_size: int, threads: int, embedding: bool = False) -> Tagger:
    """The worker's Tagger for these model versions, built on first use (once per process)."""
    key = (models.key, top_k, batch_size, embedding, os.getpid())
    with _WORKER_LOCK:
        if key not in _WORKER_TAGGERS:
            backbone = models.backbone
            _WORKER_TAGGERS[key] = Tagger(
                build_model_runner(backbone, batch_size, threads),
                backbone.class_names,
                top_k,
                batch_size,
                _build_heads(models, batch_size, threads),
                embedding,
            )
        return _WORKER_TAGGERS[key]


def heads_for_worker(models: ModelBundle, *, batch_size: int, threads: int) -> list[Head]:
    """The worker's heads alone (no backbone): for rows whose embedding the output already holds."""
    key = ("heads", models.key, batch_size, os.getpid())
    with _WORKER_LOCK:
        if key not in _WORKER_TAGGERS:
            _WORKER_TAGGERS[key] = _build_heads(models, batch_size, threads)
        return _WORKER_TAGGERS[key]


def worker_model_loads() -> int:
    """How many model sets this process has built (tests prove 'once per worker' with it)."""
    return len(_WORKER_TAGGERS)
