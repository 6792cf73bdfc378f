"""Unit tests of the cluster control scripts (no AWS, no Terraform)."""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from infra.scripts import emr_ctl, package
from jobs.config import Settings, load_settings
from tests.infra.infra_support import REPO, expected_step_args

BACKBONE = "model/artifacts/efficientnet_lite0_tflite"
HEAD = "model/artifacts/product_category_tflite"
UPLOADED = {
    BACKBONE: "s3://art-bkt/models/efficientnet_lite0_tflite",
    HEAD: "s3://art-bkt/models/product_category_tflite",
}
# The parts of a resolved profile (jobs.config.resolve) that emr_ctl reads.
PROFILE = {"model": {"uri": BACKBONE, "top_k": 5, "heads": [{"name": "category", "uri": HEAD}]}}
# The step PROFILE gives on FACTS' cluster, as make submit must add it.
expected_emr_args = functools.partial(
    expected_step_args, profile="emr", backbone=UPLOADED[BACKBONE], heads=[("category", UPLOADED[HEAD])]
)
FACTS = emr_ctl.ClusterFacts(
    cluster_id="j-TEST",
    region="eu-west-1",
    data_bucket="data-bkt",
    model_uris=UPLOADED,
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


def test_emr_step_args_run_the_installed_job_with_every_model_uploaded() -> None:
    run = emr_ctl.JobRun("s3://d/m.csv", "s3://d/out/", "emr", PROFILE, overrides=["inference.batch_size=32"])
    args = emr_ctl.emr_step_args(FACTS, run)
    assert args == expected_emr_args(manifest="s3://d/m.csv", output="s3://d/out/", overrides=["inference.batch_size=32"])


def test_step_args_add_to_the_output_unless_replace() -> None:
    """The default output is one dataset per profile: runs add to it (--incremental); --replace does not."""
    from jobs.cli import parse_args

    adding = emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "emr", PROFILE))
    assert "--incremental" in adding
    # The job's own parser reads the arguments after the script as the step passes them.
    parsed = parse_args(adding[adding.index("/opt/image-tagger/jobs/tag_images.py") + 1 :])
    assert parsed.incremental and parsed.output == "o"
    replacing = emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "emr", PROFILE, incremental=False))
    assert replacing == expected_emr_args(manifest="m", output="o", incremental=False)
    assert not parse_args(replacing[replacing.index("/opt/image-tagger/jobs/tag_images.py") + 1 :]).incremental


def test_emr_step_args_without_heads_set_only_the_backbone() -> None:
    profile = {"model": {"uri": BACKBONE, "heads": []}}
    args = emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "emr", profile))
    assert args == expected_step_args(manifest="m", output="o", profile="emr", backbone=UPLOADED[BACKBONE])


@pytest.mark.parametrize("profile", ["emr", "gpu"])
def test_the_job_reads_the_overrides_as_the_uploaded_copies(profile: str) -> None:
    """The --set values go through the job's own config loader: every model URI becomes its S3 copy."""
    data = emr_ctl.resolved_profile(profile)
    uploaded = {uri: f"s3://art-bkt/models/{Path(uri).name}" for uri in emr_ctl.profile_model_uris(data)}
    facts = emr_ctl.ClusterFacts(cluster_id="j", region="eu-west-1", data_bucket="d", model_uris=uploaded)
    args = emr_ctl.emr_step_args(facts, emr_ctl.JobRun("m", "o", profile, data))
    sets = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    settings = load_settings(REPO / "conf" / f"{profile}.yaml", sets)
    assert settings.model.uri == uploaded[data["model"]["uri"]]
    assert settings.model.heads == [{**head, "uri": uploaded[head["uri"]]} for head in data["model"]["heads"]]
    assert settings.model.top_k == data["model"]["top_k"]  # the rest of the profile is untouched


def test_a_model_the_cluster_did_not_upload_fails_naming_it() -> None:
    # PROFILE=gpu submitted to a cluster deployed from emr: its Keras backbone was never uploaded.
    gpu = emr_ctl.resolved_profile("gpu")
    with pytest.raises(emr_ctl.CtlError) as err:
        emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "gpu", gpu))
    assert repr(gpu["model"]["uri"]) in str(err.value)
    assert "make deploy-cluster PROFILE=gpu" in str(err.value)


