"""Similar images and near-duplicates from the embeddings the tagging job stored.

    spark-submit jobs/similar_images.py --tags URI --output URI [--profile P] [--set key=value ...]

Reads the tagging job's output (the ledger) down to each image's current embedding, as jobs.current
does (the latest ok full row of the profile's backbone version), and writes two Parquet datasets:
- OUTPUT/neighbours/: per image its top `similar.k` by cosine, best first, never itself;
- OUTPUT/duplicates/: per image that has a near-copy (cosine >= `similar.duplicate_threshold`) its
  group (a connected component of such pairs, jobs.similar_graph) and its best score in the group.
Search is an inverted file (jobs.similar): centroids learned on a sample on the driver, each image
stored in its nearest cell and searched in its `similar.nprobe` nearest, cells searched exactly in
parallel (applyInPandas), candidates merged into each image's top k. docs/similar.md says more.
Columns: jobs/schema.py's NEIGHBOURS_SCHEMA and DUPLICATES_SCHEMA. Exit 2: bad input, named.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import ConfigError, SimilarSettings, add_overrides_argument, load_settings
from jobs.current import CurrentModels, CurrentViewError, current_view, overlaps, read_ledger, session_conf
from jobs.exits import EXIT_BAD_INPUT, exit_status, output_busy
from jobs.schema import DUPLICATES_SCHEMA, NEIGHBOURS_SCHEMA
from jobs.similar import default_cells, kmeans, nearest_cells, search, unit_rows
from jobs.similar_graph import connected_components
from model.artifact import ArtifactError

log = logging.getLogger("image_tagger.similar")
NAMES_SHOWN = 5  # image ids the summary names per reason for leaving images out
CANDIDATES = "image_id string, neighbour_id string, score float"


class SimilarInputError(ValueError):
    """The tags output cannot answer the question asked: the message names what is missing and the fix."""


@dataclass
class Summary:
    """What the job prints: images searched, left out (count and a few ids per reason), groups, timings."""

    searched: int = 0
    left_out: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    cells: int = 0
    nprobe: int = 0
    groups: int = 0
    duplicate_images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def render(self, models: CurrentModels, output: str) -> str:
        lines = [f"similar images for {models.backbone_name} {models.backbone_version} -> {output}"]
        lines.append(f"{self.searched} images searched ({self.cells} cells, nprobe {self.nprobe})")
        for reason, (count, names) in sorted(self.left_out.items()):
            more = ", ..." if count > len(names) else ""
            lines.append(f"left out, {reason}: {count} ({', '.join(names)}{more})")
        if not self.left_out:
            lines.append("left out: none")
        lines.append(f"{self.groups} duplicate groups, {self.duplicate_images} images in them")
        lines.append("time: " + ", ".join(f"{stage} {s:.1f}s" for stage, s in self.seconds.items()))
        return "\n".join(lines)


class _Stopwatch:
    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    def stage(self, name: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def searchable_models(models: CurrentModels) -> CurrentModels:
    """The view with the embedding column whatever the profile says (this job compares embeddings)."""
    return CurrentModels(models.backbone_name, models.backbone_version, models.heads, embedding=True)


def check_input(ledger: DataFrame, models: CurrentModels, within: str) -> None:
    """Exit-2 cases, before any search: no embeddings, no row of this backbone, no such `within` column."""
    if "embedding" not in ledger.columns:
        raise SimilarInputError(
            "the tags output has no embedding column: it was tagged with model.embedding=false. "
            "Add the embeddings with an --incremental run of the tagging job with --set model.embedding=true"
        )
    if ledger.where(F.col("model_version") == models.backbone_version).limit(1).count() == 0:
        found = [row[0] for row in ledger.select("model_version").distinct().limit(10).collect()]
        raise SimilarInputError(
            f"no row of the tags output has the profile's backbone version {models.backbone_version} "
            f"({models.backbone_name}); it holds {', '.join(sorted(found)) or 'no rows'}. Use the profile that tagged "
            "it (--profile, --set model.uri=...), or tag the images with this backbone (an --incremental run)"
        )
    if within and within not in current_view(ledger.limit(0), models).columns:
        hint = "it is a head not in this profile: add it to model.heads" if within in ledger.columns else "no such column"
        raise SimilarInputError(
            f"similar.within={within}: {hint}; the tags output's columns: {', '.join(sorted(ledger.columns))}. "
            "Set --set similar.within=COLUMN or --set similar.within=''"
        )


def _squared_norm(embedding: Column) -> Column:
    return F.aggregate(embedding, F.lit(0.0).cast("double"), lambda total, x: total + x * x)


def classify(view: DataFrame, within: str) -> DataFrame:
    """The view -> (image_id, key, embedding, left_out): left_out names why an image is not searched
    (null: searched); key: the `within` column's value ('' without one)."""
    embedding = F.col("embedding")
    key = F.col(within).cast("string") if within else F.lit("")
    reason = (
        F.when(F.col("status") == "error", "tagging failed (status error)")
        .when(F.col("status") == "outdated", "tagged by another backbone (status outdated: run the tagger with --incremental)")
        .when(embedding.isNull(), "no embedding (tagged with model.embedding=false)")
        .when(F.size(embedding) == 0, "empty embedding")
        .when(~(_squared_norm(embedding) > 0), "zero-norm embedding")
    )
    if within:
        reason = reason.when(key.isNull(), f"no {within} value")
    return view.select("image_id", key.alias("key"), embedding.alias("embedding"), reason.alias("left_out"))


