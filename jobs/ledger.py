"""The output dataset as a ledger of finished work, and the run state that makes runs resumable.

Every output row carries (image_id, model_version, models, run_id). An image is done for the
exact set of models it was tagged with: the backbone's tags, its embedding when the profile
wants one, and each head at its version on that backbone version. `plan_paths` works out per
image what is missing and how to get it: nothing (skip), only heads whose input, the embedding,
the output already holds (the stored-embedding path: no fetch, decode or backbone), or a full
pass. A run's state lives beside the data in OUTPUT/_image_tagger/ (readers of Parquet
datasets skip names starting with "_"):
which run is in flight for these arguments, how many chunks it has and which are committed.
Each write (a chunk, or a repair) goes through Spark's commit protocol into a folder of its own,
OUTPUT/_image_tagger/writes/<run_id>.<name>, never through OUTPUT/_temporary, which every writer of
OUTPUT would share; once committed its data files are moved into OUTPUT (`publish`), each move
whole, so a reader never sees half-written files. One run writes an output at a time (jobs.lease).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.infer import ModelBundle
from jobs.schema import PATH_FULL, PATH_STORED_EMBEDDING

STATE_DIR = "_image_tagger"
WRITES_DIR = f"{STATE_DIR}/writes"
LEASE_NAME = "lease"  # under STATE_DIR: jobs.lease's records (a folder, or lease.json on S3)


def run_key(manifest: str, output: str, model_set: str, incremental: bool) -> str:
    """Same arguments -> same key: how a restarted job finds the run it should resume."""
    text = json.dumps([manifest, output.rstrip("/"), model_set, incremental])
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
    counts: dict = field(default_factory=dict)  # jobs.driver.plan_pending's: rows_in, unique, after_ledger, stored_embedding


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
        """Delete uri/parts... (the whole output is never deleted: `clear` keeps the lease)."""
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.delete(target, True)

    def clear(self) -> None:
        """Delete the data and the runs' state, but not the lease (the run clearing it holds it)."""
        if not self.fs.exists(self.root):
            return
        for status in self.fs.listStatus(self.root):
            if status.getPath().getName() != STATE_DIR:
                self.fs.delete(status.getPath(), True)
        state_dir = self.path(STATE_DIR)
        for status in self.fs.listStatus(state_dir) if self.fs.exists(state_dir) else []:
            if not status.getPath().getName().startswith(LEASE_NAME):
                self.fs.delete(status.getPath(), True)

    def write_dir(self, run_id: str, name: str) -> str:
        """A private folder for one write of a run: its commit protocol's _temporary is its own."""
        return f"{self.uri}/{WRITES_DIR}/{run_id}.{name}"

    def publish(self, write_dir: str) -> int:
        """Move a committed write's data files into the output, then drop its folder; files moved.

        Each move is one rename (atomic on HDFS and local disks; a server-side copy on S3, where an
        object appears whole), run a few at a time: EMRFS renames S3 objects one copy each.
        """
        folder = self._path(write_dir)
        statuses = self.fs.listStatus(folder)
        files = [s.getPath() for s in statuses if s.isFile() and not s.getPath().getName().startswith(("_", "."))]

        def move(source) -> None:
            if not self.fs.rename(source, self.path(source.getName())):
                raise OSError(f"cannot move {source} into {self.uri}")

        with ThreadPoolExecutor(min(16, max(1, len(files))), thread_name_prefix="publish") as pool:
            list(pool.map(move, files))
        self.fs.delete(folder, True)
        return len(files)

    def replace_data(self, write_dir: str) -> int:
        """Replace the output's data files by a committed write's (a view rewritten whole)."""
        if self.fs.exists(self.root):
            for status in self.fs.listStatus(self.root):
                if not status.getPath().getName().startswith(("_", ".")):
                    self.fs.delete(status.getPath(), True)
        return self.publish(write_dir)

    def publish_leftovers(self, run_id: str) -> int:
        """A killed run's writes: publish those Spark committed (_SUCCESS), drop the others; files moved."""
        writes = self.path(WRITES_DIR)
        if not self.fs.exists(writes):
            return 0
        moved = 0
        for status in self.fs.listStatus(writes):
            folder = status.getPath()
            if not folder.getName().startswith(f"{run_id}."):
                continue
            if self.fs.exists(self._path(folder, "_SUCCESS")):
                moved += self.publish(folder.toString())
            else:
                self.fs.delete(folder, True)
        return moved

    def lease_files(self, folder_uri: str) -> HadoopFiles:
        return HadoopFiles(self, folder_uri)

    def rename(self, source: str, target: str, *, under: str) -> None:
        """Rename uri/under/source to uri/under/target (a folder: one metadata operation)."""
        if self.fs.exists(self.path(under, target)):
            self.fs.delete(self.path(under, target), True)
        if not self.fs.rename(self.path(under, source), self.path(under, target)):
            raise OSError(f"cannot rename {source} to {target} under {self.uri}/{under}")

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


