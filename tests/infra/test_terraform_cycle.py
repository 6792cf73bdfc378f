"""make deploy-cluster / submit / destroy-cluster / destroy-all against a local AWS emulator.

The Makefile targets run exactly as a user runs them; only the environment
differs (AWS_ENDPOINT_URL and dummy credentials, see conftest.aws_env). The
Terraform files are copied to a temporary directory so state and provider
downloads never land in the repository. The models are the real artifacts
that conf/emr.yaml resolves to (make model builds them): Terraform reads the
profile only as `python -m jobs.config --resolve` writes it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from jobs.config import resolve
from tests.infra.infra_support import (
    REGION,
    REPO,
    expected_step_args,
    job_output_columns,
    provider_mirror,
    run_job_locally,
    terraform_binary,
)
from tools.datasets import skimage_data_dir

NAME = "tagger-ci"
GLUE_DATABASE = "tagger_ci"  # NAME with underscores: Athena names allow no hyphen
MAKE_TIMEOUT_S = 300
ACTIVE_CLUSTER_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]


def make(target: str, env: dict[str, str], *args: str, timeout: float = MAKE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``make -f infra/infra.mk TARGET ARGS`` from the repository root.

    make runs in its own process group: on timeout the whole group (terraform,
    its provider) is killed, so nothing keeps calling a stopped emulator.
    """
    if shutil.which("make") is None:
        pytest.fail("make not found: install GNU make", pytrace=False)
    cmd = ["make", "--no-print-directory", "-f", "infra/infra.mk", target, *args]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"make {target} still running after {timeout:.0f}s:\n{(stdout + stderr)[-6000:]}", pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def check(proc: subprocess.CompletedProcess, expected: int = 0) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == expected, f"exit {proc.returncode} (expected {expected}):\n{out[-6000:]}"
    return out


