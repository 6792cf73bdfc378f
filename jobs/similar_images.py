"""Similar images and near-duplicates from the embeddings the tagging job stored.

    spark-submit jobs/similar_images.py --tags URI --output URI [--profile P] [--set key=value ...]

Reads the tagging job's output (the ledger) down to each image's current embedding, as jobs.current
does (the latest ok full row of the profile's backbone version), and writes two Parquet datasets:
- OUTPUT/neighbours/: per image its top `similar.k` by cosine, best first, never itself;
- OUTPUT/duplicates/: per image that has a near-copy (cosine >= `similar.duplicate_threshold`, or close
  perceptual hashes and cosine >= `similar.phash_min_cosine`: jobs.phash) its group (a connected
  component of such pairs, jobs.similar_graph) and its best score in the group.
Search is an inverted file (jobs.similar): centroids learned on a sample on the driver, each image
stored in its nearest cell and searched in its `similar.nprobe` nearest, cells searched exactly in
parallel (applyInPandas), candidates merged into each image's top k. docs/similar.md says more.
--incremental searches only the images the last run did not list, with its centroids (jobs.similar_index),
and merges what they find into the kept lists and groups.
Columns: jobs/schema.py's NEIGHBOURS_SCHEMA and DUPLICATES_SCHEMA. Exit 2: bad input, named.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import ConfigError, SimilarSettings, load_settings
from jobs.current import (
    CurrentModels,
    CurrentViewError,
    current_view,
    read_ledger,
    read_write_parser,
    require_separate,
)
from jobs.exits import EXIT_BAD_INPUT, exit_status, output_busy
from jobs.phash import MIRROR_BITS, MIRROR_MASK, copy_pair
from jobs.schema import DUPLICATES_SCHEMA, NEIGHBOURS_SCHEMA
from jobs.session import session_conf
from jobs.similar import default_cells, kmeans, nearest_cells, search, unit_rows
from jobs.similar_graph import connected_components
from jobs.similar_index import (
    INDEX_PATH,
    SimilarIndex,
    index_frame,
    index_settings,
    kept_floors,
    read_index,
    reuse_problem,
)
from model.artifact import ArtifactError

if TYPE_CHECKING:
    from jobs.lease import HeldLease

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
    incremental: bool = False
    indexed: int = 0  # --incremental: the images searchable now (the kept ones and the new ones)
    lists_changed: int = 0  # --incremental: kept lists that a new image entered
    gone: int = 0  # --incremental: listed by the last run, not searchable now (kept until a full run)

    def render(self, models: CurrentModels, output: str) -> str:
        lines = [f"similar images for {models.backbone_name} {models.backbone_version} -> {output}"]
        if self.incremental:
            lines.append(
                f"{self.searched} new images searched against {self.indexed} ({self.cells} cells of the last full run, "
                f"nprobe {self.nprobe}); {self.lists_changed} existing lists changed"
            )
            if self.gone:
                lines.append(
                    f"{self.gone} images of the last run are no longer searchable: kept until a run without --incremental"
                )
        else:
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
    """The view -> (image_id, key, embedding, phash, left_out): left_out names why an image is not searched
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
    return view.select("image_id", key.alias("key"), embedding.alias("embedding"), "phash", reason.alias("left_out"))


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
    """applyInPandas' function: one cell's rows (image_id, embedding, base, query, floor) -> candidate pairs
    (CANDIDATES).

    Rows with query true are searched; rows with base true (the cell is their nearest) are what they are
    compared with. A base row's floor (null: none) keeps every query scoring at least that with it too.
    """

    def search_cell(rows: pd.DataFrame) -> pd.DataFrame:
        unit = unit_rows(np.stack(rows["embedding"].to_numpy()))
        ids = rows["image_id"].to_numpy()
        query = np.flatnonzero(rows["query"].to_numpy())
        base = np.flatnonzero(rows["base"].to_numpy())
        floor = rows["floor"].to_numpy(dtype=np.float32, na_value=np.nan)[base]  # NaN: never reached
        # Row positions, not image ids, tell a query from itself (an image is one row per cell).
        pairs = search(unit[query], query, unit[base], base, k=k, min_score=min_score, block=block, base_floor=floor)
        return pd.DataFrame({"image_id": ids[query][pairs.query], "neighbour_id": ids[base][pairs.base], "score": pairs.score})

    return search_cell


