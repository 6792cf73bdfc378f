"""The SparkSession from the profile, and the check that it can reach the job's URIs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from pyspark.sql import SparkSession

from jobs.config import ConfigError, Settings


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


@contextlib.contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """A Spark SQL setting for the block, then back to what it was (unset if it was unset)."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


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
