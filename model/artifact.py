"""Versioned model artifacts: a directory (local or S3) with model.json, the model, classes.

model.json records the name and a content hash (the version), so every output row can say
exactly which weights tagged it. The job reads the artifact's bytes on the driver,
broadcasts them, and each Python worker builds the model once from those bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

MANIFEST_FILE = "model.json"


class ArtifactError(ValueError):
    """A model artifact is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelArtifact:
    """Everything a worker needs to build the model, as plain bytes (cheap to broadcast)."""

    meta: dict
    files: dict[str, bytes] = field(repr=False)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def class_names(self) -> list[str]:
        return self.files[self.meta["classes_file"]].decode("utf-8").splitlines()


def content_version(weights: list[np.ndarray], class_names: list[str], name: str) -> str:
    """A stable hash of what determines the model's answers: weights, classes, name."""
    digest = hashlib.sha256(name.encode())
    for array in weights:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=array.dtype).tobytes())
    digest.update("\n".join(class_names).encode())
    return digest.hexdigest()[:12]


def _write_artifact(out_dir: Path, *, fmt: str, version: str, name: str, class_names: list[str], extra_meta: dict) -> dict:
    """classes.txt and model.json beside a model file named model.<fmt>; returns the metadata."""
    (out_dir / "classes.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
    meta = {
        "name": name,
        "version": version,
        "format": fmt,
        "model_file": f"model.{fmt}",
        "classes_file": "classes.txt",
        **extra_meta,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def save_keras_artifact(model, out_dir: Path, *, name: str, class_names: list[str], extra_meta: dict) -> dict:
    """Write model.keras, classes.txt and model.json into out_dir; return the metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    version = content_version(model.get_weights(), class_names, name)
    return _write_artifact(out_dir, fmt="keras", version=version, name=name, class_names=class_names, extra_meta=extra_meta)


def save_tflite_artifact(
    tflite: bytes, weights: list[np.ndarray], out_dir: Path, *, name: str, class_names: list[str], extra_meta: dict
) -> dict:
    """Write model.tflite, classes.txt and model.json; the version also covers the format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(tflite)
    version = content_version(weights, class_names, f"{name}:tflite")
    return _write_artifact(out_dir, fmt="tflite", version=version, name=name, class_names=class_names, extra_meta=extra_meta)


def _read_local(root: str, name: str) -> bytes:
    path = Path(root) / name
    if not path.is_file():
        raise ArtifactError(f"model artifact file not found: {path} (run `make model`?)")
    return path.read_bytes()


def _default_s3_client():
    import boto3  # honours AWS_ENDPOINT_URL and the usual credentials

    return boto3.client("s3")


def _s3_reader(s3_client: Callable[[], Any]) -> Callable[[str, str], bytes]:
    client = functools.cache(s3_client)  # one client for the artifact's files, made on first read

    def read(root: str, name: str) -> bytes:
        parsed = urlparse(root.rstrip("/") + "/" + name)
        try:
            response = client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except Exception as exc:  # botocore raises many shapes; all mean "cannot read it"
            raise ArtifactError(f"cannot read model artifact file {parsed.geturl()}: {exc}") from exc
        return response["Body"].read()

    return read


def load_artifact(uri: str, *, s3_client: Callable[[], Any] | None = None) -> ModelArtifact:
    """Read a model artifact from a local directory or an s3:// prefix.

    s3_client: makes the S3 client that reads an s3:// artifact (anything with boto3's
    get_object). The job passes its own (jobs.fetch.s3_client: its timeouts and pool); without
    one, a plain boto3 client.
    """
    reader = _s3_reader(s3_client or _default_s3_client) if uri.startswith("s3://") else _read_local
    root = uri[len("file://") :] if uri.startswith("file://") else uri
    meta = json.loads(reader(root, MANIFEST_FILE))
    for key in ("name", "version", "format", "model_file", "classes_file"):
        if key not in meta:
            raise ArtifactError(f"{uri}/{MANIFEST_FILE} lacks the key {key!r}")
    names = {meta["model_file"], meta["classes_file"]}
    artifact = ModelArtifact(meta, {n: reader(root, n) for n in names})
    if len(artifact.class_names) != meta.get("num_classes", len(artifact.class_names)):
        raise ArtifactError(f"{uri}: classes file has {len(artifact.class_names)} names, expected {meta['num_classes']}")
    return artifact
