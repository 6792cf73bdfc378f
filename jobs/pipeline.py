"""Thin Spark glue: the session from the profile, the tagging pandas_udf, the output columns."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import ConfigError, Settings
from jobs.infer import ModelBundle
from model.artifact import ModelArtifact

log = logging.getLogger(__name__)

RESULT_TYPE = T.StructType(
    [
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("tag_labels", T.ArrayType(T.StringType())),
        T.StructField("tag_scores", T.ArrayType(T.FloatType())),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("head_labels", T.ArrayType(T.StringType())),
        T.StructField("head_scores", T.ArrayType(T.FloatType())),
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
        T.StructField("models", T.MapType(T.StringType(), T.StringType(), False), False),
        T.StructField("processed_at", T.TimestampType(), False),
        T.StructField("run_id", T.StringType(), False),
    ]
)


class StageTimes(AccumulatorParam):
    """Merges per-task timings on the driver: keys ending in _min/_max keep the extreme, others add up."""

    def zero(self, value):
        return Counter()

    def addInPlace(self, value1, value2):
        for key, value in value2.items():
            if key.endswith("_min") and key in value1:
                value1[key] = min(value1[key], value)
            elif key.endswith("_max") and key in value1:
                value1[key] = max(value1[key], value)
            else:
                value1[key] += value
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


def require_filesystems(spark: SparkSession, uris: dict[str, str]) -> None:
    """Fail fast, naming the argument, when Spark has no Hadoop filesystem for a URI's scheme.

    Spark reads the manifest and writes the output through Hadoop's FileSystem: on EMR, EMRFS
    serves s3://; Spark from the pip package has no S3 filesystem at all and would otherwise die
    later with a Java stack trace.
    """
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for argument, uri in uris.items():
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme in ("", "file"):
            continue
        try:
            jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, hadoop_conf)
        except Exception:  # py4j wraps Hadoop's UnsupportedFileSystemException
            raise ConfigError(
                f"{argument} {uri}: this Spark has no Hadoop filesystem for {scheme}:// (local mode from the pip "
                "package has none). Run the job on EMR, where EMRFS serves s3://; or add hadoop-aws to Spark's "
                "classpath (spark-submit --packages org.apache.hadoop:hadoop-aws:<Spark's Hadoop version>) and use "
                "s3a://; or use a local path."
            ) from None


def make_tag_udf(models_bc, settings: Settings, stage_times):
    """The vectorised UDF: url batches -> RESULT_TYPE; model built once per Python worker."""

    def tag_batches(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        # Imported here: these run on the executor, never at import time on the driver.
        from jobs.infer import tagger_for_worker, worker_model_loads
        from jobs.tagging import start_loading, tag_loaded

        timings: Counter = Counter(tasks=1)
        started = time.perf_counter()
        loads_before = worker_model_loads()
        tagger = tagger_for_worker(
            models_bc.value,
            top_k=settings.model.top_k,
            batch_size=settings.inference.batch_size,
            threads=settings.inference.threads,
            embedding=settings.model.embedding,
        )
        load_s = time.perf_counter() - started
        timings.update(model_load_s=load_s, model_builds=worker_model_loads() - loads_before)
        timings["model_load_s_max"] = load_s
        timings["ready_at_min"] = time.time()  # wall clock: comparable across processes
        prefetch = settings.fetch.prefetch_batches
        with ThreadPoolExecutor(settings.fetch.threads, thread_name_prefix="fetch") as pool:
            # Batches in flight: downloads and decodes of the next `prefetch` batches run in
            # the pool while the model works on the oldest one.
            in_flight: deque = deque()
            batch_iter = iter(batches)
            while True:
                waited = time.perf_counter()
                urls = next(batch_iter, None)  # time spent here is Spark reading and shipping input
                timings["spark_io_s"] += time.perf_counter() - waited
                if urls is not None:
                    in_flight.append(start_loading(urls.tolist(), settings, pool))
                    if len(in_flight) <= prefetch:
                        continue
                if not in_flight:
                    break
                result = tag_loaded(in_flight.popleft(), tagger, timings)
                waited = time.perf_counter()
                yield result  # ... and here, Spark taking the output (Arrow, Parquet write)
                timings["spark_io_s"] += time.perf_counter() - waited
        timings["end_at_max"] = time.time()
        timings["task_s"] += time.perf_counter() - started
        stage_times.add(timings)

    # Non-deterministic: Spark must run it exactly once per row, never re-evaluate it per column.
    return F.pandas_udf(tag_batches, RESULT_TYPE).asNondeterministic()


def tag_dataframe(
    pending: DataFrame, models: ModelBundle | ModelArtifact, settings: Settings, stage_times=None, run_id: str = "adhoc"
) -> DataFrame:
    """(image_id, url) -> the output schema, one row per input row, every model in one pass."""
    models = models if isinstance(models, ModelBundle) else ModelBundle(models)
    spark = pending.sparkSession
    models_bc = spark.sparkContext.broadcast(models)
    stage_times = stage_times or spark.sparkContext.accumulator(Counter(), StageTimes())
    tag_udf = make_tag_udf(models_bc, settings, stage_times)
    result = pending.withColumn("result", tag_udf(F.col("url")))
    columns = [
        "image_id",
        "url",
        F.col("result.status").alias("status"),
        F.col("result.error").alias("error"),
        F.zip_with(
            "result.tag_labels", "result.tag_scores", lambda label, score: F.struct(label.alias("label"), score.alias("score"))
        ).alias("tags"),
    ]
    for i, (name, _head) in enumerate(models.heads):
        columns += [F.col("result.head_labels")[i].alias(name), F.col("result.head_scores")[i].alias(f"{name}_score")]
    if settings.model.embedding:
        columns.append(F.col("result.embedding").alias("embedding"))
    versions = [F.lit(x) for pair in models.versions().items() for x in pair]
    columns += [
        F.lit(models.backbone.name).alias("model_name"),
        F.lit(models.backbone.version).alias("model_version"),
        F.create_map(*versions).alias("models"),
        F.current_timestamp().alias("processed_at"),
        F.lit(run_id).alias("run_id"),
    ]
    return result.select(*columns)


def output_schema(models: ModelBundle, settings: Settings) -> T.StructType:
    """The output's schema for these models: the fixed columns plus each head's and the embedding."""
    fields = list(OUTPUT_SCHEMA.fields)
    extra = []
    for name, _head in models.heads:
        extra += [T.StructField(name, T.StringType()), T.StructField(f"{name}_score", T.FloatType())]
    if settings.model.embedding:
        extra.append(T.StructField("embedding", T.ArrayType(T.FloatType())))
    return T.StructType(fields[:5] + extra + fields[5:])
