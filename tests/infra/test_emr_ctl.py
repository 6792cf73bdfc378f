"""Unit tests of the cluster control scripts (no AWS, no Terraform)."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import emr_ctl
import package
import pytest

FACTS = emr_ctl.ClusterFacts(
    cluster_id="j-TEST",
    region="eu-west-1",
    data_bucket="data-bkt",
    model_uri="s3://art-bkt/models/efficientnet_lite0",
    install_dir="/opt/image-tagger",
    spot_group_id="ig-SPOT",
    on_demand_group_id="ig-OD",
)


class FakeClock:
    """Monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeEmr:
    """The few EMR calls emr_ctl makes, answering from scripted states."""

    def __init__(self, step_states: list[str] | None = None, spot_running: list[int] | None = None) -> None:
        self.step_states = list(step_states or [])
        self.spot_running = list(spot_running or [])
        self.on_demand = 0
        self.modified: list[dict[str, Any]] = []

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        state = self.step_states.pop(0) if len(self.step_states) > 1 else self.step_states[0]
        status: dict[str, Any] = {"State": state}
        if state == "FAILED":
            status["FailureDetails"] = {"Reason": "boom", "LogFile": "s3://logs/x"}
        return {"Step": {"Id": StepId, "Status": status}}

    def get_paginator(self, name: str) -> FakeEmr:
        assert name == "list_instance_groups"
        return self

    def paginate(self, ClusterId: str) -> list[dict[str, Any]]:
        running = self.spot_running.pop(0) if len(self.spot_running) > 1 else self.spot_running[0]
        groups = [
            {"Id": "ig-SPOT", "RequestedInstanceCount": 4, "RunningInstanceCount": running},
            {"Id": "ig-OD", "RequestedInstanceCount": self.on_demand, "RunningInstanceCount": self.on_demand},
        ]
        return [{"InstanceGroups": groups}]

    def modify_instance_groups(self, ClusterId: str, InstanceGroups: list[dict[str, Any]]) -> None:
        self.modified.extend(InstanceGroups)
        self.on_demand = InstanceGroups[0]["InstanceCount"]


def test_spark_submit_args_run_the_installed_job_with_profile_and_model() -> None:
    args = emr_ctl.spark_submit_args(
        FACTS, manifest="s3://d/m.csv", output="s3://d/out/", profile="emr", overrides=["inference.batch_size=32"]
    )
    assert args == [
        "spark-submit",
        "--master",
        "yarn",
        "--deploy-mode",
        "client",
        "/opt/image-tagger/jobs/tag_images.py",
        "--manifest",
        "s3://d/m.csv",
        "--output",
        "s3://d/out/",
        "--profile",
        "/opt/image-tagger/conf/emr.yaml",
        "--set",
        "model.uri=s3://art-bkt/models/efficientnet_lite0",
        "--set",
        "inference.batch_size=32",
    ]


def test_spark_submit_args_reject_override_without_equals() -> None:
    with pytest.raises(emr_ctl.CtlError, match="key=value"):
        emr_ctl.spark_submit_args(FACTS, manifest="m", output="o", profile="emr", overrides=["oops"])


def test_step_definition_uses_command_runner() -> None:
    step = emr_ctl.step_definition("n", ["spark-submit", "x.py"])
    assert step["HadoopJarStep"] == {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}
    assert step["ActionOnFailure"] == "CONTINUE"


def test_default_output_uri_is_one_prefix_per_run() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert emr_ctl.default_output_uri("b", "emr", now) == "s3://b/outputs/emr/20260102T030405Z/"


def test_wait_for_step_polls_with_sleep_until_completed() -> None:
    clock, lines = FakeClock(), []
    client = FakeEmr(step_states=["PENDING", "RUNNING", "RUNNING", "COMPLETED"])
    step = emr_ctl.wait_for_step(
        client, "j-TEST", "s-1", poll_s=10, timeout_s=100, clock=clock, sleep=clock.sleep, echo=lines.append
    )
    assert step["Status"]["State"] == "COMPLETED"
    assert clock.sleeps == [10, 10, 10]
    assert [line.split()[-1] for line in lines] == ["PENDING", "RUNNING", "RUNNING", "COMPLETED"]


