"""Kill the driver mid-run with SIGKILL, start again with the same arguments: nothing lost,
nothing duplicated, finished chunks not redone, and readers never saw half-written files."""

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

pytestmark = pytest.mark.e2e


def resume_command(manifest, output, metrics, model_dir):
    overrides = ["spark.master=local[2]", f"output.chunks={CHUNKS}", "spark.partitions=2", f"model.uri={model_dir}"]
    settings = load_settings(overrides=overrides)
    extra = ["--metrics-out", str(metrics)]
    return job_command(settings, manifest=manifest, output=output, overrides=overrides, extra=extra, spark_submit=SPARK_SUBMIT)


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

    restarted = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    resume_s = time.monotonic() - restarted
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(resumed)" in second.stdout

    record = json.loads(metrics.read_text())
    after = visible_rows(output)
    assert len(after) == record["rows_in"] == 48
    assert len({r["image_id"] for r in after}) == 48  # nothing lost, nothing duplicated
    assert record["ok"] + record["error"] + record["skipped"] == 48
    assert record["resumed"] is True and record["tagged"] == 48 - len(committed_ids)  # finished work not redone
    kept = {r["image_id"]: r["processed_at"] for r in before}
    assert all(kept[r["image_id"]] == r["processed_at"] for r in after if r["image_id"] in kept)
    assert len({r["run_id"] for r in after}) == 1
    assert read_state(output)["status"] == "done"
    print(
        f"\nkilled after {killed_after:.1f} s with {len(committed_ids)}/48 rows committed "
        f"({len(state['done_chunks'])}/{CHUNKS} chunks); resumed run {resume_s:.1f} s, tagged {record['tagged']}"
    )
