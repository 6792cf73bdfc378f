"""make deploy-cluster / submit / destroy-cluster against a local AWS emulator.

The Makefile targets run exactly as a user runs them; only the environment
differs (AWS_ENDPOINT_URL and dummy credentials, see conftest.aws_env). The
Terraform files are copied to a temporary directory so state and provider
downloads never land in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from infra_support import REGION, REPO, provider_mirror, terraform_binary

NAME = "tagger-ci"
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


def fake_model(directory: Path) -> Path:
    """A tiny stand-in for model/artifacts/efficientnet_lite0 (only its files are uploaded)."""
    directory.mkdir(parents=True)
    (directory / "model.json").write_text(json.dumps({"name": "efficientnet_lite0", "input_size": 224}))
    (directory / "classes.txt").write_text("tench\ngoldfish\n")
    (directory / "model.keras").write_bytes(b"not really a keras file")
    return directory


@pytest.mark.infra
def test_deploy_submit_destroy_cycle(aws_env: dict[str, str], tmp_path: Path) -> None:
    terraform = terraform_binary()
    mirror = provider_mirror()
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    for tf_file in (REPO / "infra" / "terraform").glob("*.tf"):
        shutil.copy(tf_file, tf_dir)
    model_dir = fake_model(tmp_path / "efficientnet_lite0")
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
        f"TERRAFORM={terraform}",
        f"PY={sys.executable}",
        f"MODEL_DIR={model_dir}",
        f"CODE_PACKAGE={tmp_path / 'dist' / 'code.tar.gz'}",
        f"PACKAGE_ROOT={source}",
        f"REGION={REGION}",
        "PROFILE=emr",
        f"TF_ARGS=-var name={NAME} -var force_destroy_buckets=true -var task_spot_bid_price=0.25",
        "POLL=1",
        "FALLBACK_TIMEOUT=20",
    ]
    timings: dict[str, float] = {}

    def timed(label: str, target: str, *extra: str, expected: int = 0) -> str:
        start = time.perf_counter()
        out = check(make(target, aws_env, *make_vars, *extra), expected)
        timings[label] = round(time.perf_counter() - start, 1)
        return out

    # init + plan: everything is to be created.
    timed("init+plan", "plan-cluster", "PLAN_ARGS=-detailed-exitcode", expected=2)

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
    emr, s3, iam, ec2 = (session.client(name, endpoint_url=aws_env["AWS_ENDPOINT_URL"]) for name in ("emr", "s3", "iam", "ec2"))
    outputs = json.loads(
        subprocess.run(
            [terraform, f"-chdir={tf_dir}", "output", "-json"],
            env=aws_env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    cluster_id = outputs["cluster_id"]["value"]
    buckets = outputs["bucket_names"]["value"]
    assert set(buckets) == {"data", "artifacts", "logs"}

    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    profile = yaml.safe_load((REPO / "conf" / "emr.yaml").read_text())
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
    assert {"bootstrap/bootstrap.sh", "models/efficientnet_lite0/model.json", "models/efficientnet_lite0/model.keras"} <= keys
    script = s3.get_object(Bucket=buckets["artifacts"], Key="bootstrap/bootstrap.sh")["Body"].read()
    assert script == (REPO / "infra" / "scripts" / "bootstrap.sh").read_bytes()

    # Submit a step and return at once; it is recorded with the spark-submit arguments.
    manifest = f"s3://{buckets['data']}/manifests/ci.csv"
    s3.put_object(Bucket=buckets["data"], Key="manifests/ci.csv", Body=b"uri\ns3://x/y.jpg\n")
    output = f"s3://{buckets['data']}/outputs/ci/"
    timed("submit", "submit", f"MANIFEST={manifest}", f"OUTPUT={output}", "SET=fetch.threads=4", "WAIT=0")
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["Config"]["Args"] == [
        "spark-submit",
        "--master",
        "yarn",
        "--deploy-mode",
        "client",
        "/opt/image-tagger/jobs/tag_images.py",
        "--manifest",
        manifest,
        "--output",
        output,
        "--profile",
        "/opt/image-tagger/conf/emr.yaml",
        "--set",
        f"model.uri=s3://{buckets['artifacts']}/models/efficientnet_lite0",
        "--set",
        "fetch.threads=4",
    ]

    # Waiting polls, prints the state and gives up after the overall timeout
    # (the emulator never finishes a step).
    # The second step waits behind the first (step concurrency 1). emr_ctl.py
    # exits 124 on timeout; make reports it and exits 2.
    wait_out = timed("submit-wait", "submit", f"MANIFEST={manifest}", "TIMEOUT=3", expected=2)
    assert re.search(r"\] step s-\w+ (PENDING|RUNNING)", wait_out)
    assert re.search(r"still (PENDING|RUNNING) after 3s", wait_out) and "Error 124" in wait_out
    assert len(emr.list_steps(ClusterId=cluster_id)["Steps"]) == 2

    # Tear everything down and check nothing is left.
    timed("destroy", "destroy-cluster")
    state = subprocess.run(
        [terraform, f"-chdir={tf_dir}", "state", "list"], env=aws_env, capture_output=True, text=True, timeout=60
    )
    assert state.stdout.strip() == ""
    assert emr.list_clusters(ClusterStates=ACTIVE_CLUSTER_STATES)["Clusters"] == []
    with pytest.raises(ClientError):  # moto lacks ListSecurityConfigurations
        emr.describe_security_configuration(Name=f"{NAME}-security")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == []
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(NAME)] == []
    assert [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]] == []
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    groups_left = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups_left if g["GroupName"] != "default"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    nat_states = {n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]}
    assert nat_states <= {"deleted"}
    print(f"\ninfra cycle timings (s): {timings}")


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
