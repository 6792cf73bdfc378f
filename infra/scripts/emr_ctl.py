"""Control the image-tagger EMR cluster: submit steps, wait for them, back spot with on-demand.

Cluster facts (id, buckets, model URI, install dir, region) come from
``terraform output -json`` of infra/terraform, or from the command line.
Every AWS call goes through boto3, so the usual credentials (AWS_PROFILE, ...)
and ``AWS_ENDPOINT_URL`` apply unchanged.

Usage::

    python infra/scripts/emr_ctl.py submit --manifest s3://.../manifest.csv --profile emr \\
        [--output s3://...] [--set key=value ...] [--no-wait] [--poll 30] [--timeout 7200]
    python infra/scripts/emr_ctl.py wait --step-id s-XXXX [--poll 30] [--timeout 7200]
    python infra/scripts/emr_ctl.py fallback [--timeout 900] [--poll 30]

Exit status: 0 done (or submitted with --no-wait), 1 the step failed or was
cancelled, 2 bad usage or missing cluster facts, 124 timed out while waiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("emr_ctl")

STEP_OK = "COMPLETED"
STEP_FAILED = frozenset({"CANCELLED", "FAILED", "INTERRUPTED"})
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
DEFAULT_TF_DIR = Path(__file__).resolve().parents[1] / "terraform"


class CtlError(RuntimeError):
    """Missing or inconsistent cluster facts; the message says what to do."""


class WaitTimeout(TimeoutError):
    """The overall timeout ran out before the awaited state was reached."""


@dataclass(frozen=True)
class ClusterFacts:
    """What a step needs to know about the deployed cluster."""

    cluster_id: str
    region: str
    data_bucket: str
    model_uri: str
    install_dir: str = "/opt/image-tagger"
    spot_group_id: str | None = None
    on_demand_group_id: str | None = None


def terraform_outputs(tf_dir: Path, terraform: str = "terraform") -> dict[str, Any]:
    """Return ``terraform output -json`` of ``tf_dir`` as plain values."""
    if shutil.which(terraform) is None:
        raise CtlError(f"terraform not found ({terraform!r}): install it or pass --cluster-id etc.")
    proc = subprocess.run(
        [terraform, f"-chdir={tf_dir}", "output", "-json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise CtlError(f"terraform output failed in {tf_dir}: {proc.stderr.strip()}")
    values = {name: item["value"] for name, item in json.loads(proc.stdout or "{}").items()}
    if "cluster_id" not in values:
        raise CtlError(f"no cluster deployed from {tf_dir} (no cluster_id output): run make deploy-cluster")
    return values


def facts_from_outputs(outputs: dict[str, Any]) -> ClusterFacts:
    """Build :class:`ClusterFacts` from the outputs of infra/terraform."""
    groups = outputs.get("task_instance_groups") or {}
    return ClusterFacts(
        cluster_id=outputs["cluster_id"],
        region=outputs["region"],
        data_bucket=outputs["bucket_names"]["data"],
        model_uri=outputs["model_uri"],
        install_dir=outputs.get("install_dir", "/opt/image-tagger"),
        spot_group_id=groups.get("spot"),
        on_demand_group_id=groups.get("on_demand"),
    )


def default_output_uri(data_bucket: str, profile: str, now: datetime | None = None) -> str:
    """``s3://<data bucket>/outputs/<profile>/<UTC timestamp>/``: one prefix per run."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"s3://{data_bucket}/outputs/{profile}/{stamp}/"