class HadoopFiles:
    """jobs.lease's Files through Hadoop's FileSystem (hdfs://: create without overwrite is atomic)."""

    def __init__(self, store: OutputStore, folder_uri: str):
        self.store, self.folder, self.where = store, store._path(folder_uri), folder_uri

    def names(self) -> list[str]:
        if not self.store.fs.exists(self.folder):
            return []
        return [s.getPath().getName() for s in self.store.fs.listStatus(self.folder)]

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            stream = self.store.fs.create(self.store._path(self.folder, name), False)
        except Exception as exc:  # py4j wraps FileAlreadyExistsException
            if "FileAlreadyExists" in str(exc) or "already exists" in str(exc):
                return False
            raise
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()
        return True

    def read(self, name: str) -> bytes | None:
        target = self.store._path(self.folder, name)
        if not self.store.fs.exists(target):
            return None
        stream = self.store.fs.open(target)
        try:
            return bytes(self.store._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def delete(self, name: str) -> None:
        self.store.fs.delete(self.store._path(self.folder, name), False)


def finished_rows(spark: SparkSession, store: OutputStore) -> DataFrame | None:
    """Every row already in the output, or None. Runs differ in columns (heads come and go), so
    the schemas of all files are merged."""
    if not store.has_data():
        return None
    existing = spark.read.option("mergeSchema", "true").parquet(store.uri)
    if "run_id" not in existing.columns:
        existing = existing.withColumn("run_id", F.lit(None).cast("string"))
    return existing


def statuses_once(rows: DataFrame) -> tuple[Counter, int]:
    """Rows -> (count per status with each image_id once, by its latest row; rows beyond one per image).

    An image written twice (by an incident before the lease, or a write published twice) is one image.
    """
    latest = rows.groupBy("image_id").agg(
        F.max_by("status", F.struct("processed_at", "run_id")).alias("status"), F.count(F.lit(1)).alias("rows")
    )
    by_status = latest.groupBy("status").agg(F.count(F.lit(1)).alias("images"), F.sum("rows").alias("rows")).collect()
    counts = Counter({row["status"]: row["images"] for row in by_status})
    return counts, sum(row["rows"] - row["images"] for row in by_status)


def skip_done(pending: DataFrame, done_ids: DataFrame) -> DataFrame:
    return pending.join(done_ids.select("image_id").distinct(), "image_id", "left_anti")


def _present(ledger: DataFrame, column: str):
    return F.col(column).isNotNull() if column in ledger.columns else F.lit(False)


def coverage(ledger: DataFrame, models: ModelBundle) -> DataFrame:
    """Per image_id, what its ok rows for this backbone version hold: tags, a stored embedding
    (one with its norm, so heads on the raw embedding can use it too), each current head.

    A head's result counts only when it is this version's and its label agrees with the head's
    current min_score (present exactly when the score reaches it): a changed floor re-runs the
    head, on the stored embedding.
    """
    ok = ledger.where((F.col("status") == "ok") & (F.col("model_version") == models.backbone.version))
    held = []
    for i, (column, head) in enumerate(models.heads):
        version = F.element_at("models", head.name) == head.version if "models" in ledger.columns else F.lit(False)
        score = F.col(f"{column}_score") if f"{column}_score" in ledger.columns else F.lit(None).cast("float")
        floor_agrees = _present(ledger, column) == (score >= F.lit(models.min_score(i) or 0.0))
        held.append(F.max(F.coalesce(version & score.isNotNull() & floor_agrees, F.lit(False))).alias(f"held_{i}"))
    return ok.groupBy("image_id").agg(
        F.max(_present(ledger, "tags")).alias("has_tags"),
        F.max(_present(ledger, "embedding_norm")).alias("has_embedding"),
        *held,
    )


def plan_paths(rows: DataFrame, covered: DataFrame | None, models: ModelBundle, embedding: bool) -> DataFrame:
    """(image_id, url) -> (image_id, url, path, needed) for the rows with work left.

    path: "full" when the backbone must run (no tags for this backbone version, a wanted
    embedding missing, or heads missing and no stored embedding to run them on);
    "stored_embedding" when only heads are missing (needed: their column names); images with
    nothing missing are dropped. `covered` None (no earlier output): every row is full.
    """
    no_heads = F.array().cast("array<string>")
    if covered is None:
        return rows.select("image_id", "url", F.lit(PATH_FULL).alias("path"), no_heads.alias("needed"))
    joined = rows.join(covered, "image_id", "left")
    missing = (
        F.filter(
            F.array(
                *[
                    F.when(~F.coalesce(F.col(f"held_{i}"), F.lit(False)), F.lit(column))
                    for i, (column, _head) in enumerate(models.heads)
                ]
            ),
            lambda column: column.isNotNull(),
        )
        if models.heads
        else no_heads
    )
    has_tags, has_embedding = F.coalesce("has_tags", F.lit(False)), F.coalesce("has_embedding", F.lit(False))
    heads_missing = F.size(missing) > 0
    full = ~has_tags | (F.lit(embedding) & ~has_embedding) | (heads_missing & ~has_embedding)
    path = F.when(full, PATH_FULL).when(heads_missing, PATH_STORED_EMBEDDING)
    planned = joined.select("image_id", "url", path.alias("path"), F.when(full, no_heads).otherwise(missing).alias("needed"))
    return planned.where(F.col("path").isNotNull())


def stored_embeddings(ledger: DataFrame, models: ModelBundle, image_ids: DataFrame | None = None) -> DataFrame:
    """(image_id, embedding, embedding_norm): the latest embedding each image (of image_ids, when
    given) has for this backbone version."""
    rows = ledger.where(
        (F.col("status") == "ok") & (F.col("model_version") == models.backbone.version) & F.col("embedding_norm").isNotNull()
    )
    if image_ids is not None:
        rows = rows.join(image_ids, "image_id", "left_semi")
    latest = rows.groupBy("image_id").agg(F.max_by(F.struct("embedding", "embedding_norm"), "processed_at").alias("e"))
    return latest.select("image_id", "e.embedding", "e.embedding_norm")