def left_out_summary(classified: DataFrame) -> dict[str, tuple[int, list[str]]]:
    """reason -> (images, the first few image ids)."""
    out = classified.where(F.col("left_out").isNotNull())
    counts = {row["left_out"]: row["count"] for row in out.groupBy("left_out").count().collect()}
    return {
        reason: (
            count,
            [
                r[0]
                for r in out.where(F.col("left_out") == reason)
                .select("image_id")
                .orderBy("image_id")
                .limit(NAMES_SHOWN)
                .collect()
            ],
        )
        for reason, count in counts.items()
    }


def sample_vectors(vectors: DataFrame, images: int, settings: SimilarSettings) -> np.ndarray:
    """Up to similar.sample_size embeddings, drawn at random (Arrow to the driver), as a float32 matrix."""
    fraction = min(1.0, 1.2 * settings.sample_size / max(images, 1))
    sampled = vectors.sample(fraction=fraction, seed=settings.seed).limit(settings.sample_size).select("embedding")
    with session_conf(vectors.sparkSession, "spark.sql.execution.arrow.pyspark.enabled", "true"):
        column = sampled.toPandas()["embedding"]
    return np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else np.empty((0, 0), np.float32)


def cell_count(images: int, sample_rows: int, settings: SimilarSettings) -> int:
    return max(1, min(settings.cells or default_cells(images), sample_rows))


def probes_udf(centroids, nprobe: int):
    """A pandas UDF: embedding -> its nprobe nearest cells, nearest first (the first is its base cell)."""

    @F.pandas_udf("array<int>")
    def probes(embeddings: pd.Series) -> pd.Series:
        unit = unit_rows(np.stack(embeddings.to_numpy()))
        return pd.Series(list(nearest_cells(unit, centroids.value, nprobe)))

    return probes


def search_cell_fn(*, k: int, min_score: float, block: int):
    """applyInPandas' function: one cell's rows (image_id, embedding, base) -> candidate pairs (CANDIDATES).

    Every row is a query; rows with base true (the cell is their nearest) are what they are compared with.
    """

    def search_cell(rows: pd.DataFrame) -> pd.DataFrame:
        unit = unit_rows(np.stack(rows["embedding"].to_numpy()))
        ids = rows["image_id"].to_numpy()
        base = np.flatnonzero(rows["base"].to_numpy())
        # Row positions, not image ids, tell a query from itself (an image is one row per cell).
        pairs = search(unit, np.arange(len(unit)), unit[base], base, k=k, min_score=min_score, block=block)
        return pd.DataFrame({"image_id": ids[pairs.query], "neighbour_id": ids[base][pairs.base], "score": pairs.score})

    return search_cell