def test_a_head_the_cluster_did_not_upload_fails_naming_it() -> None:
    profile = {"model": {"uri": BACKBONE, "heads": [{"name": "colour", "uri": "model/artifacts/colour_tflite"}]}}
    with pytest.raises(emr_ctl.CtlError, match="'model/artifacts/colour_tflite'.*make deploy-cluster PROFILE=emr"):
        emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "emr", profile))


def test_models_a_profile_leaves_to_the_defaults_point_at_their_uploaded_copies(tmp_path: Path) -> None:
    """A profile without model: the resolution has the defaults' backbone and head, and the step
    points both at their S3 copies (on the nodes the defaults' local paths exist nowhere)."""
    (tmp_path / "bare.yaml").write_text("spark: {master: yarn}\n")
    resolved = emr_ctl.resolved_profile("bare", tmp_path)
    assert resolved["model"] == Settings().as_dict()["model"]
    assert emr_ctl.profile_model_uris(resolved) == [BACKBONE, HEAD]  # what Terraform uploads (locals.tf)
    args = emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "bare", resolved))
    assert args == expected_step_args(
        manifest="m", output="o", profile="bare", backbone=UPLOADED[BACKBONE], heads=[("category", UPLOADED[HEAD])]
    )


def test_an_invalid_profile_fails_naming_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("fetch: {threads: 0}\n")
    with pytest.raises(emr_ctl.CtlError, match="profile bad: fetch.threads=0: must be between 1 and 256"):
        emr_ctl.resolved_profile("bad", tmp_path)
    assert emr_ctl.main(["--conf-dir", str(tmp_path), "check-models", "--profile", "bad"]) == emr_ctl.EXIT_USAGE
    assert emr_ctl.main(["--conf-dir", str(tmp_path), "check-models", "--profile", "absent"]) == emr_ctl.EXIT_USAGE
    assert "fetch.threads=0" in caplog.text and "cannot read profile" in caplog.text


def test_emr_step_args_reject_override_without_equals() -> None:
    with pytest.raises(emr_ctl.CtlError, match="key=value"):
        emr_ctl.emr_step_args(FACTS, emr_ctl.JobRun("m", "o", "emr", PROFILE, overrides=["oops"]))


@pytest.mark.parametrize("profile", ["emr", "gpu"])
def test_profile_models_are_local_artifacts_that_deploy_uploads(profile: str) -> None:
    model = load_settings(REPO / "conf" / f"{profile}.yaml").model
    named = [model.uri, *(head["uri"] for head in model.heads)]
    assert emr_ctl.profile_model_uris(emr_ctl.resolved_profile(profile)) == list(dict.fromkeys(named))
    for uri in named:
        assert "://" not in uri and not Path(uri).is_absolute(), uri
        assert (REPO / uri / "model.json").is_file(), f"{uri} has no model.json: run make model"
    assert emr_ctl.main(["check-models", "--profile", profile]) == 0


def test_check_models_reports_missing_and_refuses_remote(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "model.json").write_text("{}")
    (conf / "p.yaml").write_text(yaml.safe_dump({"model": {"uri": "here", "heads": [{"name": "h", "uri": "gone"}]}}))
    (conf / "s3.yaml").write_text(yaml.safe_dump({"model": {"uri": "s3://bucket/models/x"}}))
    base = ["--conf-dir", str(conf), "check-models", "--artifacts-root", str(tmp_path), "--profile"]
    assert emr_ctl.main([*base, "p"]) == emr_ctl.EXIT_MISSING
    assert emr_ctl.main([*base, "s3"]) == emr_ctl.EXIT_USAGE
    assert "s3://bucket/models/x" in caplog.text and "local artifact directories" in caplog.text


