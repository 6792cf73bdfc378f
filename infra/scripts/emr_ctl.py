"""Control the image-tagger EMR cluster: submit steps, wait for them, back spot with on-demand.

Cluster facts (id, buckets, uploaded model URIs, install dir, region) come from
``terraform output -json`` of infra/terraform, or from the command line.
Every AWS call goes through boto3, so the usual credentials (AWS_PROFILE, ...)
and ``AWS_ENDPOINT_URL`` apply unchanged.

The job profile (conf/<profile>.yaml) is read only as the job's config
resolves it (``jobs.config.resolve``: every default filled in, validated), as
Terraform reads it. Its models are local artifact directories;
``make deploy-cluster`` uploads each one and ``submit`` points every model URI
of the resolved profile at its uploaded copy.

``submit`` writes by default to the stable output dataset of the profile,
``s3://<data bucket>/outputs/<profile>/tags/``, with the job's
``--incremental`` (runs accumulate; ``--replace`` starts it afresh). Terraform
points the Glue table (``glue_table`` output) at that prefix, and ``submit``
ends by printing the Athena query for it.

Usage::

    python infra/scripts/emr_ctl.py submit --manifest s3://.../manifest.csv --profile emr \\
        [--output s3://...] [--replace] [--set key=value ...] [--no-wait] [--poll 30] [--timeout 7200]
    python infra/scripts/emr_ctl.py wait --step-id s-XXXX [--poll 30] [--timeout 7200]
    python infra/scripts/emr_ctl.py fallback [--timeout 900] [--poll 30]
    python infra/scripts/emr_ctl.py check-models --profile emr [--artifacts-root .]
    python infra/scripts/emr_ctl.py empty-buckets [--bucket NAME ...]
    python infra/scripts/emr_ctl.py submit-serverless --manifest s3://.../manifest.csv --profile emr \\
        [--output s3://...] [--replace] [--set key=value ...] [--no-wait] [--poll 30] [--timeout 7200]

``submit-serverless`` starts an EMR Serverless job run with the job's arguments as ``submit``
builds them; the Python environment is the packed one the deploy uploaded (``spark.archives``),
and the Spark settings are the resolved profile's spark.conf.

Exit status: 0 done (or submitted with --no-wait), 1 the step (or job run) failed or was
cancelled, 2 bad usage, an invalid profile or missing cluster facts, 3 a model artifact the
profile names is missing (check-models), 124 timed out while waiting.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("emr_ctl")
T = TypeVar("T")

STEP_OK = "COMPLETED"
STEP_FAILED = frozenset({"CANCELLED", "FAILED", "INTERRUPTED"})
JOB_RUN_OK = "SUCCESS"
JOB_RUN_FAILED = frozenset({"FAILED", "CANCELLED"})
# EMR Serverless: the packed environment (spark.archives ...#environment) unpacks to ./environment
# in every driver and executor container; its Python runs the job, its conf/ holds the profiles.
SERVERLESS_ENV = "environment"
SERVERLESS_PYTHON = f"./{SERVERLESS_ENV}/bin/python"
# Spark settings EMR Serverless cannot honour: it has no GPU workers.
GPU_CONF_PREFIXES = ("spark.executor.resource.gpu.", "spark.task.resource.gpu.", "spark.driver.resource.gpu.")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_TIMEOUT = 124
REPO = Path(__file__).resolve().parents[2]
DEFAULT_TF_DIR = REPO / "infra" / "terraform"
DEFAULT_CONF_DIR = REPO / "conf"
# Largest batch S3 DeleteObjects accepts.
DELETE_BATCH = 1000


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
    # Model URI exactly as the deployed profile writes it -> s3:// prefix of its uploaded copy.
    model_uris: dict[str, str] = field(default_factory=dict)
    install_dir: str = "/opt/image-tagger"
    spot_group_id: str | None = None
    on_demand_group_id: str | None = None
    # The ``glue_table`` output: database, table, location, heads (None when not deployed).
    glue_table: dict[str, Any] | None = None


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
    return {name: item["value"] for name, item in json.loads(proc.stdout or "{}").items()}


def facts_from_outputs(outputs: dict[str, Any]) -> ClusterFacts:
    """Build :class:`ClusterFacts` from the outputs of infra/terraform.

    Raises :class:`CtlError` when no cluster is deployed (nothing applied yet,
    or only the kept buckets after ``make destroy-cluster``).
    """
    if not outputs.get("cluster_id"):
        raise CtlError("no cluster deployed (no cluster_id in the terraform outputs): run make deploy-cluster")
    groups = outputs.get("task_instance_groups") or {}
    return ClusterFacts(
        cluster_id=outputs["cluster_id"],
        region=outputs["region"],
        data_bucket=outputs["bucket_names"]["data"],
        model_uris=dict(outputs.get("model_uris") or {}),
        install_dir=outputs.get("install_dir", "/opt/image-tagger"),
        spot_group_id=groups.get("spot"),
        on_demand_group_id=groups.get("on_demand"),
        glue_table=outputs.get("glue_table") or None,
    )


def default_output_uri(data_bucket: str, profile: str) -> str:
    """``s3://<data bucket>/outputs/<profile>/tags/``: the profile's one output dataset.

    Runs accumulate there (``submit`` passes ``--incremental``); the Glue table
    of infra/terraform/glue.tf points at the same prefix.
    """
    return f"s3://{data_bucket}/outputs/{profile}/tags/"


def athena_hint(glue_table: Mapping[str, Any] | None, output: str) -> str:
    """The line ``submit`` ends with: the Athena query over ``output``, or why there is none.

    The table covers ``output`` when it is the table's location, and its
    columns are those of the profile Terraform deployed from.
    """
    if not glue_table:
        return "Athena: no Glue table in the terraform outputs (run make deploy-cluster)"
    name = f"{glue_table['database']}.{glue_table['table']}"
    location = glue_table["location"]
    if output.rstrip("/") != location.rstrip("/"):
        return f"Athena: {name} covers {location}, not this output {output}"
    columns = ", ".join(["url", *(glue_table.get("heads") or [])[:1]])
    return f"Athena: SELECT {columns} FROM {name} LIMIT 10"


def resolved_profile(profile: str, conf_dir: Path = DEFAULT_CONF_DIR) -> dict[str, Any]:
    """The profile ``conf_dir/<profile>.yaml`` resolved by the job's own config (``jobs.config.resolve``).

    Every default filled in and validated, as Terraform deployed it (make deploy-cluster
    writes the same resolution for Terraform): the one reading of a profile.
    """
    from jobs.config import ConfigError, resolve

    try:
        return resolve(conf_dir / f"{profile}.yaml")
    except ConfigError as exc:
        raise CtlError(f"profile {profile}: {exc}") from None


def profile_model_uris(resolved: Mapping[str, Any]) -> list[str]:
    """Every model URI of a resolved profile, as written: ``model.uri`` then each ``model.heads[*].uri``.

    The same list Terraform uploads (infra/terraform/locals.tf).
    """
    model = resolved["model"]
    return list(dict.fromkeys([model["uri"], *(head["uri"] for head in model["heads"])]))


def model_overrides(resolved: Mapping[str, Any], model_uris: Mapping[str, str], *, profile: str) -> list[str]:
    """``--set`` values that point every model of a resolved profile at its uploaded copy.

    ``model.uri=s3://...`` for the backbone and, when there are heads, one
    ``model.heads=[{name: ..., uri: s3://...}]`` (YAML flow: the job's --set
    parses YAML values). Models the profile leaves to the defaults are pointed
    at their copies too: on the nodes the defaults' local paths exist nowhere.
    Raises :class:`CtlError` naming a model the cluster did not upload, such as
    a GPU profile submitted to a cluster deployed from emr.
    """
    import yaml

    model = resolved["model"]

    def uploaded(uri: str) -> str:
        if uri not in model_uris:
            deployed = ", ".join(sorted(model_uris)) or "none"
            raise CtlError(
                f"profile {profile} names model {uri!r}, which the cluster did not upload (uploaded: {deployed}): "
                f"run make deploy-cluster PROFILE={profile}"
            )
        return model_uris[uri]

    sets = [f"model.uri={uploaded(model['uri'])}"]
    if model["heads"]:
        moved = [{**head, "uri": uploaded(head["uri"])} for head in model["heads"]]
        flow = yaml.safe_dump(moved, default_flow_style=True, width=float("inf")).strip()
        sets.append(f"model.heads={flow}")
    return sets


@dataclass(frozen=True)
class JobRun:
    """One run of the tagging job, as `submit` and `submit-serverless` take it from the command line.

    ``resolved`` is the profile as :func:`resolved_profile` reads it; ``incremental`` adds the job's
    ``--incremental``: the output keeps earlier runs' rows (without it the job replaces the output).
    """

    manifest: str
    output: str
    profile: str
    resolved: Mapping[str, Any]
    overrides: Sequence[str] = ()
    incremental: bool = True

    def arguments(self, profile_path: str, model_uris: Mapping[str, str]) -> list[str]:
        """The job's own arguments (after its entry point), the same on the cluster and on EMR Serverless.

        The models live in S3, so every model URI of the profile is pointed at its uploaded copy
        before the caller's overrides.
        """
        for item in self.overrides:
            if "=" not in item:
                raise CtlError(f"--set expects key=value, got {item!r}")
        args = ["--manifest", self.manifest, "--output", self.output, "--profile", profile_path]
        if self.incremental:
            args.append("--incremental")
        for item in [*model_overrides(self.resolved, model_uris, profile=self.profile), *self.overrides]:
            args += ["--set", item]
        return args


def emr_step_args(facts: ClusterFacts, run: JobRun) -> list[str]:
    """Arguments of ``command-runner.jar``: spark-submit of the installed job.

    The code, the profile and the virtual environment were installed on every
    node by the bootstrap action; :meth:`JobRun.arguments` says the rest.
    """
    install = facts.install_dir.rstrip("/")
    job = run.arguments(f"{install}/conf/{run.profile}.yaml", facts.model_uris)
    return ["spark-submit", "--master", "yarn", "--deploy-mode", "client", f"{install}/jobs/tag_images.py", *job]


def missing_artifacts(uris: Sequence[str], artifacts_root: Path) -> list[str]:
    """The URIs in ``uris`` whose artifact directory (relative to ``artifacts_root``) has no model.json."""
    return [uri for uri in uris if not (artifacts_root / uri / "model.json").is_file()]


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


@dataclass(frozen=True)
class Poll:
    """How to wait: every ``poll_s`` seconds for at most ``timeout_s``; clock, sleep and echo swap out in tests."""

    poll_s: float
    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    echo: Callable[[str], None] = print


def poll_until(probe: Callable[[], T], done: Callable[[T, float], bool], poll: Poll) -> tuple[T, bool]:
    """Call ``probe()`` every ``poll_s`` seconds until ``done(result, seconds elapsed)`` is true.

    Returns the last result and whether it was done: ``(result, False)`` once
    ``timeout_s`` seconds have passed. Never sleeps past the deadline; ``done``
    is where a caller reports progress.
    """
    if poll.poll_s <= 0 or poll.timeout_s <= 0:
        raise ValueError("poll_s and timeout_s must be positive")
    start = poll.clock()
    while True:
        result = probe()
        elapsed = poll.clock() - start
        if done(result, elapsed):
            return result, True
        remaining = poll.timeout_s - elapsed
        if remaining <= 0:
            return result, False
        poll.sleep(min(poll.poll_s, remaining))


def wait_for_step(client: Any, cluster_id: str, step_id: str, poll: Poll) -> dict[str, Any]:
    """Poll the step every ``poll_s`` seconds until it ends; print its state each time.

    Returns the step description once it is COMPLETED, CANCELLED, FAILED or
    INTERRUPTED. Raises :class:`WaitTimeout` after ``timeout_s`` seconds.
    """

    def ended(step: dict[str, Any], elapsed: float) -> bool:
        state = step["Status"]["State"]
        poll.echo(f"[{elapsed:6.0f}s] step {step_id} {state}")
        return state == STEP_OK or state in STEP_FAILED

    step, done = poll_until(lambda: client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"], ended, poll)
    if not done:
        raise WaitTimeout(f"step {step_id} still {step['Status']['State']} after {poll.timeout_s:.0f}s")
    return step


@dataclass(frozen=True)
class ServerlessFacts:
    """What a job run needs to know about the deployed EMR Serverless application (the ``serverless`` output)."""

    application_id: str
    job_role_arn: str
    archive_uri: str  # the packed environment (spark.archives)
    entry_point: str  # s3:// of jobs/tag_images.py
    log_uri: str
    region: str
    data_bucket: str
    model_uris: dict[str, str] = field(default_factory=dict)
    glue_table: dict[str, Any] | None = None


def serverless_facts_from_outputs(outputs: dict[str, Any]) -> ServerlessFacts:
    """:class:`ServerlessFacts` from the outputs of infra/terraform; :class:`CtlError` when no application is deployed."""
    app = outputs.get("serverless")
    if not app:
        raise CtlError("no EMR Serverless application deployed (terraform output serverless is null): run make deploy-serverless")
    return ServerlessFacts(
        application_id=app["application_id"],
        job_role_arn=app["job_role_arn"],
        archive_uri=app["archive_uri"],
        entry_point=app["entry_point"],
        log_uri=app["log_uri"],
        region=outputs["region"],
        data_bucket=outputs["bucket_names"]["data"],
        model_uris=dict(outputs.get("model_uris") or {}),
        glue_table=outputs.get("glue_table") or None,
    )


def serverless_spark_conf(resolved: Mapping[str, Any], archive_uri: str) -> dict[str, str]:
    """The job run's Spark settings: the packed environment and its Python, then the profile's spark.conf.

    Raises :class:`CtlError` for a profile that asks for GPUs (EMR Serverless has none) and for a
    value with whitespace (``sparkSubmitParameters`` is one space-separated string).
    """
    conf = {
        "spark.archives": f"{archive_uri}#{SERVERLESS_ENV}",
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": SERVERLESS_PYTHON,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": SERVERLESS_PYTHON,
        "spark.executorEnv.PYSPARK_PYTHON": SERVERLESS_PYTHON,
    }
    profile_conf = {key: str(value) for key, value in resolved["spark"]["conf"].items()}
    gpu = sorted(key for key in profile_conf if key.startswith(GPU_CONF_PREFIXES))
    if gpu:
        raise CtlError(f"profile {resolved.get('profile')} asks for GPUs ({', '.join(gpu)}): EMR Serverless has no GPU workers")
    spaced = sorted(key for key, value in profile_conf.items() if not value or any(c.isspace() for c in value))
    if spaced:
        raise CtlError(f"spark.conf {', '.join(spaced)}: empty or with whitespace, which sparkSubmitParameters cannot carry")
    clash = sorted(set(conf) & set(profile_conf))
    if clash:
        raise CtlError(f"spark.conf {', '.join(clash)} is set by submit-serverless (the packed environment)")
    return {**conf, **profile_conf}


def serverless_job_run(facts: ServerlessFacts, run: JobRun, *, name: str) -> dict[str, Any]:
    """The ``start_job_run`` request: the job's arguments as ``submit`` builds them, the profile from the archive."""
    arguments = run.arguments(f"./{SERVERLESS_ENV}/conf/{run.profile}.yaml", facts.model_uris)
    conf = serverless_spark_conf(run.resolved, facts.archive_uri)
    return {
        "applicationId": facts.application_id,
        "executionRoleArn": facts.job_role_arn,
        "name": name,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": facts.entry_point,
                "entryPointArguments": arguments,
                "sparkSubmitParameters": " ".join(f"--conf {key}={value}" for key, value in conf.items()),
            }
        },
        "configurationOverrides": {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": facts.log_uri}}},
    }