def candidates(vectors: DataFrame, centroids: np.ndarray, settings: SimilarSettings, nprobe: int) -> DataFrame:
    """Each image's candidate pairs from its probed cells (its top k there and every pair >= the threshold)."""
    spark = vectors.sparkSession
    shared = spark.sparkContext.broadcast(centroids)
    probed = vectors.select("image_id", "key", "embedding", F.posexplode(probes_udf(shared, nprobe)("embedding")))
    cells = probed.select("image_id", "key", "embedding", F.col("col").alias("cell"), (F.col("pos") == 0).alias("base"))
    search_cell = search_cell_fn(k=settings.k, min_score=settings.duplicate_threshold, block=settings.block_size)
    return cells.groupBy("key", "cell").applyInPandas(search_cell, CANDIDATES)


def neighbours(vectors: DataFrame, found: DataFrame, k: int, models: CurrentModels) -> DataFrame:
    """Candidates -> NEIGHBOURS_SCHEMA: each searched image's top k, best first (empty when alone in its cells)."""
    ranked = F.slice(F.sort_array(F.collect_list(F.struct("score", "neighbour_id")), asc=False), 1, k)
    best = found.groupBy("image_id").agg(ranked.alias("ranked"))
    listed = F.transform(F.col("ranked"), lambda c: F.struct(c["neighbour_id"].alias("image_id"), c["score"].alias("score")))
    empty = F.array().cast(NEIGHBOURS_SCHEMA["neighbours"].dataType)
    rows = vectors.select("image_id").join(best, "image_id", "left")
    return rows.select(
        "image_id",
        F.coalesce(listed, empty).alias("neighbours"),
        F.lit(models.backbone_name).alias("model_name"),
        F.lit(models.backbone_version).alias("model_version"),
    )


def duplicates(found: DataFrame, threshold: float) -> DataFrame:
    """Candidates -> DUPLICATES_SCHEMA: the connected components of pairs scoring >= threshold."""
    pairs = found.where(F.col("score") >= threshold)
    edges = pairs.select(F.col("image_id").alias("src"), F.col("neighbour_id").alias("dst"))
    groups = connected_components(edges)
    # A pair may have been found from one side only (the other image did not probe this cell).
    ends = pairs.select(F.col("image_id").alias("vertex"), "score").union(pairs.select("neighbour_id", "score"))
    best = ends.groupBy("vertex").agg(F.max("score").alias("score_to_group"))
    joined = groups.join(best, "vertex")
    sources = {"image_id": "vertex", "group_id": "component", "score_to_group": "score_to_group"}
    return joined.select(*(F.col(sources[f.name]).cast(f.dataType).alias(f.name) for f in DUPLICATES_SCHEMA.fields))


def write_outputs(
    spark: SparkSession, output: str, tags: str, datasets: dict[str, DataFrame], lease_timeout_s: float, watch: _Stopwatch
) -> None:
    """Write each dataset to OUTPUT/<name>/ (replacing it), holding OUTPUT's lease, through private folders."""
    from jobs.lease import Lease, holding, lease_store
    from jobs.ledger import OutputStore

    root = OutputStore(spark, output)
    lease = Lease(lease_store(output, root.lease_files), output=output, timeout_s=lease_timeout_s, manifest=tags)
    with holding(lease, on_lost=spark.sparkContext.cancelAllJobs) as held:
        run_id = time.strftime("similar-%Y%m%dT%H%M%SZ", time.gmtime())
        held.name_run(run_id)
        for name, frame in datasets.items():
            store = OutputStore(spark, f"{output.rstrip('/')}/{name}")
            private = store.write_dir(run_id, name)
            watch.stage(f"write {name}", lambda frame=frame, private=private: frame.write.mode("overwrite").parquet(private))
            held.check()
            store.replace_data(private)


