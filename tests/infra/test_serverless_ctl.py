"""make submit-serverless's request (infra/scripts/emr_ctl.py), its wait, and the Serverless cost rows."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from infra.scripts import emr_ctl
from jobs.config import resolve
from tools.benchmark import cost

REPO = Path(__file__).resolve().parents[2]
EMR = resolve(REPO / "conf" / "emr.yaml")
UPLOADED = {uri: f"s3://art/models/{Path(uri).name}" for uri in [EMR["model"]["uri"], *(h["uri"] for h in EMR["model"]["heads"])]}
FACTS = emr_ctl.ServerlessFacts(
    application_id="00app",
    job_role_arn="arn:aws:iam::123456789012:role/job",
    archive_uri="s3://art/code/node-env-abc.tar.gz",
    entry_point="s3://art/code/tag_images-abc.py",
    log_uri="s3://logs/serverless/",
    region="eu-west-1",
    data_bucket="data",
    model_uris=UPLOADED,
)


def spark_params(request: dict) -> dict[str, str]:
    words = shlex.split(request["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"])
    assert words[::2] == ["--conf"] * (len(words) // 2)
    return dict(word.split("=", 1) for word in words[1::2])


def test_the_job_run_takes_the_arguments_submit_builds_and_the_profiles_spark_settings() -> None:
    run = emr_ctl.JobRun("s3://data/m.csv", "s3://data/out/", "emr", EMR, overrides=["a=b"])
    request = emr_ctl.serverless_job_run(FACTS, run, name="n")
    step = emr_ctl.emr_step_args(emr_ctl.ClusterFacts("j-1", "eu-west-1", "data", UPLOADED), run)
    arguments = request["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    # The same job arguments as the cluster's step; only the profile comes from the packed environment.
    assert arguments == [a.replace("/opt/image-tagger/conf", "./environment/conf") for a in step[6:]]
    assert request["jobDriver"]["sparkSubmit"]["entryPoint"] == FACTS.entry_point
    conf = spark_params(request)
    assert conf["spark.archives"] == "s3://art/code/node-env-abc.tar.gz#environment"
    assert conf["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert conf["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] == "./environment/bin/python"
    assert conf["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert {key: conf[key] for key in EMR["spark"]["conf"]} == EMR["spark"]["conf"]
    assert request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == FACTS.log_uri


def test_a_gpu_profile_is_refused_naming_the_reason() -> None:
    gpu = resolve(REPO / "conf" / "gpu.yaml")
    with pytest.raises(emr_ctl.CtlError, match="no GPU workers"):
        emr_ctl.serverless_spark_conf(gpu, FACTS.archive_uri)


def test_a_setting_with_spaces_or_one_submit_owns_is_refused() -> None:
    spaced = {"spark": {"conf": {"spark.driver.extraJavaOptions": "-Da=1 -Db=2"}}}
    with pytest.raises(emr_ctl.CtlError, match="extraJavaOptions"):
        emr_ctl.serverless_spark_conf(spaced, FACTS.archive_uri)
    owned = {"spark": {"conf": {"spark.archives": "s3://elsewhere"}}}
    with pytest.raises(emr_ctl.CtlError, match="spark.archives"):
        emr_ctl.serverless_spark_conf(owned, FACTS.archive_uri)


def test_facts_need_a_deployed_application() -> None:
    with pytest.raises(emr_ctl.CtlError, match="make deploy-serverless"):
        emr_ctl.serverless_facts_from_outputs({"region": "eu-west-1", "bucket_names": {"data": "d"}})


class FakeServerless:
    def __init__(self, states: list[str]):
        self.states = states

    def get_job_run(self, applicationId: str, jobRunId: str) -> dict:
        return {"jobRun": {"state": self.states.pop(0) if len(self.states) > 1 else self.states[0]}}


def test_wait_polls_until_the_job_run_ends_and_times_out_without_oversleeping() -> None:
    now, slept, echoed = [0.0], [], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    poll = emr_ctl.Poll(5, 12, clock=lambda: now[0], sleep=sleep, echo=echoed.append)
    run = emr_ctl.wait_for_job_run(FakeServerless(["PENDING", "RUNNING", "FAILED"]), "a", "r", poll)
    assert run["state"] == "FAILED" and slept == [5, 5] and "RUNNING" in echoed[1]
    now[0], slept[:] = 0.0, []
    with pytest.raises(emr_ctl.WaitTimeout):
        emr_ctl.wait_for_job_run(FakeServerless(["RUNNING"]), "a", "r", poll)
    assert sum(slept) == 12


def test_the_log_location_is_the_job_runs_prefix() -> None:
    assert emr_ctl.job_run_log_uri("s3://logs/serverless/", "app", "run") == "s3://logs/serverless/applications/app/jobs/run/"


def test_serverless_cost_uses_the_profiles_executor_size() -> None:
    assert cost.executor_size(
        {"spark.executor.cores": "4", "spark.executor.memory": "6g", "spark.executor.memoryOverhead": "3g"}
    ) == (
        4,
        9.0,
    )
    assert cost.executor_size({"spark.executor.memory": "4g"}) == (1, 5.0)  # default overhead 10%, min 384 MiB
    serverless = cost.ServerlessPrices(vcpu_usd_h=0.05, gb_usd_h=0.005)
    # 4 vCPUs x 0.05 + 9 GB x 0.005 = 0.245 $/h for 4 x 25 = 100 images/s.
    assert cost.serverless_cost_per_million(serverless, 25.0, 4, 9.0) == pytest.approx(0.245 / 360_000 * 1e6)
    prices = cost.load_prices(REPO / "conf" / "prices.yaml")
    rows = {row["profile"]: row for row in cost.serverless_projections(prices, 25.0, {"emr": EMR["spark"]["conf"]})}
    assert rows["emr"]["available"] and rows["emr"]["vcpus"] == 4 and rows["emr"]["cost_per_million_usd"] > 0
    gpu = resolve(REPO / "conf" / "gpu.yaml")["spark"]["conf"]
    assert not cost.serverless_projections(prices, 25.0, {"gpu": gpu})[0]["available"]