def test_facts_need_a_deployed_cluster() -> None:
    # After make destroy-cluster only the kept buckets are in the outputs.
    kept = {"cluster_id": None, "bucket_names": {"data": "d", "artifacts": None, "logs": "l"}, "model_uris": {}}
    with pytest.raises(emr_ctl.CtlError, match="run make deploy-cluster"):
        emr_ctl.facts_from_outputs(kept)
    facts = emr_ctl.facts_from_outputs(
        {**kept, "cluster_id": "j-1", "region": "r", "model_uris": UPLOADED, "task_instance_groups": None}
    )
    assert facts.model_uris == UPLOADED and facts.spot_group_id is None


def test_step_definition_uses_command_runner() -> None:
    step = emr_ctl.step_definition("n", ["spark-submit", "x.py"])
    assert step["HadoopJarStep"] == {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}
    assert step["ActionOnFailure"] == "CONTINUE"


def test_default_output_uri_is_the_profiles_stable_dataset() -> None:
    # The Glue table's location (infra/terraform/locals.tf output_location): the same prefix every run.
    assert emr_ctl.default_output_uri("b", "emr") == "s3://b/outputs/emr/tags/"
    tf_locals = (REPO / "infra" / "terraform" / "locals.tf").read_text()
    assert 'output_location = "s3://${local.buckets.data}/outputs/${local.profile_name}/tags/"' in tf_locals


GLUE = {"database": "image_tagger", "table": "tags", "location": "s3://b/outputs/emr/tags/", "heads": ["category", "style"]}


def test_athena_hint_names_the_table_and_the_first_head() -> None:
    assert emr_ctl.athena_hint(GLUE, "s3://b/outputs/emr/tags") == "Athena: SELECT url, category FROM image_tagger.tags LIMIT 10"
    assert emr_ctl.athena_hint({**GLUE, "heads": []}, "s3://b/outputs/emr/tags/") == (
        "Athena: SELECT url FROM image_tagger.tags LIMIT 10"
    )
    elsewhere = emr_ctl.athena_hint(GLUE, "s3://b/outputs/ci/")
    assert elsewhere == "Athena: image_tagger.tags covers s3://b/outputs/emr/tags/, not this output s3://b/outputs/ci/"
    assert "make deploy-cluster" in emr_ctl.athena_hint(None, "s3://b/outputs/emr/tags/")


def test_facts_carry_the_glue_table() -> None:
    outputs = {"cluster_id": "j-1", "region": "r", "bucket_names": {"data": "d"}, "glue_table": GLUE}
    assert emr_ctl.facts_from_outputs(outputs).glue_table == GLUE


def test_poll_until_stops_when_done_or_at_the_deadline() -> None:
    clock, seen = FakeClock(), []
    answers = iter([1, 2, 3, 4])

    def done(value: int, elapsed: float) -> bool:
        seen.append((value, elapsed))
        return value == 3

    assert emr_ctl.poll_until(lambda: next(answers), done, emr_ctl.Poll(5, 60, clock, clock.sleep)) == (3, True)
    assert seen == [(1, 0), (2, 5), (3, 10)] and clock.sleeps == [5, 5]
    clock = FakeClock()
    result = emr_ctl.poll_until(lambda: "x", lambda *_: False, emr_ctl.Poll(4, 10, clock, clock.sleep))
    assert result == ("x", False) and clock.sleeps == [4, 4, 2]


def test_wait_for_step_polls_with_sleep_until_completed() -> None:
    clock, lines = FakeClock(), []
    client = FakeEmr(step_states=["PENDING", "RUNNING", "RUNNING", "COMPLETED"])
    step = emr_ctl.wait_for_step(client, "j-TEST", "s-1", emr_ctl.Poll(10, 100, clock, clock.sleep, lines.append))
    assert step["Status"]["State"] == "COMPLETED"
    assert clock.sleeps == [10, 10, 10]
    assert [line.split()[-1] for line in lines] == ["PENDING", "RUNNING", "RUNNING", "COMPLETED"]


def test_wait_for_step_returns_failed_step() -> None:
    clock = FakeClock()
    step = emr_ctl.wait_for_step(FakeEmr(["RUNNING", "FAILED"]), "j", "s", emr_ctl.Poll(1, 10, clock, clock.sleep))
    assert step["Status"]["State"] == "FAILED"