def job_run_log_uri(log_uri: str, application_id: str, job_run_id: str) -> str:
    """Where EMR Serverless writes a job run's logs (driver stdout: ``SPARK_DRIVER/stdout.gz`` there)."""
    return f"{log_uri.rstrip('/')}/applications/{application_id}/jobs/{job_run_id}/"


def wait_for_job_run(client: Any, application_id: str, job_run_id: str, poll: Poll) -> dict[str, Any]:
    """Poll the job run until it ends (SUCCESS, FAILED, CANCELLED); print its state each time."""

    def ended(run: dict[str, Any], elapsed: float) -> bool:
        poll.echo(f"[{elapsed:6.0f}s] job run {job_run_id} {run['state']}")
        return run["state"] == JOB_RUN_OK or run["state"] in JOB_RUN_FAILED

    def probe() -> dict[str, Any]:
        return client.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"]

    run, done = poll_until(probe, ended, poll)
    if not done:
        raise WaitTimeout(f"job run {job_run_id} still {run['state']} after {poll.timeout_s:.0f}s")
    return run


def driver_stdout(s3: Any, logs: str) -> str | None:
    """The driver's stdout (the job's summary) from the job run's logs, or None while it is not there."""
    import gzip

    from botocore.exceptions import ClientError

    bucket, _, prefix = logs.removeprefix("s3://").partition("/")
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}SPARK_DRIVER/stdout.gz")["Body"].read()
    except ClientError:
        return None
    return gzip.decompress(body).decode("utf-8", errors="replace")