def test_wait_for_step_returns_failed_step() -> None:
    clock = FakeClock()
    step = emr_ctl.wait_for_step(
        FakeEmr(["RUNNING", "FAILED"]), "j", "s", poll_s=1, timeout_s=10, clock=clock, sleep=clock.sleep, echo=print
    )
    assert step["Status"]["State"] == "FAILED"


def test_wait_for_step_times_out_without_oversleeping() -> None:
    clock = FakeClock()
    with pytest.raises(emr_ctl.WaitTimeout, match="still RUNNING after 25s"):
        emr_ctl.wait_for_step(
            FakeEmr(["RUNNING"]), "j", "s", poll_s=10, timeout_s=25, clock=clock, sleep=clock.sleep, echo=lambda _: None
        )
    assert clock.sleeps == [10, 10, 5]


@pytest.mark.parametrize("poll_s,timeout_s", [(0, 10), (1, 0)])
def test_wait_for_step_rejects_busy_loops(poll_s: float, timeout_s: float) -> None:
    with pytest.raises(ValueError):
        emr_ctl.wait_for_step(FakeEmr(["RUNNING"]), "j", "s", poll_s=poll_s, timeout_s=timeout_s)


def test_fallback_does_nothing_when_spot_arrives() -> None:
    clock, client = FakeClock(), FakeEmr(spot_running=[1, 3, 4])
    requested = emr_ctl.ensure_task_capacity(
        client, "j", "ig-SPOT", "ig-OD", poll_s=30, timeout_s=300, clock=clock, sleep=clock.sleep, echo=lambda _: None
    )
    assert requested == 0 and client.modified == [] and clock.sleeps == [30, 30]


def test_fallback_requests_on_demand_for_missing_spot_nodes() -> None:
    clock, client = FakeClock(), FakeEmr(spot_running=[1])
    requested = emr_ctl.ensure_task_capacity(
        client, "j", "ig-SPOT", "ig-OD", poll_s=30, timeout_s=60, clock=clock, sleep=clock.sleep, echo=lambda _: None
    )
    assert requested == 3
    assert client.modified == [{"InstanceGroupId": "ig-OD", "InstanceCount": 3}]


def test_submit_without_terraform_fails_clearly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = emr_ctl.main(["--tf-dir", str(tmp_path), "--terraform", str(tmp_path / "nope"), "submit", "--manifest", "m"])
    assert code == emr_ctl.EXIT_USAGE
    assert "terraform not found" in caplog.text


def _tree(root: Path) -> Path:
    for rel, text in {
        "jobs/__init__.py": "",
        "jobs/tag_images.py": "print('job')\n",
        "jobs/__pycache__/tag_images.cpython-311.pyc": "x",
        "model/__init__.py": "",
        "model/artifacts/efficientnet_lite0/model.keras": "weights",
        "conf/emr.yaml": "spark: {}\n",
        "requirements.txt": "pyyaml==6.0.3\n",
        "setup.py": "from setuptools import setup\nsetup()\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_package_is_reproducible_and_leaves_out_artifacts(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    first = package.build(root, tmp_path / "a.tar.gz").read_bytes()
    (root / "jobs" / "tag_images.py").touch()  # a new mtime must not change the package
    second = package.build(root, tmp_path / "b.tar.gz").read_bytes()
    assert first == second
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
    assert names == sorted(names)
    assert "jobs/tag_images.py" in names and "conf/emr.yaml" in names and "setup.py" in names
    assert not [n for n in names if "artifacts" in n or "__pycache__" in n]


def test_package_requires_the_job_and_setup(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    (root / "setup.py").unlink()
    with pytest.raises(package.PackageError, match="setup.py"):
        package.build(root, tmp_path / "x.tar.gz")
