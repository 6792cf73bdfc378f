"""Shared fixtures: one local[2] SparkSession, the real model artifact, real photos, S3."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import boto3
import pytest

from tools.datasets import skimage_data_dir

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "model" / "artifacts" / "efficientnet_lite0"
LOCAL_PROFILE = REPO / "conf" / "local.yaml"
# What the tests need on top of the local profile: few shuffle partitions, timestamps in UTC.
TEST_SPARK_CONF = {"spark.sql.shuffle.partitions": "2", "spark.sql.session.timeZone": "UTC"}

# Everything local stays on loopback; Python workers use this interpreter.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_CONF_DIR", str(REPO / "conf" / "spark"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark(aws_endpoint):
    """The local profile's Spark settings (the job's default, C1-only JIT included) on local[2].

    Started after the S3 emulator so Python workers inherit AWS_ENDPOINT_URL.
    """
    from pyspark.sql import SparkSession

    from jobs.config import load_settings

    conf = load_settings(LOCAL_PROFILE).spark.conf | TEST_SPARK_CONF
    builder = SparkSession.builder.master("local[2]").appName("image-tagger-tests")
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL_DIR / "model.json").exists():
        pytest.fail(f"model artifact missing at {MODEL_DIR}: run `make install` (or `make model`)")
    return MODEL_DIR


@pytest.fixture(scope="session")
def artifact(model_dir):
    from model.artifact import load_artifact

    return load_artifact(str(model_dir))


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos that ship in the scikit-image wheel."""
    data = skimage_data_dir()
    return {name: data / f"{name}.png" for name in ("coffee", "chelsea", "astronaut", "motorcycle_left")} | {
        "rocket": data / "rocket.jpg"
    }


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory):
    """An AWS emulator (moto server) on 127.0.0.1 for the whole session; env points at it."""
    from tests.infra.emulator import running_emulator

    log = tmp_path_factory.mktemp("emulator") / "moto.log"
    saved = {
        k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    with running_emulator(log) as endpoint:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        from jobs.fetch import _cached_s3_client

        _cached_s3_client.cache_clear()
        yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_bucket(aws_endpoint):
    """A bucket on the emulator with two real photos uploaded."""
    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="images")
    data = skimage_data_dir()
    s3.upload_file(str(data / "coffee.png"), "images", "shop/coffee.png")
    s3.upload_file(str(data / "chelsea.png"), "images", "shop/cat photo.png")
    s3.put_object(Bucket="images", Key="shop/empty.jpg", Body=b"")
    return "images"
