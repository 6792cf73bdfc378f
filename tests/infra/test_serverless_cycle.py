"""make deploy-serverless / submit-serverless / destroy-serverless against the local AWS emulator.

The Makefile targets run as a user runs them (tests/infra/test_terraform_cycle.py drives the
cluster the same way). The application is deployed alone, without the cluster, the job run's
request is read back as EMR Serverless holds it (arguments, Spark parameters, logs), and the
destroy leaves the buckets and the Glue table. The packed environment is the real one
(dist/node-env.tar.gz: built once, reused while the wheels and the code are unchanged).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import boto3
import pytest

from infra.scripts import emr_ctl
from jobs.config import resolve
from tests.infra.infra_support import REGION, REPO, provider_mirror, terraform_binary
from tests.infra.test_terraform_cycle import check, make

NAME = "tagger-sls"


@pytest.mark.infra
def test_deploy_submit_destroy_serverless(aws_env: dict[str, str], tmp_path: Path) -> None:
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    for tf_file in (REPO / "infra" / "terraform").glob("*.tf"):
        shutil.copy(tf_file, tf_dir)
    make_vars = [
        f"TF_DIR={tf_dir}",
        f"TF_PLUGIN_DIR={provider_mirror()}",
        f"TERRAFORM={terraform_binary()}",
        f"PY={sys.executable}",
        f"CODE_PACKAGE={tmp_path / 'dist' / 'code.tar.gz'}",
        f"RESOLVED_PROFILE={tmp_path / 'dist' / 'profile-emr.json'}",
        f"REGION={REGION}",
        "PROFILE=emr",
        f"TF_ARGS=-var name={NAME} -var serverless_max_vcpu=64 -var serverless_idle_timeout_minutes=10",
        "POLL=1",
    ]
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    endpoint = aws_env["AWS_ENDPOINT_URL"]
    serverless, s3, glue = (session.client(name, endpoint_url=endpoint) for name in ("emr-serverless", "s3", "glue"))

    try:
        check(make("deploy-serverless", aws_env, *make_vars, timeout=420))
        outputs = emr_ctl.terraform_outputs(tf_dir)
        assert outputs.get("cluster_id") is None, "deploy-serverless must not create the cluster"  # null: left out
        facts = emr_ctl.serverless_facts_from_outputs(outputs)
        app = serverless.get_application(applicationId=facts.application_id)["application"]
        assert app["releaseLabel"] == "emr-7.13.0" and app["type"].lower() == "spark"
        assert app["maximumCapacity"] == {"cpu": "64 vCPU", "memory": "3000 GB"}
        assert app["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 10}
        archive_bucket, _, archive_key = facts.archive_uri.removeprefix("s3://").partition("/")
        assert archive_key.startswith("code/node-env-") and archive_bucket == outputs["bucket_names"]["artifacts"]
        assert s3.head_object(Bucket=archive_bucket, Key=archive_key)["ContentLength"] > 10_000_000
        assert facts.model_uris, "the profile's models are uploaded for the application too"

        manifest = f"s3://{facts.data_bucket}/manifests/batch-001.csv"
        out = check(make("submit-serverless", aws_env, *make_vars, f"MANIFEST={manifest}", "SET=fetch.threads=8"))
        assert "SUCCESS" in out and f"applications/{facts.application_id}/jobs/" in out, out[-3000:]
        (listed,) = serverless.list_job_runs(applicationId=facts.application_id)["jobRuns"]
        run = serverless.get_job_run(applicationId=facts.application_id, jobRunId=listed["id"])["jobRun"]
        assert run["executionRole"] == facts.job_role_arn
        submit = run["jobDriver"]["sparkSubmit"]
        assert submit["entryPoint"] == facts.entry_point
        resolved = resolve(REPO / "conf" / "emr.yaml")
        job = emr_ctl.JobRun(manifest, f"s3://{facts.data_bucket}/outputs/emr/tags/", "emr", resolved, ["fetch.threads=8"])
        assert submit["entryPointArguments"] == job.arguments("./environment/conf/emr.yaml", facts.model_uris)
        words = shlex.split(submit["sparkSubmitParameters"])
        conf = dict(value.split("=", 1) for flag, value in zip(words[::2], words[1::2], strict=True) if flag == "--conf")
        assert conf["spark.archives"] == f"{facts.archive_uri}#environment"
        for key in ("spark.emr-serverless.driverEnv.PYSPARK_PYTHON", "spark.executorEnv.PYSPARK_PYTHON"):
            assert conf[key] == "./environment/bin/python"
        assert {k: conf[k] for k in resolved["spark"]["conf"]} == resolved["spark"]["conf"]
        logs = run["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"]
        assert logs == facts.log_uri

        check(make("destroy-serverless", aws_env, *make_vars, timeout=300))
        outputs = emr_ctl.terraform_outputs(tf_dir)
        assert outputs.get("serverless") is None
        assert serverless.get_application(applicationId=facts.application_id)["application"]["state"] == "TERMINATED"
        s3.head_bucket(Bucket=facts.data_bucket)  # kept, like the Glue table
        assert glue.get_table(DatabaseName=NAME.replace("-", "_"), Name="tags")["Table"]["StorageDescriptor"]["Location"]
    finally:
        check(make("destroy-all", aws_env, *make_vars, timeout=300))
