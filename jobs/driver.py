"""The driver of one tagging run: under the output's lease, plan the work against the ledger
(jobs.planning), tag chunk by chunk, account (and repair); the record and summary are built from the
RunResult it returns (jobs.run_record).

Accounting: rows in = ok + error + skipped, checked at the end from what was written.
- skipped = duplicate image_ids in the manifest (the first row of each image_id is tagged,
  the rest are counted, not tagged) + rows the ledger already has (`--incremental`: ok rows
  of earlier runs that hold every model of the current set, see jobs.ledger.plan_paths).
- ok rows come from two paths: full (fetch, decode, backbone, heads) and stored embedding
  (only the heads an image lacks, run on the embedding an earlier run stored).
- Resume: the same arguments find the unfinished run's state and continue at its first
  uncommitted chunk; rows that run already wrote are neither redone nor duplicated.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import metrics as M
from jobs.config import Settings
from jobs.infer import ModelBundle
from jobs.lease import Lease, holding, lease_store
from jobs.ledger import (
    OutputStore,
    RunState,
    finished_rows,
    new_run_id,
    run_key,
    skip_done,
    statuses_once,
    stored_embeddings,
)
from jobs.manifest import Manifest, open_manifest
from jobs.metrics import StageTimes
from jobs.pipeline import WarmUp, tag_dataframe
from jobs.planning import plan_pending
from jobs.progress import ProgressReporter, accumulator_counts, stage_tasks
from jobs.run_record import RunResult
from jobs.schema import PATH_STORED_EMBEDDING

log = logging.getLogger(__name__)
STAGING = "_image_tagger/staging"


class AccountingError(RuntimeError):
    """The output does not account for every input row."""


@dataclass(frozen=True)
class JobArgs:
    manifest: str
    output: str
    manifest_format: str = "auto"
    incremental: bool = False
    profile: str | None = None


def needs_backbone(counts: dict) -> bool:
    """Whether the plan (jobs.planning's counts) has rows on the full path, or only heads on stored embeddings."""
    return counts["after_ledger"] > counts.get("stored_embedding", 0)


class TaggingRun:
    """Drives one run; keeps the timings that end up in the metrics record."""

    def __init__(self, spark: SparkSession, settings: Settings, models: ModelBundle, args: JobArgs):
        self.spark, self.settings, self.models, self.args = spark, settings, models, args
        self.artifact = models.backbone
        self.store = OutputStore(spark, args.output)
        self.stage_times = spark.sparkContext.accumulator(Counter(), StageTimes())
        self.phases: Counter = Counter()
        self.marks: dict[str, float] = {}  # wall-clock moments of the start-up, for its breakdown
        self.listing = None  # what a listed manifest (prefix, inventory, folder) saw and skipped
        self.lease = None  # jobs.lease.HeldLease while execute runs
        self.repaired = 0  # images tagged again because a committed write's files were gone
        # Progress lines during the run, from the accumulator and Spark's status tracker.
        self.progress = ProgressReporter(
            accumulator_counts(self.stage_times), interval_s=settings.progress.interval_s, tasks=stage_tasks(spark.sparkContext)
        )
        model_set = "+".join(models.versions().values()) + f"|embedding={settings.model.embedding}|floors={models.min_scores}"
        self.key = run_key(args.manifest, args.output, model_set, args.incremental)

    def _warm_up(self) -> WarmUp | None:
        """Python workers started and their models built while the driver plans.

        Only for a plain run: with --incremental the plan may need no backbone at all (heads on
        stored embeddings, or nothing left to do), and building it would be waste. Needs
        spark.python.worker.reuse (Spark's default, true) to hand the workers on.
        """
        reuse = str(self.settings.spark.conf.get("spark.python.worker.reuse", "true")).lower() == "true"
        if not (self.settings.spark.warm_up and reuse) or self.args.incremental:
            return None
        warm_up = WarmUp(self.spark, self.models_bc, self.settings)
        warm_up.start()
        return warm_up

    def _record_warm_up(self, warm_up: WarmUp) -> None:
        warm_up.join(timeout=60)
        if not warm_up.workers:
            return
        self.marks["warm_up_at"] = warm_up.started_at
        self.marks["warm_ready_at"] = max(w["ready_at"] for w in warm_up.workers)
        starts = [w["ready_at"] - w["process_started_at"] for w in warm_up.workers if w["process_started_at"]]
        if starts:  # a fresh worker: fork, imports, models; a reused one: its age
            self.marks["warm_worker_start_s"] = round(max(starts), 3)
        # The models were built here, not in the tagging tasks: the record counts them.
        self.marks["warm_model_builds"] = sum(w["model_builds"] for w in warm_up.workers)
        self.marks["warm_model_load_s_max"] = max(w["model_load_s"] for w in warm_up.workers)

    def _start_or_resume(self) -> tuple[RunState, bool]:
        """Under the lease: resume the unfinished run for these arguments, or start one."""
        state = self.store.read_state(self.key)
        if state and state.status == "running":
            log.info("resuming run %s: chunks done %s of %d", state.run_id, state.done_chunks, state.chunks)
            self.lease.name_run(state.run_id)
            moved = self.store.publish_leftovers(state.run_id)  # killed between a write's commit and its publish
            if moved:
                log.info("published %d files the killed attempt had committed but not moved", moved)
            return state, True
        if not self.args.incremental:
            self.store.clear()  # a fresh, non-incremental run replaces the output (not the lease)
        state = RunState(run_id=new_run_id(self.key), chunks=self.settings.output.chunks)
        self.lease.name_run(state.run_id)
        self.store.write_state(self.key, state)
        return state, False

    def _write(self, pending: DataFrame, run_id: str, name: str, backbone_needed: bool = True) -> None:
        """Tag and write through a private folder, then publish its files into the output."""
        started = time.perf_counter()
        self.marks.setdefault("tagging_submitted_at", time.time())
        tagged = tag_dataframe(
            pending,
            self.models,
            self.settings,
            self.stage_times,
            run_id,
            backbone_needed=backbone_needed,
            models_bc=self.models_bc,
        )
        private = self.store.write_dir(run_id, name)
        tagged.write.mode("overwrite").parquet(private)
        ended = time.time()
        self.lease.check()  # a run that lost its lease makes nothing visible
        self.store.publish(private)
        self.phases[M.TAG_AND_WRITE_S] += time.perf_counter() - started
        # Driver-side commit (and publish) after the last task finished.
        self.phases[M.WRITE_S] += max(0.0, time.time() - self.stage_times.value.get(M.END_AT, ended))

    def execute(self) -> RunResult:
        """Holds the output's lease for the whole run: LeaseHeld before any work if another run has it."""
        store = lease_store(self.args.output, self.store.lease_files)
        timeout_s = self.settings.output.lease_timeout_s
        lease = Lease(store, output=self.args.output, timeout_s=timeout_s, manifest=self.args.manifest)
        with holding(lease, on_lost=self.spark.sparkContext.cancelAllJobs) as held:
            self.lease = held
            try:
                return self._execute()
            except Exception:
                held.check()  # a lost lease (whose cancel made the Spark job fail) is what to report
                raise

    def _execute(self) -> RunResult:
        # The manifest first: a bad or empty one exits 2 before a fresh run replaces any output.
        started = time.perf_counter()
        self.marks["execute_at"] = time.time()
        self.models_bc = self.spark.sparkContext.broadcast(self.models)
        warm_up = self._warm_up()
        opened = open_manifest(self.spark, self.args.manifest, self.args.manifest_format, self.settings.manifest)
        manifest, self.listing = opened.rows, opened.listing
        self.marks["manifest_read_at"] = time.time()
        state, resumed = self._start_or_resume()
        ledger = finished_rows(self.spark, self.store)
        self.phases[M.READ_MANIFEST_S] += time.perf_counter() - started
        plan = dict(
            models=self.models,
            embedding=self.settings.model.embedding,
            run_id=state.run_id,
            incremental=self.args.incremental,
            single_pass=self.settings.spark.single_pass,
            unique_ids=opened.ids_unique,
        )
        # Rows whose heads can run on an embedding the output holds get it joined to them.
        stored_possible = (
            self.args.incremental and ledger is not None and bool(self.models.heads) and "embedding_norm" in ledger.columns
        )
        staging = f"{self.store.uri}/{STAGING}/{state.run_id}"

        def planned(ledger: DataFrame) -> tuple[int, int]:
            """One pass over the plan with the embedding column pruned and no observations: (rows it tags,
            rows on the stored-embedding path). Without the latter the tagging pass need not read the
            embeddings at all (a no-op at 3M ledger rows read 590 MB with them, 14 MB without)."""
            probe, _ = plan_pending(manifest, ledger, partitions=0, observe=False, **{**plan, "single_pass": True})
            on_stored = F.col("path") == PATH_STORED_EMBEDDING
            found = probe.agg(F.count(F.lit(1)).alias("rows"), F.count(F.when(on_stored, 1)).alias("stored")).first()
            return found["rows"], found["stored"]

        def single_pass_rows(ledger: DataFrame | None, stored: int | None = None) -> tuple[DataFrame, Callable[[], dict]]:
            with_embeddings = stored_possible and (stored if stored is not None else planned(ledger)[1]) > 0
            pending, counts = plan_pending(manifest, ledger, partitions=self.settings.spark.partitions, **plan)
            if with_embeddings:  # this manifest's images' embeddings only, not the whole output's
                embeddings = stored_embeddings(ledger, self.models, manifest.select("image_id"))
                pending = self._spread(pending.join(embeddings, "image_id", "left"))
            return pending, counts

        def unwritten() -> DataFrame:
            """The plan's rows this run has not written (whatever happened to its committed files)."""
            written = finished_rows(self.spark, self.store)
            if state.chunks == 1:
                return single_pass_rows(written)[0]
            rows = self.spark.read.parquet(staging).drop("chunk")
            mine = written.where(F.col("run_id") == state.run_id) if written is not None else None
            return self._spread(skip_done(rows, mine) if mine is not None else rows)

        total = stored = None
        if state.chunks == 1:  # chunked runs learn their total from the staged plan
            # Where the ledger decides what is left, only a pass over the plan counts it: the probe's.
            if ledger is not None and (self.args.incremental or resumed) and self.settings.spark.single_pass:
                probe_started = time.perf_counter()
                total, stored = planned(ledger)
                self.phases[M.READ_MANIFEST_S] += time.perf_counter() - probe_started  # planning, as the ledger read
            pending, counts = single_pass_rows(ledger, stored)
            self.progress.total = total if total is not None else self._single_chunk_total(opened, counts, resumed)
        with self.progress:  # a line every progress.interval_s and at each chunk commit
            if state.chunks == 1:
                if total == 0:  # nothing left to tag: the plan's pass for its counts, and no empty file in the output
                    counted = time.perf_counter()
                    pending.count()
                    self.phases[M.TAG_AND_WRITE_S] += time.perf_counter() - counted
                else:
                    self._write(pending, state.run_id, "chunk-0")
                state.counts = counts()
                state.done_chunks = [0]
            else:
                self._run_chunks(manifest, ledger, plan, staging, state, resumed, stored_possible)

        if warm_up is not None:
            self._record_warm_up(warm_up)
        counts = self._account_and_repair(state, unwritten)
        if state.chunks > 1:
            self.store.delete(STAGING, state.run_id)
        self.lease.check()
        state.status = "done"
        self.store.write_state(self.key, state)
        return RunResult(
            run_id=state.run_id,
            resumed=resumed,
            counts=counts,
            phases=dict(self.phases),
            marks=dict(self.marks),
            task_times=dict(self.stage_times.value),
            progress=list(self.progress.points),
            listing=self.listing,
            lease_taken_over_from=self.lease.taken_over_from(),
            repaired=self.repaired,
        )

    def _single_chunk_total(self, manifest: Manifest, counts: Callable[[], dict], resumed: bool) -> int | None:
        """The images a single-chunk run tags where the ledger does not decide it (no output yet, or a
        fresh run that is not --incremental), from a count that costs no pass over the images; None where
        only the pass tells (resumed without spark.single_pass: the progress lines estimate from the tasks)."""
        if not self.settings.spark.single_pass:
            return None if resumed else counts()["after_ledger"]  # counted while planning
        if manifest.unique_ids is not None:
            return manifest.unique_ids  # the driver read the manifest: each image_id is tagged once
        if manifest.listing is not None:
            return manifest.listing.kept  # the listing counted what it kept: counting the rows would list again
        return manifest.rows.count()  # a pass over the manifest; an image_id it repeats is counted each time

    def _spread(self, rows: DataFrame) -> DataFrame:
        partitions = self.settings.spark.partitions
        return rows.repartition(partitions) if partitions else rows

    def _run_chunks(
        self, manifest: DataFrame, ledger: DataFrame | None, plan: dict, staging: str, state: RunState, resumed: bool,
        stored_possible: bool,
    ) -> None:  # fmt: skip
        if not state.staged:
            self.progress.phase = "staging the plan"
            self.progress.report()  # one line at once: staging may end before the first tick
            pending, counts = plan_pending(manifest, ledger, partitions=0, **plan)
            self._stage(pending, counts, ledger if stored_possible else None, staging, state)
            self.progress.phase = None
        # Rows to tag in this process: the plan's, less the chunks an earlier attempt committed
        # (chunks split the plan by a hash of image_id: about equal).
        left = state.chunks - len(state.done_chunks)
        self.progress.total = state.counts["after_ledger"] * left // state.chunks
        mine = ledger.where(F.col("run_id") == state.run_id) if resumed and ledger is not None else None
        backbone_needed = needs_backbone(state.counts)
        for chunk in range(state.chunks):
            if chunk in state.done_chunks:
                continue
            if not state.counts["after_ledger"]:  # nothing to tag: staging holds no file to read
                state.done_chunks.append(chunk)
                continue
            rows = self.spark.read.parquet(staging).where(F.col("chunk") == chunk).drop("chunk")
            if mine is not None:
                rows = skip_done(rows, mine)  # a kill during a chunk's commit left some of it
            self._write(self._spread(rows), state.run_id, f"chunk-{chunk}", backbone_needed)
            self.lease.check()
            state.done_chunks.append(chunk)
            self.store.write_state(self.key, state)
            self.progress.report(f"chunk {len(state.done_chunks)}/{state.chunks} committed")

    def _stage(
        self, pending: DataFrame, counts: Callable[[], dict], ledger: DataFrame | None, staging: str, state: RunState
    ) -> None:
        """Write the plan to staging, split into chunks; rows on the stored-embedding path carry their embedding.

        ledger: the output when some rows may take the stored-embedding path, else None.
        """
        started = time.perf_counter()
        chunked = pending.withColumn("chunk", F.pmod(F.xxhash64("image_id"), F.lit(state.chunks)))
        if ledger is None:
            chunked.write.mode("overwrite").partitionBy("chunk").parquet(staging)
            state.counts = counts()
        else:  # the plan first, then its stored-embedding rows' embeddings: one pass over the output
            plan_dir = f"{staging}-plan"
            chunked.write.mode("overwrite").partitionBy("chunk").parquet(plan_dir)
            state.counts = counts()
            if state.counts["stored_embedding"]:
                planned = self.spark.read.parquet(plan_dir)
                ids = planned.where(F.col("path") == PATH_STORED_EMBEDDING).select("image_id")
                planned = planned.join(stored_embeddings(ledger, self.models, ids), "image_id", "left")
                planned.write.mode("overwrite").partitionBy("chunk").parquet(staging)
                self.store.delete(STAGING, f"{state.run_id}-plan")
            else:
                self.store.rename(f"{state.run_id}-plan", state.run_id, under=STAGING)
        state.staged = True
        self.store.write_state(self.key, state)
        self.phases[M.STAGE_S] += time.perf_counter() - started

    def _account_and_repair(self, state: RunState, unwritten: Callable[[], DataFrame]) -> dict:
        """Account; when the output holds fewer of this run's images than its plan (files of a committed
        write lost: deleted by hand, or by another job's cleanup before the lease), tag the missing
        images again, once, and account again. A mismatch left after that is an AccountingError."""
        counts = self._account(state)
        if counts["ok"] + counts["error"] + counts["skipped"] < counts["rows_in"]:
            short = counts["rows_in"] - counts["ok"] - counts["error"] - counts["skipped"]
            log.warning(
                "run %s: %d planned images have no row in %s (files of a committed write are gone); tagging them again",
                state.run_id, short, self.args.output,
            )  # fmt: skip
            self._write(unwritten(), state.run_id, "repair", needs_backbone(state.counts))
            counts = self._account(state)
            self.repaired = short
            log.warning("run %s: repaired %d images", state.run_id, short)
        if counts["ok"] + counts["error"] + counts["skipped"] != counts["rows_in"]:
            raise AccountingError(
                f"accounting mismatch: rows in {counts['rows_in']} != ok {counts['ok']} + error {counts['error']} + "
                f"skipped {counts['skipped']} (run {state.run_id}, output {self.args.output})"
            )
        return counts

    def _account(self, state: RunState) -> dict:
        """The counts from what this run wrote, each image once (its latest row)."""
        started = time.perf_counter()
        by_status: Counter = Counter()
        written = finished_rows(self.spark, self.store)  # None: nothing was ever written (an empty manifest)
        if written is not None:
            by_status, twice = statuses_once(written.where(F.col("run_id") == state.run_id))
            if twice:
                log.warning("run %s: %d rows repeat an image this run already wrote: each image counts once", state.run_id, twice)
        rows_in = state.counts["rows_in"]
        duplicates = rows_in - state.counts["unique"]
        ledger_skipped = state.counts["unique"] - state.counts["after_ledger"]
        stored = state.counts.get("stored_embedding", 0)
        counts = {
            "rows_in": rows_in,
            "ok": by_status["ok"],
            "error": by_status["error"],
            "skipped": duplicates + ledger_skipped,
            "skipped_duplicates": duplicates,
            "skipped_done": ledger_skipped,
            "path_full": state.counts["after_ledger"] - stored,
            "path_stored_embedding": stored,
        }
        self.phases[M.ACCOUNT_S] += time.perf_counter() - started
        return counts

    def examples(self, run_id: str, limit: int = 8) -> list[dict]:
        """A few tagged rows for the summary: the first real photos and product photos by URL."""
        written = finished_rows(self.spark, self.store)  # runs differ in columns: all merged
        if written is None:
            return []
        ok = written.where((F.col("run_id") == run_id) & (F.col("status") == "ok"))
        sample = ok.orderBy(F.col("image_id").desc()).limit(limit)
        return [row.asDict(recursive=True) for row in sample.collect()]
