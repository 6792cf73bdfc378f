"""The output dataset as a ledger of finished work, and the run state that makes runs resumable.

Every output row carries (image_id, model_version, run_id). A run's state lives beside the
data in OUTPUT/_image_tagger/ (readers of Parquet datasets skip names starting with "_"):
which run is in flight for these arguments, how many chunks it has and which are committed.
Chunks are appended with Spark's commit protocol, so a reader sees a chunk's files only once
the chunk is committed, never half-written files.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

STATE_DIR = "_image_tagger"


def run_key(manifest: str, output: str, model_version: str, incremental: bool) -> str:
    """Same arguments -> same key: how a restarted job finds the run it should resume."""
    text = json.dumps([manifest, output.rstrip("/"), model_version, incremental])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_run_id(key: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + key[:8]


@dataclass
class RunState:
    run_id: str
    chunks: int
    status: str = "running"  # running | done
    staged: bool = False
    done_chunks: list[int] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # rows_in, duplicates, ledger_skipped


class OutputStore:
    """Small file operations on the output location through Hadoop's FileSystem (local, S3...)."""

    def __init__(self, spark: SparkSession, uri: str):
        self._jvm = spark.sparkContext._jvm
        self._path = self._jvm.org.apache.hadoop.fs.Path
        self.uri = uri.rstrip("/")
        self.root = self._path(self.uri)
        self.fs = self.root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def path(self, *parts: str):
        return self._path("/".join([self.uri, *parts]))

    def has_data(self) -> bool:
        if not self.fs.exists(self.root):
            return False
        return any(not s.getPath().getName().startswith(("_", ".")) for s in self.fs.listStatus(self.root))

    def delete(self, *parts: str) -> None:
        target = self.path(*parts) if parts else self.root
        if self.fs.exists(target):
            self.fs.delete(target, True)

    def read_state(self, key: str) -> RunState | None:
        target = self.path(STATE_DIR, f"run-{key}.json")
        if not self.fs.exists(target):
            return None
        stream = self.fs.open(target)
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        return RunState(**json.loads(text))

    def write_state(self, key: str, state: RunState) -> None:
        """Write then rename, so a kill mid-write leaves the previous state intact."""
        final = self.path(STATE_DIR, f"run-{key}.json")
        tmp = self.path(STATE_DIR, f".run-{key}.json.tmp")
        stream = self.fs.create(tmp, True)
        try:
            stream.write(bytearray(json.dumps(asdict(state), indent=1).encode()))
        finally:
            stream.close()
        if not self.fs.rename(tmp, final):
            self.fs.delete(final, False)
            self.fs.rename(tmp, final)


def finished_rows(spark: SparkSession, store: OutputStore) -> DataFrame | None:
    """(image_id, model_version, status, run_id) of every row already in the output, or None."""
    if not store.has_data():
        return None
    existing = spark.read.parquet(store.uri)
    run_id = F.col("run_id") if "run_id" in existing.columns else F.lit(None).cast("string")
    return existing.select("image_id", "model_version", "status", run_id.alias("run_id"))


def skip_done(pending: DataFrame, done_ids: DataFrame) -> DataFrame:
    return pending.join(done_ids.select("image_id").distinct(), "image_id", "left_anti")
