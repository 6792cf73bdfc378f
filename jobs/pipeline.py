"""Thin Spark glue: session from the profile, the tagging pandas_udf, output, summary."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Settings
from model.artifact import ModelArtifact

log = logging.getLogger(__name__)

RESULT_TYPE = T.StructType(
    [
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("tag_labels", T.ArrayType(T.StringType())),
        T.StructField("tag_scores", T.ArrayType(T.FloatType())),
    ]
)
TAG_TYPE = T.StructType([T.StructField("label", T.StringType()), T.StructField("score", T.FloatType())])
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType()),
        T.StructField("url", T.StringType()),
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("tags", T.ArrayType(TAG_TYPE, containsNull=False)),
        T.StructField("model_name", T.StringType(), False),
        T.StructField("model_version", T.StringType(), False),
        T.StructField("processed_at", T.TimestampType(), False),
    ]
)


class StageTimes(AccumulatorParam):
    """Sums per-stage seconds and counts from every task back on the driver."""

    def zero(self, value):
        return Counter()

    def addInPlace(self, value1, value2):
        value1.update(value2)
        return value1


def build_spark(settings: Settings) -> SparkSession:
    """A SparkSession configured from the profile (spark-submit's --master wins if given)."""
    if settings.spark.master.startswith("local"):
        # Local Python workers must run the interpreter that has our dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(settings.spark.app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain `python`, not spark-submit
        builder = builder.master(settings.spark.master)
    for key, value in settings.spark.conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def make_tag_udf(artifact_bc, settings: Settings, stage_times):
    """The vectorised UDF: url batches -> RESULT_TYPE; model built once per Python worker."""

    def tag_batches(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        # Imported here: these run on the executor, never at import time on the driver.
        from jobs.infer import tagger_for_worker, worker_model_loads
        from jobs.tagging import tag_urls

        timings: Counter = Counter()
        started = time.perf_counter()
        loads_before = worker_model_loads()
        tagger = tagger_for_worker(
            artifact_bc.value,
            top_k=settings.model.top_k,
            batch_size=settings.inference.batch_size,
            threads=settings.inference.threads,
        )
        timings["model_load_s"] += time.perf_counter() - started
        timings["model_builds"] += worker_model_loads() - loads_before  # 0 unless new worker
        timings["tasks"] += 1
        with ThreadPoolExecutor(settings.fetch.threads, thread_name_prefix="fetch") as pool:
            for urls in batches:
                yield tag_urls(urls.tolist(), tagger, settings, pool, timings)
        timings["task_s"] += time.perf_counter() - started
        stage_times.add(timings)

    # Non-deterministic: Spark must run it exactly once per row, never re-evaluate it per column.
    return F.pandas_udf(tag_batches, RESULT_TYPE).asNondeterministic()


def tag_dataframe(manifest: DataFrame, artifact: ModelArtifact, settings: Settings, stage_times=None) -> DataFrame:
    """(image_id, url) -> the output schema, one row per input row."""
    spark = manifest.sparkSession
    artifact_bc = spark.sparkContext.broadcast(artifact)
    stage_times = stage_times or spark.sparkContext.accumulator(Counter(), StageTimes())
    if settings.spark.partitions:
        manifest = manifest.repartition(settings.spark.partitions)
    tag_udf = make_tag_udf(artifact_bc, settings, stage_times)
    result = manifest.withColumn("result", tag_udf(F.col("url")))
    return result.select(
        "image_id",
        "url",
        F.col("result.status").alias("status"),
        F.col("result.error").alias("error"),
        F.zip_with(
            "result.tag_labels", "result.tag_scores", lambda label, score: F.struct(label.alias("label"), score.alias("score"))
        ).alias("tags"),
        F.lit(artifact.name).alias("model_name"),
        F.lit(artifact.version).alias("model_version"),
        F.current_timestamp().alias("processed_at"),
    )


@dataclass
class RunSummary:
    rows_in: int
    ok: int
    error: int
    seconds: float
    stage_times: dict
    examples: list

    @property
    def images_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def render(self, model: str) -> str:
        lines = [
            f"model       {model}",
            f"rows in     {self.rows_in}",
            f"ok          {self.ok}",
            f"error       {self.error}",
            f"wall        {self.seconds:.1f} s ({self.images_per_s:.1f} images/s)",
            "stage times " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(self.stage_times.items()) if k.endswith("_s")),
        ]
        for row in self.examples:
            tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"][:3])
            lines.append(f"  {row['url'].rsplit('/', 1)[-1][:40]:40s} {tags}")
        return "\n".join(lines)


def summarise(spark: SparkSession, output_uri: str, seconds: float, stage_times: dict, examples: int = 5) -> RunSummary:
    """Count what was written (the output is the truth) and pick a few tagged examples."""
    written = spark.read.parquet(output_uri)
    counts = {row["status"]: row["count"] for row in written.groupBy("status").count().collect()}
    sample = written.where(F.col("status") == "ok").orderBy("url").limit(examples).collect()
    return RunSummary(
        rows_in=sum(counts.values()),
        ok=counts.get("ok", 0),
        error=counts.get("error", 0),
        seconds=seconds,
        stage_times=dict(stage_times),
        examples=[row.asDict(recursive=True) for row in sample],
    )
