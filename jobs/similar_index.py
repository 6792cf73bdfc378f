"""The index a full similar run leaves for `--incremental`: its centroids and what made them.

A full run of jobs/similar_images.py writes OUTPUT/_image_tagger/similar/index/ (Parquet, one row per
cell: the centroid, the backbone's name and version, the similar.* settings as JSON) after its two
datasets, and deletes it before it replaces them: present, the index says that neighbours/ and
duplicates/ beside it are one whole answer. An `--incremental` run searches the new images with these
centroids, so a cell holds the same vectors as in the run that made the kept lists, and it is refused
(exit 2, `reuse_problem`) when there is no index or it was made by another backbone or other settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import SimilarSettings
from jobs.current import CurrentModels
from jobs.ledger import STATE_DIR

INDEX_PATH = f"{STATE_DIR}/similar/index"  # under the similar job's --output
INDEX_COLUMNS = "cell int, centroid array<float>, model_name string, model_version string, settings string"
SPEED_ONLY = ("block_size",)  # settings that change how fast the search runs, never what it finds


@dataclass(frozen=True)
class SimilarIndex:
    model_name: str
    model_version: str
    settings: dict  # index_settings() of the full run that learned the centroids
    centroids: np.ndarray  # cells x d, unit rows (float32)


def index_settings(settings: SimilarSettings) -> dict:
    """The similar.* settings that decide what a run finds (all but SPEED_ONLY), as stored in the index."""
    return {key: value for key, value in dataclasses.asdict(settings).items() if key not in SPEED_ONLY}


def reuse_problem(index: SimilarIndex | None, models: CurrentModels, settings: SimilarSettings, output: str) -> str | None:
    """Why an --incremental run cannot build on `index` (None: it can). Each message says to run without --incremental."""
    full_run = "run without --incremental: a full run searches every image and writes a new index"
    if index is None:
        return f"--incremental: {output} holds no index of a finished full similar run ({INDEX_PATH}/); {full_run}"
    if (index.model_name, index.model_version) != (models.backbone_name, models.backbone_version):
        return (
            f"--incremental: {output}'s index compares {index.model_name} {index.model_version} embeddings and this "
            f"profile's backbone is {models.backbone_name} {models.backbone_version}; {full_run}"
        )
    changed = [
        f"similar.{key}={value!r} (the full run's: {index.settings.get(key)!r})"
        for key, value in index_settings(settings).items()
        if index.settings.get(key) != value
    ]
    if changed:
        return (
            f"--incremental: {', '.join(changed)}: the kept lists, groups and centroids were made with the full run's "
            f"settings; set them back, or {full_run}"
        )
    return None


def index_frame(spark: SparkSession, index: SimilarIndex) -> DataFrame:
    settings = json.dumps(index.settings, sort_keys=True)
    rows = [
        (cell, [float(x) for x in centroid], index.model_name, index.model_version, settings)
        for cell, centroid in enumerate(index.centroids)
    ]
    return spark.createDataFrame(rows, INDEX_COLUMNS).coalesce(1)


def read_index(spark: SparkSession, output: str) -> SimilarIndex | None:
    """The index under --output, or None when there is none (no full run finished there)."""
    from jobs.ledger import OutputStore

    uri = f"{output.rstrip('/')}/{INDEX_PATH}"
    if not OutputStore(spark, uri).has_data():
        return None
    rows = spark.read.parquet(uri).orderBy("cell").collect()
    if not rows or [row["cell"] for row in rows] != list(range(len(rows))):
        return None  # not one whole index: treated as none
    return SimilarIndex(
        model_name=rows[0]["model_name"],
        model_version=rows[0]["model_version"],
        settings=json.loads(rows[0]["settings"]),
        centroids=np.array([row["centroid"] for row in rows], dtype=np.float32),
    )


def kept_floors(earlier: DataFrame, k: int) -> DataFrame:
    """The last run's lists -> (image_id, floor): the score a new image must reach to enter that image's
    top k (its k-th score; -inf when its list is shorter than k)."""
    kth = F.element_at("neighbours", k)["score"]
    floor = F.when(F.size("neighbours") >= k, kth).otherwise(F.lit(float("-inf")))
    return earlier.select("image_id", floor.cast("float").alias("floor"))
