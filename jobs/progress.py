"""Progress during a run: one line at a steady interval and at every chunk commit.

    progress  chunk 3/64 committed, 1200/5000 images (24%), ok 1190, error 10, 41.3 images/s, tasks 12/40, ETA 1m32s

Everything comes from the running job's own counters, never from re-reading the output:
- done / ok / error: the StageTimes accumulator (jobs.metrics). Spark merges a task's
  accumulator updates on the driver when the task ends, so these count finished tasks only.
- tasks c/n: SparkContext.statusTracker(), the newest active stage of the running jobs (the
  tagging stage during the tagging pass); finer than the images when tasks are long.
- total: the images this run tags, from a count that costs no pass over the images (jobs.driver):
  chunked runs: the staged plan's count; a single chunk: the distinct image_ids of a manifest the
  driver read, the manifest's rows when Spark read it, the plan's count without spark.single_pass;
  where the output decides what is left (--incremental, resumed), one pass over the plan with the
  embedding column pruned before the tagging (the probe that also decides whether to join embeddings).
  The ETA is then (total - done) / rate from the first line with a rate. Without a total (resumed
  without spark.single_pass) it comes from the share of the tagging stage's tasks done.

The arithmetic (rate over a sliding window, ETA, formatting) is pure functions; the reporter
thread takes its counters and clock as arguments, so both test without Spark.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

WINDOW_INTERVALS = 10  # images/s is measured over the last 10 intervals (5 minutes at the default 30 s)


@dataclass(frozen=True)
class Counts:
    """Rows finished so far (ok + error), from the job's counters."""

    done: int
    ok: int
    error: int


@dataclass(frozen=True)
class Tasks:
    """One Spark stage's task progress."""

    stage_id: int
    completed: int
    total: int


# --- pure arithmetic -------------------------------------------------------------------------


def window_rate(points: list[tuple[float, int]], now: float, window_s: float) -> float:
    """Images/s over the last window_s seconds of (time, done) points, oldest first; 0.0 without a span.

    The rate runs from the newest point at or before the window's start (or the oldest point)
    to the newest point, so a window always covers at least window_s once the run is that old.
    """
    if len(points) < 2:
        return 0.0
    start = 0
    for i, (at, _done) in enumerate(points):
        if at <= now - window_s:
            start = i
    (t0, d0), (t1, d1) = points[start], points[-1]
    return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def eta_s(done: int, total: int | None, rate: float) -> float | None:
    """Seconds until done reaches total at rate; None when the total or the rate is unknown (0 once done)."""
    if total is None:
        return None
    if done >= total:
        return 0.0
    return (total - done) / rate if rate > 0 else None


def eta_from_tasks(elapsed_s: float, tasks: Tasks | None) -> float | None:
    """Seconds left in a stage, from the share of its tasks done in elapsed_s; None before the first ends."""
    if tasks is None or tasks.completed <= 0 or tasks.total <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s * max(tasks.total - tasks.completed, 0) / tasks.completed


