"""The metrics contract of a run: per-task timing keys, how the driver merges them, the record.

Each tagging task adds a Counter of the keys below to a StageTimes accumulator; the driver turns
the merged value into the run's metrics record (`run_record`, written by --metrics-out). The
benchmark's predict_batch_udf reference writes its record with the same function, and
tools/benchmark/records.py checks both against the same keys.
"""

from __future__ import annotations

import time
from collections import Counter

from pyspark.accumulators import AccumulatorParam

# --- per-task timings: durations add up over tasks (and fetch threads) --------------------------
FETCH_S = "fetch_s"  # downloads, summed over the fetch threads
DECODE_S = "decode_s"  # decode + resize, summed over the fetch threads
INFER_S = "infer_s"  # backbone and heads
SPARK_IO_S = "spark_io_s"  # waiting for Spark's input batches and handing results back
LOAD_WAIT_S = "load_wait_s"  # the model idle, waiting for a batch's images to load
MODEL_LOAD_S = "model_load_s"  # building (or finding) the worker's models, per task
TASK_S = "task_s"  # the UDF's whole time in a task
STORED_EMBEDDING_S = "stored_embedding_s"  # heads on stored embeddings (no image)
# --- counts ---------------------------------------------------------------------------------------
TASKS, IMAGES, MODEL_BUILDS = "tasks", "images", "model_builds"
ROWS_OK, ROWS_ERROR, STORED_EMBEDDING_ROWS = "rows_ok", "rows_error", "stored_embedding_rows"
# --- extremes: wall-clock moments (keep the earliest _min / the latest _max) and worst cases -----
MODEL_LOAD_S_MAX = "model_load_s_max"
WORKER_START_AT = "worker_start_at_min"  # a Python worker process started
TASK_START_AT = "task_start_at_min"  # a tagging task's UDF started
READY_AT = "ready_at_min"  # a task's models ready: the steady window opens
FIRST_BATCH_AT = "first_batch_at_min"  # a task's first batch handed back
END_AT = "end_at_max"  # a task's UDF ended: the steady window closes
# --- lists: one entry per task, concatenated -----------------------------------------------------
TASK_TIMELINE = "task_timeline"

# The record's stage timings that come from the tasks (the driver adds its own phases).
TASK_STAGES = (FETCH_S, DECODE_S, INFER_S, SPARK_IO_S, LOAD_WAIT_S, MODEL_LOAD_S, TASK_S)
# --- the driver's phases (seconds), beside the task stages in the record's `stages` --------------
READ_MANIFEST_S = "read_manifest_s"  # manifest opened, run state, ledger read; a single chunk's plan counted
STAGE_S = "stage_s"  # the plan (and stored embeddings) written to staging: chunked runs
TAG_AND_WRITE_S = "tag_and_write_s"  # every tagging pass, its write and publish (a pass with nothing to tag: no write)
WRITE_S = "write_s"  # the driver's commit and publish after the last task of a pass ended
ACCOUNT_S = "account_s"  # counting what the run wrote (and a repair's recount)
DRIVER_PHASES = (READ_MANIFEST_S, WRITE_S, STAGE_S, TAG_AND_WRITE_S, ACCOUNT_S)
STARTUP_KEYS = ("jvm_to_driver_s", "session_s", "first_model_ready_s", "model_load_s_max")


class StageTimes(AccumulatorParam):
    """Merges per-task timings on the driver: keys ending in _min/_max keep the extreme, lists (the
    per-task timeline) concatenate, others add up."""

    def zero(self, value):
        return Counter()

    def addInPlace(self, value1, value2):
        for key, value in value2.items():
            if key.endswith("_min") and key in value1:
                value1[key] = min(value1[key], value)
            elif key.endswith("_max") and key in value1:
                value1[key] = max(value1[key], value)
            elif isinstance(value, list):
                value1[key] = [*value1.get(key, []), *value]
            else:
                value1[key] += value
        return value1


def jvm_started_at(spark) -> float:
    """Wall-clock start of the driver JVM (spark-submit's): where a run's clock starts."""
    return spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getStartTime() / 1000.0


def run_record(
    times: dict,
    *,
    jvm_started: float,
    main_started: float,
    session_s: float,
    rows_in: int,
    driver_stages: dict,
    breakdown: dict | None = None,
    ended: float | None = None,
) -> dict:
    """The timing part of a metrics record, from the merged task timings and the driver's phases.

    Steady = images / (first model ready -> last task's end); end to end = rows / (JVM start -> now).
    driver_stages: the driver's own phases (seconds), and None for a task stage the run cannot separate.
    """
    ended = ended or time.time()
    ready = times.get(READY_AT, ended)
    steady_s = max(times.get(END_AT, ended) - ready, 1e-9)
    wall_s = ended - jvm_started
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(jvm_started)),
        "wall_s": wall_s,
        "driver_wall_s": ended - main_started,
        "startup": {
            "jvm_to_driver_s": main_started - jvm_started,
            "session_s": session_s,
            "first_model_ready_s": ready - jvm_started,
            "model_load_s_max": times.get(MODEL_LOAD_S_MAX, 0.0),
            "breakdown": breakdown,
        },
        "startup_s": ready - jvm_started,
        "steady_s": steady_s,
        "images_per_s": rows_in / wall_s if wall_s else 0.0,
        "steady_images_per_s": times.get(IMAGES, 0) / steady_s,
        "tagged": int(times.get(IMAGES, 0)),
        "stages": {**{key: times.get(key, 0.0) for key in TASK_STAGES}, **driver_stages},
        "tasks": int(times.get(TASKS, 0)),
        "model_builds": int(times.get(MODEL_BUILDS, 0)),
        # Each task's start, model ready, first input/output, end (s from the JVM's start), images, worker.
        "task_timeline": [
            {
                **{k: round(t[k] - jvm_started, 3) for k in ("start", "ready", "first_input", "first_output", "end") if k in t},
                "images": t["images"],
                "worker": t["worker"],
            }
            for t in sorted(times.get(TASK_TIMELINE, []), key=lambda t: t["start"])
        ],
    }