def find_similar(
    spark: SparkSession, tags: str, output: str, models: CurrentModels, settings: SimilarSettings, *, lease_timeout_s: float
) -> Summary:
    """The whole job: read, check, search, group, write. Raises SimilarInputError on bad input."""
    summary = Summary()
    watch = _Stopwatch(summary.seconds)
    models = searchable_models(models)
    ledger = read_ledger(spark, tags)
    check_input(ledger, models, settings.within)
    classified = classify(current_view(ledger, models), settings.within).persist()
    vectors = classified.where(F.col("left_out").isNull()).select("image_id", "key", "embedding")
    summary.searched = watch.stage("read", vectors.count)
    summary.left_out = left_out_summary(classified)
    if summary.searched == 0:
        raise SimilarInputError(f"no image of {tags} has a usable embedding of {models.backbone_version}: nothing to search")
    sample = watch.stage("sample", lambda: sample_vectors(vectors, summary.searched, settings))
    summary.cells = cell_count(summary.searched, len(sample), settings)
    summary.nprobe = min(settings.nprobe, summary.cells)
    centroids = watch.stage(
        "centroids", lambda: kmeans(sample, summary.cells, iterations=settings.kmeans_iterations, seed=settings.seed)
    )
    found = candidates(vectors, centroids, settings, summary.nprobe).persist()
    watch.stage("search", found.count)
    similar = neighbours(vectors, found, settings.k, models)
    groups = watch.stage("duplicates", lambda: duplicates(found, settings.duplicate_threshold).persist())
    summary.duplicate_images = groups.count()
    summary.groups = groups.select("group_id").distinct().count()
    write_outputs(spark, output, tags, {"neighbours": similar, "duplicates": groups}, lease_timeout_s, watch)
    for frame in (groups, found, classified):
        frame.unpersist()
    return summary


def check_targets(tags: str, output: str) -> None:
    """--output is overwritten: it must be neither the tags output nor inside it, nor contain it."""
    if overlaps(tags, output):
        raise SimilarInputError(
            f"--output {output} overlaps --tags {tags}: the output is rewritten, so it must be a separate location"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit jobs/similar_images.py",
        description="Find each image's most similar images and the groups of near-duplicates from the embeddings "
        "the tagging job stored; write OUTPUT/neighbours/ and OUTPUT/duplicates/ (Parquet).",
    )
    parser.add_argument("--tags", required=True, help="the tagging job's output dataset (the ledger) to read")
    parser.add_argument("--output", required=True, help="where to write neighbours/ and duplicates/ (rewritten)")
    parser.add_argument(
        "--profile", help="profile YAML: the current backbone and the similar.* settings (default: conf/local.yaml)"
    )
    add_overrides_argument(parser)
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, spark: SparkSession | None = None) -> int:
    """The command line; `spark`: use this session (and leave it running) instead of the profile's."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bad_input = dict.fromkeys((ConfigError, ArtifactError, CurrentViewError, SimilarInputError), EXIT_BAD_INPUT)
    return exit_status(lambda: search_and_write(args, spark), {**bad_input, **output_busy()})


def search_and_write(args: argparse.Namespace, spark: SparkSession | None) -> int:
    from jobs.infer import load_bundle
    from jobs.session import build_spark, require_filesystems

    settings = load_settings(args.profile, args.overrides)
    models = CurrentModels.from_bundle(load_bundle(settings.model.uri, settings.model.heads), embedding=True)
    check_targets(args.tags, args.output)
    session = spark or build_spark(settings)
    try:
        require_filesystems(session, {"--tags": args.tags, "--output": args.output})
        summary = find_similar(
            session, args.tags, args.output, models, settings.similar, lease_timeout_s=settings.output.lease_timeout_s
        )
    finally:
        if spark is None:
            session.stop()
    print(summary.render(models, args.output), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