def test_wait_for_step_times_out_without_oversleeping() -> None:
    clock = FakeClock()
    with pytest.raises(emr_ctl.WaitTimeout, match="still RUNNING after 25s"):
        emr_ctl.wait_for_step(FakeEmr(["RUNNING"]), "j", "s", emr_ctl.Poll(10, 25, clock, clock.sleep, lambda _: None))
    assert clock.sleeps == [10, 10, 5]


@pytest.mark.parametrize("poll_s,timeout_s", [(0, 10), (1, 0)])
def test_wait_for_step_rejects_busy_loops(poll_s: float, timeout_s: float) -> None:
    with pytest.raises(ValueError):
        emr_ctl.wait_for_step(FakeEmr(["RUNNING"]), "j", "s", emr_ctl.Poll(poll_s, timeout_s))


def test_fallback_does_nothing_when_spot_arrives() -> None:
    clock, client = FakeClock(), FakeEmr(spot_running=[1, 3, 4])
    quiet = emr_ctl.Poll(30, 300, clock, clock.sleep, lambda _: None)
    requested = emr_ctl.ensure_task_capacity(client, "j", "ig-SPOT", "ig-OD", quiet)
    assert requested == 0 and client.modified == [] and clock.sleeps == [30, 30]


def test_fallback_requests_on_demand_for_missing_spot_nodes() -> None:
    clock, client = FakeClock(), FakeEmr(spot_running=[1])
    quiet = emr_ctl.Poll(30, 60, clock, clock.sleep, lambda _: None)
    requested = emr_ctl.ensure_task_capacity(client, "j", "ig-SPOT", "ig-OD", quiet)
    assert requested == 3
    assert client.modified == [{"InstanceGroupId": "ig-OD", "InstanceCount": 3}]


def test_submit_without_terraform_fails_clearly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = emr_ctl.main(["--tf-dir", str(tmp_path), "--terraform", str(tmp_path / "nope"), "submit", "--manifest", "m"])
    assert code == emr_ctl.EXIT_USAGE
    assert "terraform not found" in caplog.text


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """In-process moto S3 (no server, no network)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("s3", region_name="eu-west-1")


def test_empty_bucket_deletes_every_version_and_delete_marker(s3: Any) -> None:
    s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
    for body in (b"v1", b"v2-longer"):
        s3.put_object(Bucket="data", Key="outputs/run/part-0", Body=body)
    s3.put_object(Bucket="data", Key="manifests/m.csv", Body=b"uri\n")
    s3.delete_object(Bucket="data", Key="manifests/m.csv")  # a delete marker over one version
    s3.put_object(Bucket="data", Key="README", Body=b"x")
    gone = emr_ctl.empty_bucket(s3, "data")
    assert (gone.versions, gone.delete_markers, gone.bytes) == (4, 1, 2 + 9 + 4 + 1)
    assert gone.prefixes == {"README": 1, "manifests/": 1, "outputs/": 2}
    listing = s3.list_object_versions(Bucket="data")
    assert not listing.get("Versions") and not listing.get("DeleteMarkers")
    s3.delete_bucket(Bucket="data")  # empty: S3 lets it go
    lines = emr_ctl.describe_emptied(gone)
    assert lines[0] == "deleted from s3://data: 4 object versions (16 bytes), 1 delete markers"
    assert "  outputs/: 2 object versions" in lines


def test_empty_bucket_batches_and_handles_unversioned_buckets(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emr_ctl, "DELETE_BATCH", 3)
    s3.create_bucket(Bucket="tagger-logs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for i in range(7):
        s3.put_object(Bucket="tagger-logs", Key=f"emr/j-1/log-{i}", Body=b"l")
    assert emr_ctl.empty_bucket(s3, "tagger-logs").versions == 7
    assert s3.list_objects_v2(Bucket="tagger-logs")["KeyCount"] == 0


def test_empty_buckets_command_skips_a_missing_bucket(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert emr_ctl.main(["--region", "eu-west-1", "empty-buckets", "--bucket", "never-created"]) == 0
    assert "does not exist" in capsys.readouterr().out


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
