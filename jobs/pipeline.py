"""Thin Spark glue: the tagging pandas_udf, its warm-up, the output's columns (jobs/schema.py) from its results."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from pyspark.broadcast import Broadcast
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import metrics as M
from jobs.config import Settings
from jobs.infer import ModelBundle
from jobs.metrics import StageTimes
from jobs.schema import PATH_FULL, RESULT_TYPE, head_columns, output_fields

log = logging.getLogger(__name__)


def process_started_at() -> float | None:
    """Wall-clock time this process started (Linux /proc, 10 ms resolution); None where unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


class WarmUp(threading.Thread):
    """Starts the Python workers and builds their models while the driver reads the manifest and plans.

    One task per core in a background job: each forks a Python worker (or reuses an idle one), imports
    what the tagging UDF imports and builds the models from the broadcast, so that with
    spark.python.worker.reuse the first tagging tasks find them ready. Best effort: a failure is
    logged and the tagging tasks then do the same work themselves (and report any error per row).
    `workers`: what each warm-up task saw (pid, process start, models ready), wall clock.
    """

    def __init__(self, spark: SparkSession, models_bc: Broadcast, settings: Settings):
        super().__init__(name="warm-up", daemon=True)
        self.spark, self.models_bc, self.settings = spark, models_bc, settings
        self.started_at: float | None = None
        self.workers: list[dict] = []

    def run(self) -> None:
        self.started_at = time.time()
        sc = self.spark.sparkContext
        sc.setJobDescription("warm up the Python workers")
        try:
            cores = sc.defaultParallelism
            # A pandas UDF like the tagging one: Spark keeps separate worker pools per kind of Python
            # runner, and only SQL's Arrow runner hands its workers on to the tagging tasks.
            warm = F.pandas_udf(warm_batches(self.models_bc, self.settings), "string")
            rows = self.spark.range(0, cores, 1, cores).select(warm("id").alias("worker")).collect()
            self.workers = [json.loads(row.worker) for row in rows]
        except Exception as exc:  # best effort: the tagging tasks build the models themselves
            log.warning("warming up the Python workers failed (the tagging tasks start them instead): %s", exc)