def ensure_task_capacity(client: Any, cluster_id: str, spot_group_id: str, on_demand_group_id: str, poll: Poll) -> int:
    """Wait for the spot task group; cover spot nodes that did not arrive with on-demand ones.

    EMR instance groups cannot change market, so the fallback is a second,
    on-demand task group. Returns the number of on-demand nodes requested
    (0 when spot delivered everything).
    """

    def task_groups() -> dict[str, dict[str, Any]]:
        groups = {g["Id"]: g for g in _instance_groups(client, cluster_id)}
        if spot_group_id not in groups or on_demand_group_id not in groups:
            raise CtlError(f"task instance groups {spot_group_id}, {on_demand_group_id} not in {cluster_id}")
        return groups

    def spot_delivered(groups: dict[str, dict[str, Any]], elapsed: float) -> bool:
        spot = groups[spot_group_id]
        wanted, running = spot["RequestedInstanceCount"], spot["RunningInstanceCount"]
        poll.echo(f"[{elapsed:6.0f}s] spot task group {spot_group_id}: {running}/{wanted} running")
        return running >= wanted

    groups, delivered = poll_until(task_groups, spot_delivered, poll)
    if delivered:
        return 0
    spot = groups[spot_group_id]
    shortfall = spot["RequestedInstanceCount"] - spot["RunningInstanceCount"]
    on_demand = groups[on_demand_group_id]
    target = max(on_demand["RequestedInstanceCount"], shortfall)
    if target > on_demand["RequestedInstanceCount"]:
        poll.echo(f"spot short by {shortfall}: resizing on-demand task group {on_demand_group_id} to {target}")
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


