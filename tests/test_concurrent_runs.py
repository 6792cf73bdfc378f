"""Issue 21's incident, replayed: two `--incremental` runs started seconds apart on one output, with
overlapping manifests (images 0-199 and 100-299, output.chunks=3, conf/local.yaml). The second is
refused before any work (exit 4, naming the first); the first's output is complete; the second run
again tags only what is left, and a run after both has nothing left to do. No image lost, none twice."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from jobs.config import load_settings
from jobs.spark_args import job_command
from tools.sample_data import make_dataset

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def write_subset(manifest: Path, rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image_id", "url"])
        writer.writeheader()
        writer.writerows({"image_id": r["image_id"], "url": r["url"]} for r in rows)
    return path


def command(manifest: Path, output: Path, metrics: Path, model_dir: Path) -> list[str]:
    overrides = ["output.chunks=3", f"model.uri={model_dir}"]
    settings = load_settings(REPO / "conf" / "local.yaml", overrides)
    extra = ["--incremental", "--profile", str(REPO / "conf" / "local.yaml"), "--metrics-out", str(metrics)]
    return job_command(settings, manifest=manifest, output=output, overrides=overrides, extra=extra, spark_submit=SPARK_SUBMIT)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def lease_holder(output: Path) -> dict | None:
    records = sorted((output / "_image_tagger" / "lease").glob("*.json"))
    record = json.loads(records[-1].read_text()) if records else None
    return record if record and record.get("run_id") else None


def test_two_runs_on_one_output(tmp_path, model_dir):
    images = make_dataset(tmp_path / "images", 300, seed=21)
    with images.open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image_id"])
    m1 = write_subset(images, rows[0:200], tmp_path / "m1.csv")
    m2 = write_subset(images, rows[100:300], tmp_path / "m2.csv")
    output = tmp_path / "out"

    first = subprocess.Popen(
        command(m1, output, tmp_path / "first.json", model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        started = time.monotonic()
        while (holder := lease_holder(output)) is None:
            assert first.poll() is None, "the first run ended before it took the lease"
            assert time.monotonic() - started < 120, "the first run took no lease within 120 s"
            time.sleep(0.1)
        second = run(command(m2, output, tmp_path / "second.json", model_dir))
        assert first.poll() is None, "the first run had ended: the second run met no live lease"
        _, err = first.communicate(timeout=300)
    finally:
        first.kill() if first.poll() is None else None
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 4, second.stderr[-3000:]
    said = second.stdout + second.stderr  # spark-submit passes the Python driver's stderr to its stdout
    assert f"is in use: run {holder['run_id']}" in said and f"manifest {m1}" in said
    assert not (tmp_path / "second.json").exists()  # refused before any work
    ids = [r["image_id"] for r in ds.dataset(str(output), format="parquet").to_table(columns=["image_id"]).to_pylist()]
    assert sorted(ids) == [r["image_id"] for r in rows[0:200]]  # the first run's output is whole, once each

    again = run(command(m2, output, tmp_path / "again.json", model_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "again.json").read_text())
    assert (record["rows_in"], record["skipped_done"], record["ok"] + record["error"]) == (200, 100, 100)

    for manifest in (m1, m2):  # after both: nothing left to do
        last = run(command(manifest, output, tmp_path / "last.json", model_dir))
        assert last.returncode == 0, last.stderr[-3000:]
        record = json.loads((tmp_path / "last.json").read_text())
        assert (record["skipped_done"], record["ok"], record["error"], record["repaired"]) == (200, 0, 0, 0)

    table = ds.dataset(str(output), format="parquet").to_table(columns=["image_id", "status"]).to_pylist()
    assert sorted(r["image_id"] for r in table) == [r["image_id"] for r in rows]  # 300 images, each once
    assert all(r["status"] == "ok" for r in table)
    assert not (output / "_temporary").exists()  # writes go through private folders