def candidates(
    vectors: DataFrame, centroids: np.ndarray, settings: SimilarSettings, nprobe: int, kept: DataFrame | None = None
) -> DataFrame:
    """Candidate pairs (CANDIDATES) of each searched image from its probed cells: its top k there, every pair
    >= the threshold, and (--incremental) every pair that enters a kept image's list.

    kept: None searches every image. Else (image_id, floor) of the images the last run listed (kept_floors):
    they are only stored, in their nearest cell, with their floor; the others, the new ones, are searched,
    and only the cells that a new image probes are.
    """
    spark = vectors.sparkSession
    shared = spark.sparkContext.broadcast(centroids)
    probes = probes_udf(shared, nprobe)("embedding")
    if kept is None:
        rows = vectors.select("*", F.lit(True).alias("query"), F.lit(None).cast("float").alias("floor"))
    else:
        rows = vectors.join(kept, "image_id", "left").select("*", F.col("floor").isNull().alias("query"))
        probes = F.when(F.col("query"), probes).otherwise(F.slice(probes, 1, 1))
    probed = rows.select("image_id", "key", "embedding", "query", "floor", F.posexplode(probes))
    cells = probed.select(
        "image_id", "key", "embedding", "query", "floor", F.col("col").alias("cell"), (F.col("pos") == 0).alias("base")
    )
    if kept is not None:
        touched = rows.where("query").select("key", F.explode(probes_udf(shared, nprobe)("embedding")).alias("cell"))
        cells = cells.join(touched.distinct(), ["key", "cell"], "left_semi")
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


def hash_distance(a: Column, b: Column) -> Column:
    """jobs.phash.distances on Columns: bits apart, or apart from b's mirror image if fewer; null without both."""
    differ = a.bitwiseXOR(b)
    mirrored = F.bit_count(differ.bitwiseAND(F.lit(MIRROR_MASK)))
    return F.bit_count(differ) - mirrored + F.least(mirrored, F.lit(MIRROR_BITS) - mirrored)


def copy_pairs(found: DataFrame, rule: SimilarSettings, hashes: DataFrame) -> DataFrame:
    """The candidate pairs that jobs.phash.copy_pair accepts: cosine >= duplicate_threshold, or perceptual
    hashes (hashes: image_id, phash) within phash_distance and cosine >= phash_min_cosine."""
    close = found.where(F.col("score") >= min(rule.duplicate_threshold, rule.phash_min_cosine))
    if rule.phash_min_cosine >= rule.duplicate_threshold:  # the hash adds no pair
        return close
    # Hashes joined only to the pairs close enough for the rule (few), never to every candidate.
    known = hashes.where(F.col("phash").isNotNull())
    ends = close.join(known.select("image_id", F.col("phash").alias("phash_a")), "image_id", "left").join(
        known.select(F.col("image_id").alias("neighbour_id"), F.col("phash").alias("phash_b")), "neighbour_id", "left"
    )
    apart = hash_distance(F.col("phash_a"), F.col("phash_b"))
    return ends.where(copy_pair(F.col("score"), apart, rule)).select(*found.columns)


def duplicates(found: DataFrame, rule: SimilarSettings, hashes: DataFrame, earlier: DataFrame | None = None) -> DataFrame:
    """Candidates -> DUPLICATES_SCHEMA: the connected components of the pairs `copy_pairs` accepts.

    earlier (--incremental): the last run's groups (DUPLICATES_SCHEMA), joined in as edges image -> group_id
    with their best scores, so the new pairs merge into them."""
    pairs = copy_pairs(found, rule, hashes)
    edges = pairs.select(F.col("image_id").alias("src"), F.col("neighbour_id").alias("dst"))
    # A pair may have been found from one side only (the other image did not probe this cell).
    ends = pairs.select(F.col("image_id").alias("vertex"), "score").union(pairs.select("neighbour_id", "score"))
    if earlier is not None:
        edges = edges.union(earlier.select("image_id", "group_id"))
        ends = ends.union(earlier.select("image_id", "score_to_group"))
    groups = connected_components(edges)
    best = ends.groupBy("vertex").agg(F.max("score").alias("score_to_group"))
    joined = groups.join(best, "vertex")
    sources = {"image_id": "vertex", "group_id": "component", "score_to_group": "score_to_group"}
    return joined.select(*(F.col(sources[f.name]).cast(f.dataType).alias(f.name) for f in DUPLICATES_SCHEMA.fields))


