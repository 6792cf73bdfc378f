"""Every Spark setting a profile names exists in the pinned Spark (Spark ignores unknown keys)."""

from pathlib import Path

import pytest
import yaml

from jobs.spark_keys import spark_version, unknown_keys

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted((REPO / "conf").glob("*.yaml"))
PINNED = next(
    line.split("==")[1].strip() for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("pyspark==")
)

pytestmark = pytest.mark.spark


def test_the_suite_runs_the_pinned_spark(spark):
    assert spark_version(spark.sparkContext._jvm) == PINNED


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.name != "prices.yaml"], ids=lambda p: p.name)
def test_profile_sets_only_spark_keys_this_version_knows(spark, profile):
    keys = (yaml.safe_load(profile.read_text()).get("spark") or {}).get("conf") or {}
    assert unknown_keys(spark.sparkContext._jvm, keys) == [], f"{profile.name} sets keys Spark {PINNED} lacks"


def test_an_unknown_or_misspelt_key_is_reported(spark):
    keys = [
        "spark.sql.execution.arrow.maxRecordsPerBatch",
        "spark.sql.execution.arrow.maxRecordPerBatch",
        "spark.executor.resource.gpu.amount",
        "spark.python.worker.reuse",
        "spark.no.such.setting",
    ]
    assert unknown_keys(spark.sparkContext._jvm, keys) == ["spark.no.such.setting", "spark.sql.execution.arrow.maxRecordPerBatch"]