def format_duration(seconds: float) -> str:
    """45 -> '45s', 92 -> '1m32s', 7500 -> '2h05m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_line(
    counts: Counts,
    total: int | None,
    rate: float,
    eta: float | None,
    *,
    event: str | None = None,
    tasks: Tasks | None = None,
    phase: str | None = None,
) -> str:
    """`progress  [phase, ][event, ]done/total images (pct), ok N, error N, R images/s[, tasks c/n], ETA ...`."""
    if total is not None:  # 0: nothing left to tag (an --incremental run over a tagged catalogue)
        done = f"{counts.done}/{total} images ({min(counts.done / total, 1.0) if total else 1.0:.0%})"
    else:
        done = f"{counts.done}/? images"
    parts = [done, f"ok {counts.ok}", f"error {counts.error}", f"{rate:.1f} images/s"]
    if tasks is not None:
        parts.append(f"tasks {tasks.completed}/{tasks.total}")
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA unknown")
    return "progress  " + "".join(f"{label}, " for label in (phase, event) if label) + ", ".join(parts)


# --- counters of a running Spark job ---------------------------------------------------------


def accumulator_counts(stage_times) -> Callable[[], Counts]:
    """Counts from the StageTimes accumulator: images of full-path rows + stored-embedding rows."""

    def read() -> Counts:
        value = stage_times.value  # a Counter the accumulator server thread updates in place: .get only
        done = int(value.get("images", 0)) + int(value.get("stored_embedding_rows", 0))
        return Counts(done, int(value.get("rows_ok", 0)), int(value.get("rows_error", 0)))

    return read


def stage_tasks(spark_context) -> Callable[[], Tasks | None]:
    """The newest stage of the running jobs (in a write: the stage that tags), from the status tracker."""

    def read() -> Tasks | None:
        tracker = spark_context.statusTracker()
        newest = None
        for job_id in tracker.getActiveJobsIds():
            job = tracker.getJobInfo(job_id)
            if job and job.stageIds:
                newest = max(newest or -1, max(job.stageIds))
        info = tracker.getStageInfo(newest) if newest is not None else None
        return Tasks(info.stageId, info.numCompletedTasks, info.numTasks) if info else None

    return read


# --- the reporter ----------------------------------------------------------------------------


class ProgressReporter:
    """A daemon thread that logs a progress line every interval_s; report() logs one at once (a chunk commit).

    Use as a context manager: the thread stops (with a last line) also when the run fails.
    `points` keeps the time series: {at (time.time()), images_done, ok, error, images_per_s}.
    `phase` (e.g. "staging the plan") labels the lines while the job does something other than tagging.
    """

    def __init__(
        self,
        counts: Callable[[], Counts],
        *,
        interval_s: float,
        total: int | None = None,
        tasks: Callable[[], Tasks | None] | None = None,
        window_s: float | None = None,
        clock: Callable[[], float] = time.time,
        emit: Callable[[str], None] | None = None,
    ):
        self.counts, self.tasks, self.total = counts, tasks, total
        self.phase: str | None = None
        self.interval_s = interval_s
        self.window_s = window_s if window_s is not None else WINDOW_INTERVALS * interval_s
        self.clock = clock
        self.emit = emit or (lambda line: log.info("%s", line))
        self.points: list[dict] = []
        self.lines: list[str] = []
        self._stage_seen: dict[int, float] = {}  # stage id -> when first seen, for the ETA from tasks
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, event: str | None = None) -> str:
        """Read the counters, keep a point, log one line and return it."""
        with self._lock:
            now = self.clock()
            counts = self.counts()
            tasks = self._read_tasks()
            self.points.append({"at": now, "images_done": counts.done, "ok": counts.ok, "error": counts.error})
            rate = window_rate([(p["at"], p["images_done"]) for p in self.points], now, self.window_s)
            self.points[-1]["images_per_s"] = rate
            eta = eta_s(counts.done, self.total, rate)
            if self.total is None and tasks is not None:
                eta = eta_from_tasks(now - self._stage_seen[tasks.stage_id], tasks)
            line = format_line(counts, self.total, rate, eta, event=event, tasks=tasks, phase=self.phase)
            self.lines.append(line)
        self.emit(line)
        return line

    def _read_tasks(self) -> Tasks | None:
        if self.tasks is None:
            return None
        try:
            tasks = self.tasks()
        except Exception as exc:  # the status tracker is a nicety: never let it stop the run
            log.debug("no task progress: %s", exc)
            return None
        if tasks is not None:
            self._stage_seen.setdefault(tasks.stage_id, self.clock())
        return tasks

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.report()
            except Exception as exc:  # a progress line must never fail the job
                log.warning("progress: %s", exc)

    def start(self) -> ProgressReporter:
        self.report("started")
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def stop(self, event: str = "tagging finished") -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.report(event)

    def __enter__(self) -> ProgressReporter:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop("tagging failed" if exc_type else "tagging finished")
        except Exception:
            if exc_type is None:
                raise
            log.warning("progress: could not report the failure", exc_info=True)  # keep the run's own error