@dataclass
class EmptiedBucket:
    """What :func:`empty_bucket` deleted from one bucket."""

    bucket: str
    versions: int = 0
    delete_markers: int = 0
    bytes: int = 0
    # top-level prefix ("outputs/", "emr/", or the key itself) -> versions deleted
    prefixes: dict[str, int] = field(default_factory=dict)


def empty_bucket(client: Any, bucket: str) -> EmptiedBucket:
    """Delete every object version and delete marker in ``bucket``; return what went.

    Lists the first page again after each batch (no pagination markers to go
    stale while deleting) until the bucket is empty. Raises :class:`CtlError`
    when S3 refuses a delete or a batch does not take effect.
    """
    gone = EmptiedBucket(bucket)
    previous: list[tuple[str, str]] = []
    while True:
        page = client.list_object_versions(Bucket=bucket, MaxKeys=DELETE_BATCH)
        versions, markers = page.get("Versions", []), page.get("DeleteMarkers", [])
        batch = [(item["Key"], item["VersionId"]) for item in [*versions, *markers]]
        if not batch:
            return gone
        if batch == previous:
            raise CtlError(f"s3://{bucket}: {len(batch)} object versions are still there after deleting them")
        previous = batch
        for start in range(0, len(batch), DELETE_BATCH):
            chunk = batch[start : start + DELETE_BATCH]
            response = client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in chunk], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise CtlError(
                    f"s3://{bucket}: {len(errors)} deletes refused, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                )
        for item in versions:
            top = item["Key"].split("/", 1)[0] + ("/" if "/" in item["Key"] else "")
            gone.prefixes[top] = gone.prefixes.get(top, 0) + 1
            gone.bytes += item.get("Size", 0)
        gone.versions += len(versions)
        gone.delete_markers += len(markers)


def describe_emptied(gone: EmptiedBucket) -> list[str]:
    """Lines that say what :func:`empty_bucket` deleted."""
    lines = [
        f"deleted from s3://{gone.bucket}: {gone.versions} object versions ({gone.bytes} bytes), "
        f"{gone.delete_markers} delete markers"
    ]
    lines += [f"  {prefix}: {count} object versions" for prefix, count in sorted(gone.prefixes.items())]
    return lines


def s3_client(region: str) -> Any:
    """An S3 client with bounded, standard retries; honours AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
    return boto3.client("s3", region_name=region, config=config)


def emr_serverless_client(region: str) -> Any:
    """An EMR Serverless client with bounded, standard retries; honours AWS_ENDPOINT_URL."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
    return boto3.client("emr-serverless", region_name=region, config=config)


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
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="URI=S3URI",
        help="a model URI as the profile writes it and its uploaded s3:// prefix (repeat per model)",
    )
    parser.add_argument("--install-dir", default="/opt/image-tagger", help="code location on the nodes")
    parser.add_argument("--conf-dir", type=Path, default=DEFAULT_CONF_DIR, help="directory of the job profiles")
    sub = parser.add_subparsers(dest="command", required=True)

    def polling(p: argparse.ArgumentParser, timeout: float) -> None:
        p.add_argument("--poll", type=float, default=30.0, help="seconds between status checks")
        p.add_argument("--timeout", type=float, default=timeout, help="overall seconds to wait")

    submit = sub.add_parser("submit", help="add a spark-submit step of jobs/tag_images.py")
    submit.add_argument("--manifest", required=True, help="manifest URI (s3://...)")
    submit.add_argument("--profile", default="emr", help="profile name under conf/ (without .yaml)")
    submit.add_argument(
        "--output", help="output URI; default s3://<data bucket>/outputs/<profile>/tags/ (the Glue table's location)"
    )
    submit.add_argument(
        "--replace",
        dest="incremental",
        action="store_false",
        help="run the job without --incremental: it replaces the output instead of adding to it",
    )
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--name", help="step name")
    submit.add_argument("--no-wait", dest="wait", action="store_false", help="return once the step is added")
    polling(submit, 7200.0)

    serverless = sub.add_parser("submit-serverless", help="start an EMR Serverless job run of jobs/tag_images.py")
    serverless.add_argument("--manifest", required=True, help="manifest URI (s3://...)")
    serverless.add_argument("--profile", default="emr", help="profile name under conf/ (without .yaml)")
    serverless.add_argument("--output", help="output URI; default s3://<data bucket>/outputs/<profile>/tags/")
    serverless.add_argument("--replace", dest="incremental", action="store_false", help="run the job without --incremental")
    serverless.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    serverless.add_argument("--name", help="job run name")
    serverless.add_argument("--no-wait", dest="wait", action="store_false", help="return once the job run is started")
    polling(serverless, 7200.0)

    wait = sub.add_parser("wait", help="wait for a step to end")
    wait.add_argument("--step-id", required=True)
    polling(wait, 7200.0)

    fallback = sub.add_parser("fallback", help="cover missing spot task nodes with on-demand ones")
    polling(fallback, 900.0)

    check = sub.add_parser("check-models", help="exit 3 when an artifact directory the profile names lacks model.json")
    check.add_argument("--profile", default="emr", help="profile name under conf/ (without .yaml)")
    check.add_argument("--artifacts-root", type=Path, default=REPO, help="what relative model URIs resolve against")

    empty = sub.add_parser("empty-buckets", help="DESTRUCTIVE: delete every object version in the data and logs buckets")
    empty.add_argument(
        "--bucket", dest="buckets", action="append", default=[], help="bucket to empty (default: data and logs from terraform)"
    )
    return parser