def spark_submit_args(
    facts: ClusterFacts,
    *,
    manifest: str,
    output: str,
    profile: str,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Arguments of ``command-runner.jar``: spark-submit of the installed job.

    The code, the profile and the virtual environment were installed on every
    node by the bootstrap action; the model artifact lives in S3.
    """
    for item in overrides:
        if "=" not in item:
            raise CtlError(f"--set expects key=value, got {item!r}")
    install = facts.install_dir.rstrip("/")
    args = [
        "spark-submit",
        "--master",
        "yarn",
        "--deploy-mode",
        "client",
        f"{install}/jobs/tag_images.py",
        "--manifest",
        manifest,
        "--output",
        output,
        "--profile",
        f"{install}/conf/{profile}.yaml",
        "--set",
        f"model.uri={facts.model_uri}",
    ]
    for item in overrides:
        args += ["--set", item]
    return args


def step_definition(name: str, args: list[str]) -> dict[str, Any]:
    """One EMR step running ``args`` through command-runner.jar."""
    return {
        "Name": name,
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def submit_step(client: Any, cluster_id: str, step: dict[str, Any]) -> str:
    """Add ``step`` to the cluster and return its id."""
    response = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])
    return response["StepIds"][0]


def wait_for_step(
    client: Any,
    cluster_id: str,
    step_id: str,
    *,
    poll_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll the step every ``poll_s`` seconds until it ends; print its state each time.

    Returns the step description once it is COMPLETED, CANCELLED, FAILED or
    INTERRUPTED. Raises :class:`WaitTimeout` after ``timeout_s`` seconds.
    """
    if poll_s <= 0 or timeout_s <= 0:
        raise ValueError("poll_s and timeout_s must be positive")
    start = clock()
    while True:
        step = client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        state = step["Status"]["State"]
        elapsed = clock() - start
        echo(f"[{elapsed:6.0f}s] step {step_id} {state}")
        if state == STEP_OK or state in STEP_FAILED:
            return step
        remaining = timeout_s - elapsed
        if remaining <= 0:
            raise WaitTimeout(f"step {step_id} still {state} after {timeout_s:.0f}s")
        sleep(min(poll_s, remaining))


def ensure_task_capacity(
    client: Any,
    cluster_id: str,
    spot_group_id: str,
    on_demand_group_id: str,
    *,
    poll_s: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
) -> int:
    """Wait for the spot task group; cover spot nodes that did not arrive with on-demand ones.

    EMR instance groups cannot change market, so the fallback is a second,
    on-demand task group. Returns the number of on-demand nodes requested
    (0 when spot delivered everything).
    """
    if poll_s <= 0 or timeout_s <= 0:
        raise ValueError("poll_s and timeout_s must be positive")
    start = clock()
    while True:
        groups = {g["Id"]: g for g in _instance_groups(client, cluster_id)}
        if spot_group_id not in groups or on_demand_group_id not in groups:
            raise CtlError(f"task instance groups {spot_group_id}, {on_demand_group_id} not in {cluster_id}")
        spot = groups[spot_group_id]
        wanted, running = spot["RequestedInstanceCount"], spot["RunningInstanceCount"]
        elapsed = clock() - start
        echo(f"[{elapsed:6.0f}s] spot task group {spot_group_id}: {running}/{wanted} running")
        if running >= wanted:
            return 0
        remaining = timeout_s - elapsed
        if remaining <= 0:
            break
        sleep(min(poll_s, remaining))
    shortfall = wanted - running
    on_demand = groups[on_demand_group_id]
    target = max(on_demand["RequestedInstanceCount"], shortfall)
    if target > on_demand["RequestedInstanceCount"]:
        echo(f"spot short by {shortfall}: resizing on-demand task group {on_demand_group_id} to {target}")
        client.modify_instance_groups(
            ClusterId=cluster_id,
            InstanceGroups=[{"InstanceGroupId": on_demand_group_id, "InstanceCount": target}],
        )
    return target


def _instance_groups(client: Any, cluster_id: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for page in client.get_paginator("list_instance_groups").paginate(ClusterId=cluster_id):
        groups.extend(page["InstanceGroups"])
    return groups


def emr_client(region: str) -> Any:
    """An EMR client with bounded, standard retries; honours AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
    return boto3.client("emr", region_name=region, config=config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-dir", type=Path, default=DEFAULT_TF_DIR, help="Terraform directory of the cluster")
    parser.add_argument("--terraform", default=os.environ.get("TERRAFORM", "terraform"), help="terraform binary")
    parser.add_argument("--cluster-id", help="cluster id (skips terraform output with the next three)")
    parser.add_argument("--region", help="region of the cluster")
    parser.add_argument("--data-bucket", help="bucket for default output prefixes")
    parser.add_argument("--model-uri", help="s3:// prefix of the model artifact")
    parser.add_argument("--install-dir", default="/opt/image-tagger", help="code location on the nodes")
    sub = parser.add_subparsers(dest="command", required=True)

    def polling(p: argparse.ArgumentParser, timeout: float) -> None:
        p.add_argument("--poll", type=float, default=30.0, help="seconds between status checks")
        p.add_argument("--timeout", type=float, default=timeout, help="overall seconds to wait")

    submit = sub.add_parser("submit", help="add a spark-submit step of jobs/tag_images.py")
    submit.add_argument("--manifest", required=True, help="manifest URI (s3://...)")
    submit.add_argument("--profile", default="emr", help="profile name under conf/ (without .yaml)")
    submit.add_argument("--output", help="output URI; default s3://<data bucket>/outputs/<profile>/<UTC time>/")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--name", help="step name")
    submit.add_argument("--no-wait", dest="wait", action="store_false", help="return once the step is added")
    polling(submit, 7200.0)

    wait = sub.add_parser("wait", help="wait for a step to end")
    wait.add_argument("--step-id", required=True)
    polling(wait, 7200.0)

    fallback = sub.add_parser("fallback", help="cover missing spot task nodes with on-demand ones")
    polling(fallback, 900.0)
    return parser


def _facts(args: argparse.Namespace) -> ClusterFacts:
    if args.cluster_id:
        if not args.region:
            raise CtlError("--cluster-id needs --region")
        return ClusterFacts(
            cluster_id=args.cluster_id,
            region=args.region,
            data_bucket=args.data_bucket or "",
            model_uri=args.model_uri or "",
            install_dir=args.install_dir,
        )
    return facts_from_outputs(terraform_outputs(args.tf_dir, args.terraform))


def _wait(client: Any, facts: ClusterFacts, step_id: str, args: argparse.Namespace) -> int:
    try:
        step = wait_for_step(client, facts.cluster_id, step_id, poll_s=args.poll, timeout_s=args.timeout)
    except WaitTimeout as exc:
        log.error("%s; it keeps running: `emr_ctl.py wait --step-id %s` resumes waiting", exc, step_id)
        return EXIT_TIMEOUT
    state = step["Status"]["State"]
    if state == STEP_OK:
        return 0
    details = step["Status"].get("FailureDetails", {})
    log.error("step %s %s: %s %s", step_id, state, details.get("Reason", ""), details.get("LogFile", ""))
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    args = _parser().parse_args(argv)
    try:
        facts = _facts(args)
        client = emr_client(facts.region)
        if args.command == "submit":
            if not facts.model_uri:
                raise CtlError("the model URI is unknown: pass --model-uri s3://...")
            if not args.output and not facts.data_bucket:
                raise CtlError("pass --output s3://... or --data-bucket")
            output = args.output or default_output_uri(facts.data_bucket, args.profile)
            step_args = spark_submit_args(
                facts, manifest=args.manifest, output=output, profile=args.profile, overrides=args.overrides
            )
            name = args.name or f"tag-images {args.profile} {args.manifest.rsplit('/', 1)[-1]}"
            step_id = submit_step(client, facts.cluster_id, step_definition(name, step_args))
            print(f"submitted step {step_id} to {facts.cluster_id}: output {output}")
            return _wait(client, facts, step_id, args) if args.wait else 0
        if args.command == "wait":
            return _wait(client, facts, args.step_id, args)
        if not (facts.spot_group_id and facts.on_demand_group_id):
            raise CtlError("task instance group ids unknown: run from the terraform outputs (no --cluster-id)")
        requested = ensure_task_capacity(
            client,
            facts.cluster_id,
            facts.spot_group_id,
            facts.on_demand_group_id,
            poll_s=args.poll,
            timeout_s=args.timeout,
        )
        print(f"on-demand task nodes requested: {requested}")
        return 0
    except CtlError as exc:
        log.error("%s", exc)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