@contextlib.contextmanager
def output_lease(spark: SparkSession, output: str, tags: str, run_id: str, timeout_s: float) -> Iterator[HeldLease]:
    """OUTPUT's lease, held from before the last run's outputs are read (--incremental builds on them)
    to the end of the writes: no other run replaces them in between. Refused (exit 4) before any search."""
    from jobs.lease import Lease, holding, lease_store
    from jobs.ledger import OutputStore

    lease = Lease(lease_store(output, OutputStore(spark, output).lease_files), output=output, timeout_s=timeout_s, manifest=tags)
    with holding(lease, on_lost=spark.sparkContext.cancelAllJobs) as held:
        held.name_run(run_id)
        yield held


def write_outputs(
    spark: SparkSession,
    output: str,
    run_id: str,
    held: HeldLease,
    datasets: dict[str, DataFrame],
    index: SimilarIndex,
    watch: _Stopwatch,
) -> None:
    """Write each dataset to OUTPUT/<name>/ (replacing it), holding OUTPUT's lease, through private folders.

    The index (jobs.similar_index) is deleted first and written last: a run stopped half way leaves none,
    so an --incremental run never builds on half an answer (it asks for a full run)."""
    from jobs.ledger import OutputStore

    OutputStore(spark, output).delete(INDEX_PATH)
    for path, frame in {**datasets, INDEX_PATH: index_frame(spark, index)}.items():
        name = path.rsplit("/", 1)[-1]
        store = OutputStore(spark, f"{output.rstrip('/')}/{path}")
        private = store.write_dir(run_id, name)
        watch.stage(f"write {name}", lambda frame=frame, private=private: frame.write.mode("overwrite").parquet(private))
        held.check()
        store.replace_data(private)


def updated_neighbours(earlier: DataFrame, found: DataFrame, fresh: DataFrame, k: int, models: CurrentModels) -> DataFrame:
    """--incremental: the last run's lists (NEIGHBOURS_SCHEMA) and the new images' candidates -> every list.

    The new images get their top k; a kept image that a new one scored at least its floor with (the pair
    found from the new side: cosine is symmetric) gets the top k of its kept list and those pairs; the other
    kept lists stay as they were. Adds `changed` (true: a list that differs from the kept one)."""
    reverse = found.join(fresh.select(F.col("image_id").alias("neighbour_id")), "neighbour_id", "left_anti").select(
        F.col("neighbour_id").alias("image_id"), F.col("image_id").alias("neighbour_id"), "score"
    )
    touched = reverse.select("image_id").distinct()
    kept = earlier.join(touched, "image_id", "left_semi").select("image_id", F.explode("neighbours").alias("n"))
    kept = kept.select("image_id", F.col("n.image_id").alias("neighbour_id"), F.col("n.score").alias("score"))
    before = earlier.select("image_id", F.col("neighbours").alias("before"))
    updated = neighbours(touched, kept.unionByName(reverse), k, models).join(before, "image_id")
    columns = [f.name for f in NEIGHBOURS_SCHEMA.fields]
    return (
        earlier.join(touched, "image_id", "left_anti")
        .select(*columns, F.lit(False).alias("changed"))
        .unionByName(updated.select(*columns, (F.col("neighbours") != F.col("before")).alias("changed")))
        .unionByName(neighbours(fresh, found, k, models).select(*columns, F.lit(True).alias("changed")))
    )


def search_all(
    vectors: DataFrame, summary: Summary, settings: SimilarSettings, models: CurrentModels, watch: _Stopwatch
) -> tuple[dict[str, DataFrame], SimilarIndex]:
    """A full run: centroids learned on a sample, every image searched. -> (datasets, the index to keep)."""
    sample = watch.stage("sample", lambda: sample_vectors(vectors, summary.searched, settings))
    summary.cells = cell_count(summary.searched, len(sample), settings)
    summary.nprobe = min(settings.nprobe, summary.cells)
    centroids = watch.stage(
        "centroids", lambda: kmeans(sample, summary.cells, iterations=settings.kmeans_iterations, seed=settings.seed)
    )
    found = watch.stage("search", candidates(vectors, centroids, settings, summary.nprobe).localCheckpoint)
    groups = watch.stage("duplicates", lambda: duplicates(found, settings, vectors).localCheckpoint())
    index = SimilarIndex(models.backbone_name, models.backbone_version, index_settings(settings), centroids)
    return {"neighbours": neighbours(vectors, found, settings.k, models), "duplicates": groups}, index