def _facts(args: argparse.Namespace) -> ClusterFacts:
    if args.cluster_id:
        if not args.region:
            raise CtlError("--cluster-id needs --region")
        models = {}
        for item in args.models:
            uri, sep, remote = item.partition("=")
            if not sep or not uri or not remote:
                raise CtlError(f"--model expects URI=s3://..., got {item!r}")
            models[uri] = remote
        return ClusterFacts(
            cluster_id=args.cluster_id,
            region=args.region,
            data_bucket=args.data_bucket or "",
            model_uris=models,
            install_dir=args.install_dir,
        )
    return facts_from_outputs(terraform_outputs(args.tf_dir, args.terraform))


def _wait(client: Any, facts: ClusterFacts, step_id: str, args: argparse.Namespace) -> int:
    try:
        step = wait_for_step(client, facts.cluster_id, step_id, Poll(args.poll, args.timeout))
    except WaitTimeout as exc:
        log.error("%s; it keeps running: `emr_ctl.py wait --step-id %s` resumes waiting", exc, step_id)
        return EXIT_TIMEOUT
    state = step["Status"]["State"]
    if state == STEP_OK:
        return 0
    details = step["Status"].get("FailureDetails", {})
    log.error("step %s %s: %s %s", step_id, state, details.get("Reason", ""), details.get("LogFile", ""))
    return EXIT_FAILED