def local_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its path relative to it."""
    return {str(f.relative_to(directory)): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()}


def objects_under(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/`` by its key relative to the prefix."""
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        for o in page.get("Contents", [])
    ]
    return {key[len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def profile_models(profile: dict[str, Any]) -> list[str]:
    """Every model URI of a resolved profile: the backbone, then each head."""
    return [profile["model"]["uri"], *(head["uri"] for head in profile["model"]["heads"])]


@pytest.mark.infra
def test_deploy_submit_destroy_cluster_redeploy_destroy_all(aws_env: dict[str, str], tmp_path: Path) -> None:
    terraform_bin = terraform_binary()
    mirror = provider_mirror()
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    for tf_file in (REPO / "infra" / "terraform").glob("*.tf"):
        shutil.copy(tf_file, tf_dir)
    profile = resolve(REPO / "conf" / "emr.yaml")
    for uri in profile_models(profile):
        if not (REPO / uri / "model.json").is_file():
            pytest.fail(f"{uri} has no model.json: run make model (the cycle uploads the real artifacts)", pytrace=False)
    # Package a snapshot: edits to the working tree during the test must not
    # change the code package between the apply and the second plan.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts")
    for name in ("jobs", "model", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("requirements.txt", "setup.py", "pyproject.toml"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, source / name)
    make_vars = [
        f"TF_DIR={tf_dir}",
        f"TF_PLUGIN_DIR={mirror}",
        f"TERRAFORM={terraform_bin}",
        f"PY={sys.executable}",
        f"CODE_PACKAGE={tmp_path / 'dist' / 'code.tar.gz'}",
        f"RESOLVED_PROFILE={tmp_path / 'dist' / 'profile-emr.json'}",
        f"PACKAGE_ROOT={source}",
        f"REGION={REGION}",
        "PROFILE=emr",
        f"TF_ARGS=-var name={NAME} -var task_spot_bid_price=0.25",
        "POLL=1",
        "FALLBACK_TIMEOUT=20",
    ]
    timings: dict[str, float] = {}

    def timed(label: str, target: str, *extra: str, expected: int = 0) -> str:
        start = time.perf_counter()
        out = check(make(target, aws_env, *make_vars, *extra), expected)
        timings[label] = round(time.perf_counter() - start, 1)
        return out

    # A real output of the job for the same profile (spark-submit, local[2], two
    # photos): runs beside plan and deploy, which mostly wait on the provider.
    photos = [skimage_data_dir() / "coffee.png", skimage_data_dir() / "chelsea.png"]
    pool = ThreadPoolExecutor(max_workers=1)
    job_start = time.perf_counter()
    real_output = pool.submit(run_job_locally, REPO / "conf" / "emr.yaml", photos, tmp_path / "job-output")
    pool.shutdown(wait=False)

    # init + plan: everything is to be created, from the profile as the job's config resolves it.
    timed("init+plan", "plan-cluster", "PLAN_ARGS=-detailed-exitcode", expected=2)
    assert json.loads((tmp_path / "dist" / "profile-emr.json").read_text()) == profile

    # init + apply, uploads, spot fallback check.
    deploy_out = timed("deploy", "deploy-cluster")
    assert "on-demand task nodes requested: 0" in deploy_out

    # A second plan finds nothing to change (no perpetual diff).
    timed("replan", "plan-cluster", "PLAN_ARGS=-detailed-exitcode")

    session = boto3.Session(
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    emr, s3, iam, ec2, glue = (
        session.client(name, endpoint_url=aws_env["AWS_ENDPOINT_URL"]) for name in ("emr", "s3", "iam", "ec2", "glue")
    )

    def terraform(*args: str) -> str:
        return subprocess.run(
            [terraform_bin, f"-chdir={tf_dir}", *args], env=aws_env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def outputs() -> dict[str, Any]:
        return {name: item["value"] for name, item in json.loads(terraform("output", "-json")).items()}

    first = outputs()
    cluster_id = first["cluster_id"]
    buckets = first["bucket_names"]
    assert set(buckets) == {"data", "artifacts", "logs"}

    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    by_class = {c["Classification"]: c for c in cluster["Configurations"]}
    assert by_class["spark-defaults"]["Properties"] == {k: str(v) for k, v in profile["spark"]["conf"].items()}
    exports = by_class["spark-env"]["Configurations"][0]
    assert exports["Classification"] == "export"
    assert exports["Properties"]["PYSPARK_PYTHON"] == "/opt/image-tagger/venv/bin/python"
    assert cluster["LogUri"] == f"s3://{buckets['logs']}/emr/"
    assert cluster["ReleaseLabel"].startswith("emr-7")
    assert {a["Name"] for a in cluster["Applications"]} >= {"Spark"}
    tags = {t["Key"]: t["Value"] for t in cluster["Tags"]}
    assert tags["Project"] == NAME and tags["ManagedBy"] == "terraform" and tags["Profile"] == "emr"
    assert emr.get_auto_termination_policy(ClusterId=cluster_id)["AutoTerminationPolicy"] == {"IdleTimeout": 3600}

    groups = {g["Name"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["master-on-demand"]["Market"] == "ON_DEMAND"
    assert groups["core-on-demand"]["Market"] == "ON_DEMAND"
    spot = groups["task-spot"]
    assert (spot["InstanceGroupType"], spot["Market"], spot["BidPrice"]) == ("TASK", "SPOT", "0.25")
    assert spot["RequestedInstanceCount"] == 2
    fallback = groups["task-on-demand-fallback"]
    assert (fallback["InstanceGroupType"], fallback["Market"]) == ("TASK", "ON_DEMAND")

    (action,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert action["ScriptPath"] == f"s3://{buckets['artifacts']}/bootstrap/bootstrap.sh"
    code_uri = action["Args"][action["Args"].index("--code") + 1]
    assert code_uri.startswith(f"s3://{buckets['artifacts']}/code/image-tagger-")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=buckets["artifacts"])["Contents"]}
    assert code_uri.split("/", 3)[3] in keys
    assert "bootstrap/bootstrap.sh" in keys
    # The nodes install from the wheelhouse deploy-cluster built and uploaded, content-addressed.
    node_env = json.loads((REPO / "dist" / "node-env" / "node-env.json").read_text())
    wheelhouse_uri = action["Args"][action["Args"].index("--wheelhouse") + 1]
    assert wheelhouse_uri == f"s3://{buckets['artifacts']}/{node_env['prefix']}/"
    assert f"{node_env['prefix']}/requirements-node.txt" in keys
    assert first["node_env"] == {"runtime": "litert", "uri": wheelhouse_uri}
    # Every model the profile names is uploaded as it is on disk: same files, same bytes.
    model_uris = first["model_uris"]
    assert set(model_uris) == set(profile_models(profile))
    for uri, uploaded in model_uris.items():
        assert uploaded == f"s3://{buckets['artifacts']}/models/{Path(uri).name}"
        local = local_files(REPO / uri)
        assert "model.json" in local
        assert objects_under(s3, buckets["artifacts"], uploaded.split("/", 3)[3]) == local, uri
    script = s3.get_object(Bucket=buckets["artifacts"], Key="bootstrap/bootstrap.sh")["Body"].read()
    assert script == (REPO / "infra" / "scripts" / "bootstrap.sh").read_bytes()

    # The Glue table over the stable output prefix: the columns (names and Hive
    # types, in order) are those of the Parquet files the job wrote for
    # conf/emr.yaml, and those job_output_columns writes out for it.
    location = f"s3://{buckets['data']}/outputs/emr/tags/"
    assert first["glue_table"] == {"database": GLUE_DATABASE, "table": "tags", "location": location, "heads": ["category"]}
    expected_columns = real_output.result(timeout=MAKE_TIMEOUT_S)
    timings["job (beside plan+deploy)"] = round(time.perf_counter() - job_start, 1)
    assert expected_columns == job_output_columns(REPO / "conf" / "emr.yaml")
    assert_glue_table(glue, location, expected_columns)

    # Submit a step and return at once; it is recorded with the spark-submit
    # arguments: by default it adds to the table's location and names the table.
    manifest = f"s3://{buckets['data']}/manifests/ci.csv"
    s3.put_object(Bucket=buckets["data"], Key="manifests/ci.csv", Body=b"uri\ns3://x/y.jpg\n")
    submit_out = timed("submit", "submit", f"MANIFEST={manifest}", "SET=fetch.threads=4", "WAIT=0")
    assert f"output {location} (adding to it)" in submit_out
    assert f"Athena: SELECT url, category FROM {GLUE_DATABASE}.tags LIMIT 10" in submit_out
    heads = [(head["name"], model_uris[head["uri"]]) for head in profile["model"]["heads"]]
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Jar"] == "command-runner.jar"
    expected = functools.partial(
        expected_step_args, manifest=manifest, profile="emr", backbone=model_uris[profile["model"]["uri"]], heads=heads
    )
    assert step["Config"]["Args"] == expected(output=location, overrides=["fetch.threads=4"])

    # Waiting polls, prints the state and gives up after the overall timeout
    # (the emulator never finishes a step).
    # The second step waits behind the first (step concurrency 1). emr_ctl.py
    # exits 124 on timeout; make reports it and exits 2. OUTPUT and REPLACE=1
    # write elsewhere, replacing that output.
    output = f"s3://{buckets['data']}/outputs/ci/"
    wait_out = timed("submit-wait", "submit", f"MANIFEST={manifest}", f"OUTPUT={output}", "REPLACE=1", "TIMEOUT=3", expected=2)
    assert f"output {output} (replacing it)" in wait_out
    assert re.search(r"\] step s-\w+ (PENDING|RUNNING)", wait_out)
    assert re.search(r"still (PENDING|RUNNING) after 3s", wait_out) and "Error 124" in wait_out
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert len(steps) == 2
    (replacing,) = [s for s in steps if s["Id"] != step["Id"]]
    assert replacing["Config"]["Args"] == expected(output=output, incremental=False)

    # destroy-cluster removes the compute and the artifacts bucket, keeps the data and logs buckets.
    s3.put_object(Bucket=buckets["data"], Key="outputs/ci/part-0.parquet", Body=b"results")
    timed("destroy-cluster", "destroy-cluster")
    kept = outputs()
    assert kept.get("cluster_id") is None and not kept.get("model_uris")
    assert kept["bucket_names"] == {**buckets, "artifacts": None}
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {buckets["data"], buckets["logs"]}
    assert s3.get_object(Bucket=buckets["data"], Key="outputs/ci/part-0.parquet")["Body"].read() == b"results"
    assert s3.get_object(Bucket=buckets["data"], Key="manifests/ci.csv")["Body"].read() == b"uri\ns3://x/y.jpg\n"
    assert kept["glue_table"] == first["glue_table"]
    assert_glue_table(glue, location, expected_columns)  # data, not compute: kept
    assert_no_compute(emr, iam, ec2)

    # deploy-cluster again: a new cluster beside the same buckets and their objects.
    redeploy_out = timed("redeploy", "deploy-cluster")
    assert "on-demand task nodes requested: 0" in redeploy_out
    second = outputs()
    assert second["bucket_names"] == buckets
    assert second["cluster_id"] not in (None, cluster_id)
    assert second["model_uris"] == model_uris
    assert s3.get_object(Bucket=buckets["data"], Key="outputs/ci/part-0.parquet")["Body"].read() == b"results"

    # destroy-all: empties the data bucket (every version) and the logs bucket, then destroys everything.
    s3.put_object(Bucket=buckets["data"], Key="outputs/ci/part-0.parquet", Body=b"results v2")  # a second version
    s3.put_object(Bucket=buckets["logs"], Key="emr/j-CI/steps/stderr.gz", Body=b"log")
    all_out = timed("destroy-all", "destroy-all")
    # manifests/ci.csv and two versions of the output; the logs bucket holds at least the one put here.
    assert f"deleted from s3://{buckets['data']}: 3 object versions" in all_out, all_out[-3000:]
    logs_deleted = re.search(rf"deleted from s3://{buckets['logs']}: (\d+) object versions", all_out)
    assert logs_deleted and int(logs_deleted.group(1)) >= 1, all_out[-3000:]
    assert "  emr/: " in all_out and "  outputs/: 2 object versions" in all_out
    assert terraform("state", "list").strip() == ""
    assert emr.list_clusters(ClusterStates=ACTIVE_CLUSTER_STATES)["Clusters"] == []
    with pytest.raises(ClientError):  # moto lacks ListSecurityConfigurations
        emr.describe_security_configuration(Name=f"{NAME}-security")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == []
    assert glue.get_databases()["DatabaseList"] == []
    assert_no_compute(emr, iam, ec2)
    groups_left = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups_left if g["GroupName"] != "default"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    nat_states = {n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]}
    assert nat_states <= {"deleted"}

    # Nothing deployed: destroy-all says so and creates nothing.
    again = timed("destroy-all-again", "destroy-all")
    assert "nothing deployed" in again and s3.list_buckets()["Buckets"] == []
    print(f"\ninfra cycle timings (s): {timings}")


def assert_glue_table(glue: Any, location: str, columns: list[tuple[str, str]]) -> None:
    """The Glue table is an external Parquet table at ``location`` with exactly ``columns`` and no partitions."""
    table = glue.get_table(DatabaseName=GLUE_DATABASE, Name="tags")["Table"]
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert table["Parameters"]["EXTERNAL"] == "TRUE" and table["Parameters"]["classification"] == "parquet"
    assert table.get("PartitionKeys", []) == []
    sd = table["StorageDescriptor"]
    assert sd["Location"] == location
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert sd["OutputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == columns


def assert_no_compute(emr: Any, iam: Any, ec2: Any) -> None:
    """No running cluster, no project role or instance profile, no VPC but the default one."""
    assert emr.list_clusters(ClusterStates=ACTIVE_CLUSTER_STATES)["Clusters"] == []
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(NAME)] == []
    assert [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]] == []
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []


def test_deploy_fails_clearly_without_terraform(tmp_path: Path) -> None:
    proc = make("deploy-cluster", {"PATH": "/usr/bin:/bin"}, f"TERRAFORM={tmp_path / 'no-terraform'}", timeout=30)
    assert proc.returncode != 0
    assert "terraform not found" in proc.stderr


def test_deploy_fails_clearly_without_provider_mirror(tmp_path: Path) -> None:
    proc = make(
        "deploy-cluster",
        {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        "TERRAFORM=true",  # any existing command: the mirror check comes next
        f"TF_PLUGIN_DIR={tmp_path / 'no-mirror'}",
        timeout=30,
    )
    assert proc.returncode != 0
    assert "no hashicorp/aws provider under TF_PLUGIN_DIR" in proc.stderr


def test_submit_requires_manifest() -> None:
    proc = make("submit", {"PATH": "/usr/bin:/bin"}, "MANIFEST=", timeout=30)
    assert proc.returncode == 2
    assert "set MANIFEST=s3://" in proc.stderr


@pytest.mark.infra
def test_plan_refuses_remote_and_missing_models_and_other_spark(aws_env: dict[str, str], tmp_path: Path) -> None:
    """The profile must name local artifact directories, each with model.json; the release must ship Spark 3.5.6."""
    terraform_bin, mirror = terraform_binary(), provider_mirror()
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    for tf_file in (REPO / "infra" / "terraform").glob("*.tf"):
        shutil.copy(tf_file, tf_dir)
    (tmp_path / "artifacts" / "no_json").mkdir(parents=True)
    (tmp_path / "artifacts" / "no_json" / "model.tflite").write_bytes(b"weights")
    profile = tmp_path / "bad.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "spark": {"conf": {"spark.task.cpus": "1"}},
                "model": {"uri": "s3://elsewhere/models/backbone", "heads": [{"name": "h", "uri": "no_json"}]},
            }
        )
    )
    resolved = tmp_path / "bad.json"  # what make writes with `python -m jobs.config --resolve`
    resolved.write_text(json.dumps(resolve(profile)))
    (tmp_path / "code.tar.gz").write_bytes(b"code")

    def terraform(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [terraform_bin, f"-chdir={tf_dir}", *args], env=aws_env, capture_output=True, text=True, timeout=120
        )

    assert terraform("init", "-input=false", f"-plugin-dir={mirror}").returncode == 0
    tf_vars = [
        f"-var=resolved_profile_path={resolved}",
        f"-var=artifacts_root={tmp_path / 'artifacts'}",
        f"-var=code_package={tmp_path / 'code.tar.gz'}",
        f"-var=bootstrap_script={REPO / 'infra' / 'scripts' / 'bootstrap.sh'}",
        f"-var=region={REGION}",
    ]
    plan = terraform("plan", "-input=false", "-no-color", *tf_vars)
    errors = " ".join((plan.stdout + plan.stderr).split())  # Terraform wraps long messages
    assert plan.returncode == 1, errors[-3000:]
    assert "names s3://elsewhere/models/backbone: the profile must name local artifact directories" in errors
    assert f"No model artifact (model.json missing) in no_json ({tmp_path / 'artifacts' / 'no_json'})" in errors
    assert "run `make model`" in errors

    release = terraform("plan", "-input=false", "-no-color", *tf_vars, "-var=release_label=emr-7.10.0")
    assert release.returncode == 1
    assert "pinned pyspark (3.5.6, requirements.txt) must match the cluster's Spark" in " ".join(release.stderr.split())

    # The YAML itself is not what Terraform reads.
    yaml_path = terraform("plan", "-input=false", "-no-color", *tf_vars, f"-var=resolved_profile_path={profile}")
    assert yaml_path.returncode == 1
    assert "python -m jobs.config --resolve" in " ".join(yaml_path.stderr.split())