def search_new(
    spark: SparkSession,
    vectors: DataFrame,
    output: str,
    index: SimilarIndex,
    summary: Summary,
    settings: SimilarSettings,
    models: CurrentModels,
    watch: _Stopwatch,
) -> dict[str, DataFrame] | None:
    """--incremental: the images not in OUTPUT/neighbours/ searched against all, with the index's centroids;
    their pairs merged into the kept lists and groups. None: no new image (nothing to write)."""
    summary.incremental, summary.indexed = True, summary.searched
    summary.cells = len(index.centroids)
    summary.nprobe = min(settings.nprobe, summary.cells)
    earlier = spark.read.parquet(f"{output.rstrip('/')}/neighbours")
    fresh = vectors.join(earlier.select("image_id"), "image_id", "left_anti").select("image_id").localCheckpoint()
    summary.searched = watch.stage("new", fresh.count)
    summary.gone = earlier.join(vectors, "image_id", "left_anti").count()
    if summary.searched == 0:
        return None
    # Checkpointed, not cached: these are read from the outputs that the writes then replace, and must
    # never be recomputed from the replaced files.
    found = candidates(vectors, index.centroids, settings, summary.nprobe, kept_floors(earlier, settings.k))
    found = watch.stage("search", found.localCheckpoint)
    similar = updated_neighbours(earlier, found, fresh, settings.k, models).localCheckpoint()
    summary.lists_changed = similar.where(F.col("changed")).join(fresh, "image_id", "left_anti").count()
    earlier_groups = spark.read.parquet(f"{output.rstrip('/')}/duplicates")
    groups = watch.stage("duplicates", lambda: duplicates(found, settings, vectors, earlier_groups).localCheckpoint())
    return {"neighbours": similar.drop("changed"), "duplicates": groups}


def find_similar(
    spark: SparkSession,
    tags: str,
    output: str,
    models: CurrentModels,
    settings: SimilarSettings,
    *,
    lease_timeout_s: float,
    incremental: bool = False,
) -> Summary:
    """The whole job: read, check, search, group, write. Raises SimilarInputError on bad input."""
    summary = Summary()
    watch = _Stopwatch(summary.seconds)
    models = searchable_models(models)
    ledger = read_ledger(spark, tags)
    check_input(ledger, models, settings.within)
    if incremental:
        reusable_index(spark, output, models, settings)  # refused before any work; read again under the lease
    classified = classify(current_view(ledger, models), settings.within).persist()
    vectors = classified.where(F.col("left_out").isNull()).select("image_id", "key", "embedding", "phash")
    summary.searched = watch.stage("read", vectors.count)
    summary.left_out = left_out_summary(classified)
    if summary.searched == 0:
        raise SimilarInputError(f"no image of {tags} has a usable embedding of {models.backbone_version}: nothing to search")
    run_id = time.strftime("similar-%Y%m%dT%H%M%SZ", time.gmtime())
    with output_lease(spark, output, tags, run_id, lease_timeout_s) as held:
        if incremental:
            index = reusable_index(spark, output, models, settings)
            datasets = search_new(spark, vectors, output, index, summary, settings, models, watch)
        else:
            datasets, index = search_all(vectors, summary, settings, models, watch)
        if datasets is not None:
            groups = datasets["duplicates"]
            summary.duplicate_images = groups.count()
            summary.groups = groups.select("group_id").distinct().count()
            write_outputs(spark, output, run_id, held, datasets, index, watch)
    classified.unpersist()
    return summary


def reusable_index(spark: SparkSession, output: str, models: CurrentModels, settings: SimilarSettings) -> SimilarIndex:
    """--incremental: the index under --output, or SimilarInputError saying why it cannot be built on."""
    index = read_index(spark, output)
    if problem := reuse_problem(index, models, settings, output):
        raise SimilarInputError(problem)
    return index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = read_write_parser(
        "spark-submit jobs/similar_images.py",
        "Find each image's most similar images and the groups of near-duplicates from the embeddings "
        "the tagging job stored; write OUTPUT/neighbours/ and OUTPUT/duplicates/ (Parquet).",
        ("--tags", "the tagging job's output dataset (the ledger) to read"),
        ("--output", "where to write neighbours/ and duplicates/ (rewritten)"),
        "profile YAML: the current backbone and the similar.* settings (default: conf/local.yaml)",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="search only the images that --output's neighbours/ does not list yet, against all, with the last "
        "full run's centroids, and merge them into the kept lists and groups (needs a full run there first)",
    )
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
    require_separate(("--tags", args.tags), ("--output", args.output), SimilarInputError)
    session = spark or build_spark(settings)
    try:
        require_filesystems(session, {"--tags": args.tags, "--output": args.output})
        summary = find_similar(
            session,
            args.tags,
            args.output,
            models,
            settings.similar,
            lease_timeout_s=settings.output.lease_timeout_s,
            incremental=args.incremental,
        )
    finally:
        if spark is None:
            session.stop()
    print(summary.render(models, args.output), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