def job_run(args: argparse.Namespace, output: str) -> JobRun:
    """The run that `submit` / `submit-serverless` were asked for."""
    resolved = resolved_profile(args.profile, args.conf_dir)
    return JobRun(args.manifest, output, args.profile, resolved, args.overrides, args.incremental)


def run_name(args: argparse.Namespace) -> str:
    return args.name or f"tag-images {args.profile} {args.manifest.rsplit('/', 1)[-1]}"


def _submit(args: argparse.Namespace) -> int:
    facts = _facts(args)
    if not args.output and not facts.data_bucket:
        raise CtlError("pass --output s3://... or --data-bucket")
    output = args.output or default_output_uri(facts.data_bucket, args.profile)
    step_args = emr_step_args(facts, job_run(args, output))
    client = emr_client(facts.region)
    step_id = submit_step(client, facts.cluster_id, step_definition(run_name(args), step_args))
    mode = "adding to" if args.incremental else "replacing"
    print(f"submitted step {step_id} to {facts.cluster_id}: output {output} ({mode} it)")
    status = _wait(client, facts, step_id, args) if args.wait else 0
    if status == 0:
        hint = athena_hint(facts.glue_table, output)
        print(hint if args.wait else f"{hint}  (once step {step_id} has completed)")
    return status


def _submit_serverless(args: argparse.Namespace) -> int:
    facts = serverless_facts_from_outputs(terraform_outputs(args.tf_dir, args.terraform))
    output = args.output or default_output_uri(facts.data_bucket, args.profile)
    request = serverless_job_run(facts, job_run(args, output), name=run_name(args))
    client = emr_serverless_client(facts.region)
    job_run_id = client.start_job_run(**request)["jobRunId"]
    logs = job_run_log_uri(facts.log_uri, facts.application_id, job_run_id)
    mode = "adding to" if args.incremental else "replacing"
    print(f"started job run {job_run_id} on {facts.application_id}: output {output} ({mode} it); logs {logs}")
    if not args.wait:
        return 0
    try:
        run = wait_for_job_run(client, facts.application_id, job_run_id, Poll(args.poll, args.timeout))
    except WaitTimeout as exc:
        log.error("%s; it keeps running (logs %s)", exc, logs)
        return EXIT_TIMEOUT
    print(f"job run {job_run_id} {run['state']}: logs {logs}")
    if run["state"] != JOB_RUN_OK:
        log.error("job run %s %s: %s", job_run_id, run["state"], run.get("stateDetails", ""))
        return EXIT_FAILED
    summary = driver_stdout(s3_client(facts.region), logs)
    print(summary.rstrip() if summary else f"(the job's summary is not in {logs}SPARK_DRIVER/stdout.gz yet)")
    print(athena_hint(facts.glue_table, output))
    return 0


