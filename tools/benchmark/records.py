"""The benchmark's run records: one JSON object per run, and checks of their shape.

A run record is what the job writes with `--metrics-out` (JOB_KEYS, from the job itself:
stage timings are accumulated inside the UDF and returned to the driver) plus what the
runner measures from outside (RUNNER_KEYS: peak memory of the whole process tree, the
wall time around spark-submit, git commit, profile name).

Stage seconds: `fetch_s` and `decode_s` are summed over the fetch threads and tasks (like
CPU-seconds: with 8 threads they can exceed the wall time); `infer_s` is summed over
tasks (with 2 tasks in parallel, up to 2x the wall time). `read_manifest_s` and `write_s`
are driver-side. The predict_batch_udf reference cannot isolate every stage: it writes
null for what it cannot measure honestly.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

from jobs import metrics as M
from jobs.metrics import STARTUP_KEYS

RECORD_VERSION = 1

KIND_JOB = "job"  # the project's Spark job, one per profile
KIND_REFERENCE = "reference"  # the predict_batch_udf reference
KIND_CEILING = "ceiling"  # single-process ceiling
KIND_SCALING = "scaling"  # the best profile again on fewer cores: how throughput scales with cores

JOB_KEYS = (
    "run_id",
    "started_at",
    "profile",
    "settings",
    "manifest",
    "output",
    "model_name",
    "model_version",
    "rows_in",
    "ok",
    "error",
    "skipped",
    "wall_s",
    "startup",
    "startup_s",
    "steady_s",
    "images_per_s",
    "steady_images_per_s",
    "stages",
    "tasks",
    "model_builds",
)
# Required of every record (jobs.metrics defines them; records from before load_wait_s and task_s still read).
STAGE_KEYS = (M.READ_MANIFEST_S, M.FETCH_S, M.DECODE_S, M.INFER_S, M.WRITE_S, M.SPARK_IO_S, M.MODEL_LOAD_S)
RUNNER_KEYS = (
    "record_version",
    "bench_id",
    "name",
    "kind",
    "status",
    "exit_code",
    "git_commit",
    "peak_memory_mb",
    "bench_wall_s",
    "local_cores",
    "master",
    "command",
)
# Keys the reference may leave null (it cannot measure them honestly); the job may not.
NULLABLE_FOR_REFERENCE = (
    {"skipped", "tasks", "model_builds"} | {f"stages.{k}" for k in STAGE_KEYS} | {f"startup.{k}" for k in STARTUP_KEYS}
)
CEILING_KEYS = (
    "record_version",
    "bench_id",
    "kind",
    "name",
    "model_uri",
    "model_name",
    "model_version",
    "settings_from",
    "batch_size",
    "cores",
    "images",
    "decode",
    "infer",
    "combined",
    "pipeline",
    "ceiling_images_per_s",
)


def ok_runs(runs: list[dict], kind: str) -> list[dict]:
    """The runs of one kind that succeeded."""
    return [r for r in runs if r["kind"] == kind and r["status"] == "ok"]


def cores_of(run: dict) -> int:
    return int(run.get("local_cores") or 2)


def model_uri_of(run: dict) -> str | None:
    return (run.get("settings") or {}).get("model", {}).get("uri")


def same_ceiling(run: dict, ceilings: list[dict]) -> dict | None:
    """The ceiling measured with the run's model artifact on the run's number of cores."""
    uri, cores = model_uri_of(run), cores_of(run)
    return next((c for c in ceilings if c["model_uri"] == uri and c["cores"] == cores), None)


class RecordError(ValueError):
    """A run record lacks a key or has a value of the wrong kind; the message names it."""


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def run_record_problems(record: dict) -> list[str]:
    """Every problem with a job or reference run record (empty when it is well formed)."""
    problems = []
    for key in RUNNER_KEYS:
        if key not in record:
            problems.append(f"missing runner key {key!r}")
    kind = record.get("kind")
    if kind not in (KIND_JOB, KIND_REFERENCE, KIND_SCALING):
        problems.append(f"kind={kind!r}: expected {KIND_JOB!r}, {KIND_SCALING!r} or {KIND_REFERENCE!r}")
    if record.get("status") != "ok":
        # A failed run keeps the runner's keys and an error message; the job's keys may be absent.
        if record.get("status") != "failed" or not record.get("failure"):
            problems.append("status must be 'ok', or 'failed' with a 'failure' message")
        return problems
    nullable = NULLABLE_FOR_REFERENCE if kind == KIND_REFERENCE else set()
    for key in JOB_KEYS:
        if key not in record:
            problems.append(f"missing job key {key!r}")
    for group, keys in (("startup", STARTUP_KEYS), ("stages", STAGE_KEYS)):
        values = record.get(group)
        if not isinstance(values, dict):
            problems.append(f"{group}: expected an object, got {values!r}")
            continue
        for key in keys:
            if key not in values:
                problems.append(f"missing {group}.{key}")
            elif values[key] is None:
                if f"{group}.{key}" not in nullable:
                    problems.append(f"{group}.{key} is null")
            elif not _is_number(values[key]) or values[key] < 0:
                problems.append(f"{group}.{key}={values[key]!r}: expected a number >= 0")
    for key in ("rows_in", "ok", "error", "skipped", "tasks", "model_builds"):
        value = record.get(key)
        if value is None and key in nullable:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{key}={value!r}: expected an integer >= 0")
    for key in ("wall_s", "startup_s", "steady_s", "images_per_s", "steady_images_per_s", "bench_wall_s", "peak_memory_mb"):
        value = record.get(key)
        if not _is_number(value) or value < 0:
            problems.append(f"{key}={value!r}: expected a number >= 0")
    if not problems and record["ok"] + record["error"] + (record["skipped"] or 0) > record["rows_in"]:
        problems.append(f"ok + error + skipped > rows_in ({record['ok']} + {record['error']} + {record['skipped']})")
    if not isinstance(record.get("settings"), dict):
        problems.append("settings: expected an object (every effective setting)")
    return problems


def ceiling_record_problems(record: dict) -> list[str]:
    """Every problem with a ceiling record."""
    problems = [f"missing ceiling key {key!r}" for key in CEILING_KEYS if key not in record]
    if record.get("kind") != KIND_CEILING:
        problems.append(f"kind={record.get('kind')!r}: expected {KIND_CEILING!r}")
    value = record.get("ceiling_images_per_s")
    if not _is_number(value) or value <= 0:
        problems.append(f"ceiling_images_per_s={value!r}: expected a number > 0")
    return problems


def check(record: dict) -> dict:
    """Return record if it is well formed, else raise RecordError listing every problem."""
    problems = ceiling_record_problems(record) if record.get("kind") == KIND_CEILING else run_record_problems(record)
    if problems:
        raise RecordError(f"record {record.get('name', '?')!r}: " + "; ".join(problems))
    return record


def write_record(path: Path, record: dict) -> Path:
    """Validate and write one record as pretty JSON."""
    check(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def read_records(bench_dir: Path) -> tuple[list[dict], list[dict]]:
    """(run records sorted by name with the reference last, ceiling records) of one bench run."""
    runs, ceilings = [], []
    for path in sorted(bench_dir.glob("*.json")):
        if path.name == "bench.json":
            continue
        record = check(json.loads(path.read_text(encoding="utf-8")))
        (ceilings if record["kind"] == KIND_CEILING else runs).append(record)
    runs.sort(key=lambda r: (r["kind"] == KIND_REFERENCE, r["name"]))
    return runs, ceilings