def warm_batches(models_bc: Broadcast, settings: Settings):
    """The warm-up UDF: per task, the worker's models built; answers what it saw, as JSON."""

    def warm(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        answer = json.dumps(warm_worker(models_bc, settings))
        for batch in batches:
            yield pd.Series([answer] * len(batch))

    return warm


def warm_worker(models_bc: Broadcast, settings: Settings) -> dict:
    """In a Python worker: the UDF's imports and its models, built once for this process."""
    import jobs.tagging  # noqa: F401  (the UDF's imports, done now)
    from jobs.infer import worker_model_loads

    started, builds = process_started_at(), worker_model_loads()
    loading = time.perf_counter()
    worker_tagger(models_bc.value, settings)
    return {
        "worker": os.getpid(),
        "process_started_at": started,
        "ready_at": time.time(),
        "model_load_s": time.perf_counter() - loading,
        "model_builds": worker_model_loads() - builds,
    }


def worker_tagger(models: ModelBundle, settings: Settings):
    """This Python worker's Tagger for the profile, built on first use: the warm-up builds exactly
    the one the tagging tasks then look up."""
    from jobs.infer import tagger_for_worker

    inference = settings.inference
    return tagger_for_worker(
        models, top_k=settings.model.top_k, batch_size=inference.batch_size, threads=inference.threads,
        embedding=settings.model.embedding,
    )  # fmt: skip


def make_tag_udf(models_bc, settings: Settings, stage_times, *, backbone_needed: bool = True):
    """The vectorised UDF: batches of (url, path, embedding, embedding_norm, needed) -> RESULT_TYPE.

    Rows on the full path are fetched, decoded and run through the backbone and every head;
    rows on the stored-embedding path only through the heads they need. Models are built once
    per Python worker; with backbone_needed=False (every row has a stored embedding) the
    backbone is never loaded.
    """

    def tag_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # Imported here: these run on the executor, never at import time on the driver.
        from jobs.infer import heads_for_worker, worker_model_loads
        from jobs.tagging import STATUS_OK, start_loading, tag_batch

        timings: Counter = Counter({M.TASKS: 1})
        started, started_at = time.perf_counter(), time.time()
        timings[M.TASK_START_AT] = started_at
        worker_started = process_started_at()
        if worker_started is not None:
            timings[M.WORKER_START_AT] = worker_started
        loads_before = worker_model_loads()
        models = models_bc.value
        batch_size, threads = settings.inference.batch_size, settings.inference.threads
        tagger = worker_tagger(models, settings) if backbone_needed else None
        heads = tagger.heads if tagger else heads_for_worker(models, batch_size=batch_size, threads=threads)
        load_s = time.perf_counter() - started
        timings.update({M.MODEL_LOAD_S: load_s, M.MODEL_BUILDS: worker_model_loads() - loads_before})
        timings[M.MODEL_LOAD_S_MAX] = load_s
        ready_at = timings[M.READY_AT] = time.time()  # wall clock: comparable across processes
        prefetch = settings.fetch.prefetch_batches
        first_input_at = first_output_at = None
        with ThreadPoolExecutor(settings.fetch.threads, thread_name_prefix="fetch") as pool:
            # Batches in flight: downloads and decodes of the next `prefetch` batches run in
            # the pool while the model works on the oldest one.
            in_flight: deque = deque()
            batch_iter = iter(batches)
            while True:
                waited = time.perf_counter()
                batch = next(batch_iter, None)  # time spent here is Spark reading and shipping input
                first_input_at = first_input_at or time.time()
                timings[M.SPARK_IO_S] += time.perf_counter() - waited
                if batch is not None:
                    full = (batch["path"] == PATH_FULL).to_numpy()
                    in_flight.append((batch, full, start_loading(batch["url"][full].tolist(), settings, pool)))
                    if len(in_flight) <= prefetch:
                        continue
                if not in_flight:
                    break
                result = tag_batch(*in_flight.popleft(), tagger, heads, timings)
                ok = int((result["status"] == STATUS_OK).sum())  # for the driver's progress lines
                timings.update({M.ROWS_OK: ok, M.ROWS_ERROR: len(result) - ok})
                first_output_at = first_output_at or time.time()
                timings.setdefault(M.FIRST_BATCH_AT, first_output_at)
                waited = time.perf_counter()
                yield result  # ... and here, Spark taking the output (Arrow, Parquet write)
                timings[M.SPARK_IO_S] += time.perf_counter() - waited
        ended_at = timings[M.END_AT] = time.time()
        timings[M.TASK_S] += time.perf_counter() - started
        # One entry per task, so a report can draw the timeline and see a tail.
        timings[M.TASK_TIMELINE] = [
            {
                "start": started_at,
                "ready": ready_at,
                "first_input": first_input_at or ended_at,
                "first_output": first_output_at or ended_at,
                "end": ended_at,
                "images": int(timings[M.IMAGES]),
                "worker": os.getpid(),
            }
        ]
        stage_times.add(timings)

    # Non-deterministic: Spark must run it exactly once per row, never re-evaluate it per column.
    return F.pandas_udf(tag_batches, RESULT_TYPE).asNondeterministic()


def tag_dataframe(
    pending: DataFrame,
    models: ModelBundle,
    settings: Settings,
    stage_times=None,
    run_id: str = "adhoc",
    *,
    backbone_needed: bool = True,
    models_bc: Broadcast | None = None,
) -> DataFrame:
    """(image_id, url) -> the output's columns (jobs.schema.output_fields), one row per input row, every model in one pass.

    Rows may also carry a plan (path, needed heads, the stored embedding and its norm, see
    jobs.ledger.plan_paths); without one every row takes the full path. models_bc: the models
    already broadcast (the driver broadcasts them once for the warm-up and the tagging), else they
    are broadcast here.
    """
    spark = pending.sparkSession
    models_bc = models_bc or spark.sparkContext.broadcast(models)
    stage_times = stage_times or spark.sparkContext.accumulator(Counter(), StageTimes())
    tag_udf = make_tag_udf(models_bc, settings, stage_times, backbone_needed=backbone_needed)
    plan = {
        "path": F.lit(PATH_FULL),
        "embedding": F.lit(None).cast("array<float>"),
        "embedding_norm": F.lit(None).cast("float"),
        "needed": F.array().cast("array<string>"),
    }
    pending = pending.select("image_id", "url", *[F.col(c) if c in pending.columns else v.alias(c) for c, v in plan.items()])
    result = pending.withColumn("result", tag_udf(F.struct("url", "path", "embedding", "embedding_norm", "needed")))
    computed = {
        "tags": F.zip_with(
            "result.tag_labels", "result.tag_scores", lambda label, score: F.struct(label.alias("label"), score.alias("score"))
        ),
        **_head_columns(models),
        **_provenance(models, run_id),
    }
    fields = output_fields([name for name, _head in models.heads], settings.model.embedding)
    return result.select(*[_output_column(field.name, computed) for field in fields])


def _output_column(name: str, computed: dict[str, Column]) -> Column:
    """An output column: computed from the row, else the UDF result's field of that name, else the input's."""
    if name in computed:
        return computed[name].alias(name)
    if name in RESULT_TYPE.fieldNames():
        return F.col(f"result.{name}").alias(name)
    return F.col(name)  # image_id, url, path: the input row's


def _head_columns(models: ModelBundle) -> dict[str, Column]:
    """Each head's label and score, from the i-th entries of the result's head arrays (profile order)."""
    columns = {}
    for i, (name, _head) in enumerate(models.heads):
        label, score = head_columns(name)
        columns |= {label: F.col("result.head_labels")[i], score: F.col("result.head_scores")[i]}
    return columns


def _provenance(models: ModelBundle, run_id: str) -> dict[str, Column]:
    """Which models made the row: all of them on the full path; on the stored-embedding path the
    backbone (whose embedding the heads read) and only the heads that row needed."""
    backbone = F.create_map(F.lit(models.backbone.name), F.lit(models.backbone.version))
    held = (
        F.filter(
            F.array(
                *[
                    F.struct(
                        F.lit(head.name).alias("key"),
                        F.lit(head.version).alias("value"),
                        ((F.col("path") == PATH_FULL) | F.array_contains("needed", name)).alias("held"),
                    )
                    for name, head in models.heads
                ]
            ),
            lambda entry: entry["held"],
        )
        if models.heads
        else None
    )
    versions = (
        backbone
        if held is None
        else F.map_concat(backbone, F.map_from_entries(F.transform(held, lambda entry: F.struct(entry["key"], entry["value"]))))
    )
    return {
        "model_name": F.lit(models.backbone.name),
        "model_version": F.lit(models.backbone.version),
        "models": versions,
        "processed_at": F.current_timestamp(),
        "run_id": F.lit(run_id),
    }