def _wait_for(args: argparse.Namespace) -> int:
    facts = _facts(args)
    return _wait(emr_client(facts.region), facts, args.step_id, args)


def _fallback(args: argparse.Namespace) -> int:
    facts = _facts(args)
    if not (facts.spot_group_id and facts.on_demand_group_id):
        raise CtlError("task instance group ids unknown: run from the terraform outputs (no --cluster-id)")
    requested = ensure_task_capacity(
        emr_client(facts.region),
        facts.cluster_id,
        facts.spot_group_id,
        facts.on_demand_group_id,
        Poll(args.poll, args.timeout),
    )
    print(f"on-demand task nodes requested: {requested}")
    return 0


def _check_models(args: argparse.Namespace) -> int:
    uris = profile_model_uris(resolved_profile(args.profile, args.conf_dir))
    remote = [uri for uri in uris if "://" in uri]
    if remote:
        raise CtlError(
            f"profile {args.profile} names {', '.join(remote)}: name local artifact directories "
            "instead (make deploy-cluster uploads them)"
        )
    missing = missing_artifacts(uris, args.artifacts_root)
    for uri in uris:
        print(f"{uri}: {'MISSING (no model.json)' if uri in missing else 'ok'}")
    return EXIT_MISSING if missing else 0


def _empty_buckets(args: argparse.Namespace) -> int:
    buckets, region = list(args.buckets), args.region
    if not buckets:
        outputs = terraform_outputs(args.tf_dir, args.terraform)
        names = outputs.get("bucket_names") or {}
        buckets = [names[purpose] for purpose in ("data", "logs") if names.get(purpose)]
        region = region or outputs.get("region")
        if not buckets:
            print(f"no data or logs bucket in the terraform outputs of {args.tf_dir}: nothing to empty")
            return 0
    if not region:
        raise CtlError("pass --region with --bucket")
    from botocore.exceptions import ClientError

    client = s3_client(region)
    for bucket in buckets:
        print(f"emptying s3://{bucket}: every object version and delete marker")
        try:
            gone = empty_bucket(client, bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise CtlError(f"s3://{bucket}: {exc}") from None
            print(f"s3://{bucket} does not exist: nothing to delete")
            continue
        print("\n".join(describe_emptied(gone)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "submit": _submit,
        "submit-serverless": _submit_serverless,
        "wait": _wait_for,
        "fallback": _fallback,
        "check-models": _check_models,
        "empty-buckets": _empty_buckets,
    }
    try:
        return commands[args.command](args)
    except CtlError as exc:
        log.error("%s", exc)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
