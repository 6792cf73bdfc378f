"""make rehearse-emr: the cluster run rehearsed on this machine (unit tests of its pieces, and the run)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.scripts import rehearse_emr
from tests.infra.infra_support import expected_step_args

REPO = Path(__file__).resolve().parent.parent


def test_the_step_runs_unchanged_but_for_the_cluster_manager():
    step = expected_step_args(manifest="m.csv", output="out", profile="emr", backbone="s3://art/models/efficientnet_lite0")
    command = rehearse_emr.step_command(step, Path("/spark"), "spark://127.0.0.1:7077")
    assert command == ["/spark/bin/spark-submit", "--master", "spark://127.0.0.1:7077", *step[3:]]
    with pytest.raises(rehearse_emr.RehearsalError, match="expected spark-submit --master yarn"):
        rehearse_emr.step_command(["spark-submit", "--master", "local[2]", "x.py"], Path("/spark"), "spark://h:1")


def test_the_clusters_executor_sizes_are_scaled_to_one_core_workers():
    cluster = {
        "spark.executor.cores": "4",
        "spark.executor.memory": "6g",
        "spark.dynamicAllocation.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
    }
    assert rehearse_emr.scale_down(cluster) == [
        "spark.conf.spark.executor.cores=1",
        "spark.conf.spark.executor.memory=1g",
        "spark.conf.spark.dynamicAllocation.enabled=false",
    ]


def test_a_node_runs_commands_with_its_own_install_dir():
    node = rehearse_emr.Node("core-1", Path("/work/nodes/core-1"))
    argv = node.argv(["python", "-V"])
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-4:] == ["/work/nodes/core-1/opt-image-tagger", "/opt/image-tagger", "python", "-V"]


def test_the_jobs_summary_is_read_back():
    stdout = (
        "rows in     12\nok          9\nerror       2\nskipped     1 (1 duplicate image_id, 0 already tagged)\n"
        "wall        9.0 s, 1.3 images/s end to end; start-up 5.0 s, then 3.0 images/s steady\n"
    )
    assert rehearse_emr.summary_counts(stdout) == {"rows_in": 12, "ok": 9, "error": 2, "skipped": 1, "images_per_s": 1.3}


@pytest.mark.rehearsal
def test_make_rehearse_emr(tmp_path):
    """The whole rehearsal: deploy, bootstrap 3 nodes, the submitted step through a lost spot node and a lost driver."""
    record_file = tmp_path / "rehearsal.json"
    result = subprocess.run(
        ["make", "--no-print-directory", "rehearse-emr", f"REHEARSE_ARGS=--record {record_file}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "rehearse-emr: Spark 3.5.6" in result.stdout and "PASSED" in result.stdout
    record = json.loads(record_file.read_text())
    rows = record["images"]
    spot, driver = record["spot"], record["driver"]
    # The spot node was lost mid-task, and the step still wrote every row exactly once.
    assert spot["executor_lost_logged"] and spot["tasks_in_flight"] >= 1
    assert spot["rows_in"] == rows and spot["ok"] + spot["error"] + spot["skipped"] == rows and spot["error"] == 2
    # The driver died with some chunks committed; the re-submitted step finished the same run.
    assert 1 <= driver["chunks_done_at_kill"] < driver["chunks"] and 0 < driver["rows_committed_at_kill"] < rows
    assert driver["rows_in"] == rows and driver["ok"] + driver["error"] + driver["skipped"] == rows
    # The step ran the EMR profile's installed job with every model from the artifacts bucket.
    step = record["step_args"]
    assert step[:3] == ["spark-submit", "--master", "yarn"] and step[5] == "/opt/image-tagger/jobs/tag_images.py"
    assert step[step.index("--profile") + 1] == "/opt/image-tagger/conf/emr.yaml"
    assert any(arg.startswith("model.uri=s3://") for arg in step)
    print("\n" + result.stdout.strip().splitlines()[-1])
