"""Local AWS emulator for the infrastructure tests: moto's server on 127.0.0.1.

Stock moto 5.2 answers HTTP 500 to four EMR actions that terraform-provider-aws
calls for every ``aws_emr_cluster`` (``ListInstanceFleets`` and the three
auto-termination policy actions), so create, refresh and destroy all fail; and
its ``AddInstanceGroups`` answer lacks ``InstanceGroupIds`` (the provider then
crashes creating ``aws_emr_instance_group``). This launcher registers small
handlers for these on moto's EMR response class, then runs moto's server. It only ever binds 127.0.0.1.

A second patch: moto evaluates bucket policies without request context and
ignores the ``Bool`` condition operator, so the usual TLS-only statement
(Deny when ``aws:SecureTransport`` is false) denies every object request.
The emulator stands in for AWS's HTTPS endpoint, so that statement is left
out of its object-level checks; every other statement still applies. And
moto's PutBucketLogging permission check crashes on a ``"Principal": "*"``
statement, so it only looks at statements with a service principal.

Last, moto's in-memory backends are not safe for concurrent requests, which
Terraform sends (10 at a time): ListObjectVersions while other threads delete
versions answers HTTP 500 now and then, and an AuthorizeSecurityGroupEgress
was once answered InvalidPermission.Duplicate for a rule created only once.
The emulator handles one request at a time (a lock around moto's WSGI app);
Terraform's waits happen on its side, so this costs little.

Run it alone::

    python tests/infra/emulator.py --port 5055

or from Python with :func:`running_emulator`, which starts it as a subprocess
on a free port, waits (bounded) until it answers and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HOST = "127.0.0.1"


def patch_moto_emr() -> None:
    """Register the EMR actions moto lacks on its EMR response class."""
    from moto.core.responses import ActionResult, EmptyResult
    from moto.emr.responses import ElasticMapReduceResponse

    def _cluster(self: Any) -> Any:
        return self.backend.describe_cluster(self._get_param("ClusterId"))

    def list_instance_fleets(self: Any) -> ActionResult:
        # Clusters built from instance groups have no fleets.
        _cluster(self)
        return ActionResult({"InstanceFleets": []})

    def get_auto_termination_policy(self: Any) -> ActionResult:
        policy = getattr(_cluster(self), "auto_termination_policy", None)
        return ActionResult({"AutoTerminationPolicy": policy} if policy else {})

    def put_auto_termination_policy(self: Any) -> ActionResult:
        cluster = _cluster(self)
        cluster.auto_termination_policy = _idle_timeout(self._get_param("AutoTerminationPolicy"))
        return EmptyResult()

    def remove_auto_termination_policy(self: Any) -> ActionResult:
        _cluster(self).auto_termination_policy = None
        return EmptyResult()

    def add_instance_groups(self: Any) -> ActionResult:
        # moto answers {"InstanceGroups": [...]}, which is not the API's shape:
        # clients (terraform-provider-aws) then find no InstanceGroupIds.
        cluster_id = self._get_param("JobFlowId")
        groups = self.backend.add_instance_groups(cluster_id, self._get_param("InstanceGroups", []))
        cluster = self.backend.describe_cluster(cluster_id)
        return ActionResult({"JobFlowId": cluster_id, "InstanceGroupIds": [g.id for g in groups], "ClusterArn": cluster.arn})

    def get_region_from_url(self: Any, request: Any, full_url: str) -> str:
        # An endpoint such as http://127.0.0.1:PORT names no region: take the
        # one the request was signed for, as AWS's regional endpoints imply.
        for regex in ElasticMapReduceResponse.emr_region_regex:
            match = regex.search(self.parsed_url.netloc)
            if match:
                return match.group(1)
        signed = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", request.headers.get("Authorization", ""))
        return signed.group(1) if signed else self.default_region

    original_run_job_flow = ElasticMapReduceResponse.run_job_flow

    def run_job_flow(self: Any) -> ActionResult:
        result = original_run_job_flow(self)
        policy = self._get_param("AutoTerminationPolicy")
        if policy:
            cluster = self.backend.describe_cluster(result.result["JobFlowId"])
            cluster.auto_termination_policy = _idle_timeout(policy)
        return result

    ElasticMapReduceResponse.get_region_from_url = get_region_from_url
    ElasticMapReduceResponse.add_instance_groups = add_instance_groups
    ElasticMapReduceResponse.list_instance_fleets = list_instance_fleets
    ElasticMapReduceResponse.get_auto_termination_policy = get_auto_termination_policy
    ElasticMapReduceResponse.put_auto_termination_policy = put_auto_termination_policy
    ElasticMapReduceResponse.remove_auto_termination_policy = remove_auto_termination_policy
    ElasticMapReduceResponse.run_job_flow = run_job_flow


def patch_moto_s3_tls_only_policies() -> None:
    """Treat requests as TLS when moto checks a bucket policy (see the module docstring)."""
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        policy = json.loads(self.policy.decode())
        statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
        kept = [s for s in statements if not _denies_plain_http(s)]
        if not kept:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission

    # moto's PutBucketLogging check reads Principal as a dict and crashes
    # (HTTP 500) on a statement with "Principal": "*"; look at the others only.
    original_log_check = FakeBucket._log_permissions_enabled_policy

    def log_permissions_enabled_policy(target_bucket: Any, target_prefix: str | None) -> bool:
        if not target_bucket.policy:
            return False
        policy = json.loads(target_bucket.policy.decode())
        statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
        usable = [s for s in statements if isinstance(s.get("Principal"), dict)]
        view = SimpleNamespace(
            policy=json.dumps({**policy, "Statement": usable}).encode(),
            partition=target_bucket.partition,
            name=target_bucket.name,
        )
        return original_log_check(view, target_prefix)

    FakeBucket._log_permissions_enabled_policy = staticmethod(log_permissions_enabled_policy)


def patch_moto_emr_serverless_created_state() -> None:
    """A new EMR Serverless application is CREATED, as on AWS, not STARTED.

    moto starts every application at once, and then refuses DeleteApplication (only CREATED or
    STOPPED applications may be deleted), so Terraform could never destroy one. On AWS an
    application with auto-start stays CREATED until its first job run.
    """
    from moto.emrserverless import models

    models.APPLICATION_STATUS = "CREATED"


def patch_moto_ec2_rule_descriptions() -> None:
    """Keep the description of rules that reference another security group.

    moto reads a rule's description from its CIDR range only, so rules with a
    ReferencedGroupId lose it and Terraform sees a perpetual diff.
    """
    from moto.ec2.models.security_groups import SecurityGroupRule

    SecurityGroupRule.description = property(
        lambda self: self.ip_range.get("Description") or self.source_group.get("Description")
    )


def patch_moto_ec2_revoke_by_rule_id() -> None:
    """Answer an unknown rule id like AWS: InvalidSecurityGroupRuleId.NotFound.

    Destroying EMR security groups with revoke_rules_on_delete can revoke a
    cross-group rule that its own rule resource then revokes again. AWS answers
    InvalidSecurityGroupRuleId.NotFound, which terraform-provider-aws treats as
    already gone; moto answers InvalidPermission.NotFound, which fails destroy.
    """
    from moto.ec2.exceptions import InvalidPermissionNotFoundError, InvalidSecurityGroupRuleIdNotFoundError
    from moto.ec2.models.security_groups import SecurityGroupBackend

    def by_rule_id(original: Any) -> Any:
        def revoke(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            except InvalidPermissionNotFoundError:
                rule_ids = kwargs.get("security_rule_ids")
                if rule_ids:
                    raise InvalidSecurityGroupRuleIdNotFoundError(",".join(rule_ids)) from None
                raise

        return revoke

    SecurityGroupBackend.revoke_security_group_ingress = by_rule_id(SecurityGroupBackend.revoke_security_group_ingress)
    SecurityGroupBackend.revoke_security_group_egress = by_rule_id(SecurityGroupBackend.revoke_security_group_egress)


def serialize_moto_requests() -> None:
    """Dispatch one request at a time to moto's backends (see the module docstring)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    lock = threading.Lock()
    dispatch = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        with lock:
            return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


def _denies_plain_http(statement: dict[str, Any]) -> bool:
    condition = statement.get("Condition") or {}
    return statement.get("Effect") == "Deny" and "aws:SecureTransport" in (condition.get("Bool") or {})


def _idle_timeout(policy: Any) -> dict[str, int] | None:
    if not policy:
        return None
    value = policy.get("IdleTimeout") if hasattr(policy, "get") else None
    return {"IdleTimeout": int(value)} if value is not None else None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_up(endpoint: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll the server's reset endpoint until it answers; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"emulator at {endpoint} did not answer within {timeout_s:.0f}s")


@contextlib.contextmanager
def running_emulator(log_path: Path | None = None, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Start the patched moto server in a subprocess; yield its endpoint URL."""
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    log_file = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_until_up(endpoint, proc, startup_timeout_s)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log_path:
            log_file.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    patch_moto_emr()
    patch_moto_s3_tls_only_policies()
    patch_moto_ec2_rule_descriptions()
    patch_moto_ec2_revoke_by_rule_id()
    patch_moto_emr_serverless_created_state()
    serialize_moto_requests()
    from moto.server import main as moto_main

    moto_main(["-H", HOST, "-p", str(args.port)])


if __name__ == "__main__":
    main()
