"""Kill the driver mid-run with SIGKILL and delete one committed part file by hand, start again with
the same arguments: refused while the killed run's lease has not expired, then it takes the lease
over, resumes, repairs the deleted rows and exits 0. Nothing lost, nothing duplicated, finished chunks
not redone, and readers never saw half-written files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from jobs.config import load_settings
from jobs.spark_args import job_command
from tools.sample_data import make_dataset

REPO = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
CHUNKS = 4
LEASE_TIMEOUT_S = 20  # long enough that the restart (Spark's start-up included) meets a live lease

pytestmark = pytest.mark.e2e


def resume_command(manifest, output, metrics, model_dir):
    overrides = [
        "spark.master=local[2]", f"output.chunks={CHUNKS}", "spark.partitions=2", f"model.uri={model_dir}",
        f"output.lease_timeout_s={LEASE_TIMEOUT_S}",
    ]  # fmt: skip
    settings = load_settings(overrides=overrides)
    extra = ["--metrics-out", str(metrics)]
    return job_command(settings, manifest=manifest, output=output, overrides=overrides, extra=extra, spark_submit=SPARK_SUBMIT)


def read_lease(output):
    records = sorted((output / "_image_tagger" / "lease").glob("*.json"))
    return json.loads(records[-1].read_text()) if records else None


def read_state(output):
    states = list((output / "_image_tagger").glob("run-*.json"))
    return json.loads(states[0].read_text()) if states else None


def visible_rows(output):
    # What any Parquet reader sees: pyarrow skips names starting with "_" or ".", as Spark does.
    return ds.dataset(str(output), format="parquet", exclude_invalid_files=False).to_table().to_pylist()


def test_sigkill_then_resume(tmp_path, model_dir):
    manifest = make_dataset(tmp_path / "images", 48, seed=3)
    output, metrics = tmp_path / "out", tmp_path / "metrics.json"
    command = resume_command(manifest, output, metrics, model_dir)

    started = time.monotonic()
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.monotonic() - started < 240:
            state = read_state(output)
            if state and state["status"] == "running" and len(state["done_chunks"]) >= 1:
                break
            assert first.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no chunk committed within 240 s")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver JVM, its Python driver and workers
        first.wait(30)
    killed_after = time.monotonic() - started

    state = read_state(output)
    assert state["status"] == "running" and 1 <= len(state["done_chunks"]) < CHUNKS
    staging = ds.dataset(str(output / "_image_tagger" / "staging" / state["run_id"]), format="parquet", partitioning="hive")
    staged = staging.to_table().to_pylist()
    committed_ids = {r["image_id"] for r in staged if r["chunk"] in state["done_chunks"]}
    before = visible_rows(output)
    # Only committed chunks are visible, and they are whole.
    assert {r["image_id"] for r in before} == committed_ids and len(before) == len(committed_ids)

    # A committed chunk loses a part file (deleted by hand, or by another job's cleanup).
    part = sorted(output.glob("part-*.parquet"))[0]
    lost_ids = {r["image_id"] for r in ds.dataset(str(part), format="parquet").to_table().to_pylist()}
    part.unlink()
    before = [r for r in before if r["image_id"] not in lost_ids]

    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lease = read_lease(output)
    assert refused.returncode == 4, refused.stderr[-3000:]
    said = refused.stdout + refused.stderr  # spark-submit passes the Python driver's stderr to its stdout
    assert f"is in use: run {state['run_id']}" in said and "expires at" in said
    assert time.time() < lease["heartbeat_at"] + LEASE_TIMEOUT_S, "the restart came after the lease expired"
    time.sleep(max(0.0, lease["heartbeat_at"] + LEASE_TIMEOUT_S - time.time()))

    restarted = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    resume_s = time.monotonic() - restarted
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(resumed)" in second.stdout and f"{len(lost_ids)} repaired" in second.stdout
    assert f"took over the lease of run {state['run_id']}" in second.stdout + second.stderr

    record = json.loads(metrics.read_text())
    after = visible_rows(output)
    assert len(after) == record["rows_in"] == 48
    assert len({r["image_id"] for r in after}) == 48  # nothing lost, nothing duplicated
    assert record["ok"] + record["error"] + record["skipped"] == 48
    assert record["lease_taken_over_from"] == state["run_id"] and record["repaired"] == len(lost_ids)
    # Finished work not redone: the uncommitted chunks, and the lost rows again.
    assert record["resumed"] is True and record["tagged"] == 48 - len(committed_ids) + len(lost_ids)
    kept = {r["image_id"]: r["processed_at"] for r in before}
    assert all(kept[r["image_id"]] == r["processed_at"] for r in after if r["image_id"] in kept)
    assert len({r["run_id"] for r in after}) == 1
    assert read_state(output)["status"] == "done"
    assert read_lease(output) == {"released": True}
    print(
        f"\nkilled after {killed_after:.1f} s with {len(committed_ids)}/48 rows committed "
        f"({len(state['done_chunks'])}/{CHUNKS} chunks), {len(lost_ids)} rows deleted; resumed run {resume_s:.1f} s, "
        f"tagged {record['tagged']}"
    )
