"""The job as a user runs it: the real spark-submit, real model, file:// and s3:// images."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.config import load_settings
from jobs.spark_args import job_command

REPO = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def test_bad_arguments_fail_fast_naming_the_problem(capsys, tmp_path):
    assert main(["--manifest", "m.csv", "--output", str(tmp_path), "--set", "fetch.threads=0"]) == 2
    assert "fetch.threads=0: must be between 1 and 256" in capsys.readouterr().err
    assert main(["--manifest", "m.csv", "--output", str(tmp_path), "--profile", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    assert main(["--manifest", "m.csv", "--output", str(tmp_path), "--set", f"model.uri={tmp_path}"]) == 2
    assert "model artifact file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])  # argparse: --manifest is required


@pytest.mark.e2e
def test_spark_submit_end_to_end(tmp_path, photos, s3_bucket, model_dir):
    spaced = tmp_path / "shop images" / "chelsea the cat.png"
    spaced.parent.mkdir()
    shutil.copy(photos["chelsea"], spaced)
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image")
    rows = [
        ("coffee-file", photos["coffee"].as_uri(), "ok", "espresso"),
        ("cat-file", spaced.as_uri(), "ok", "cat"),
        ("rocket-file", photos["rocket"].as_uri(), "ok", None),
        ("coffee-s3", f"s3://{s3_bucket}/shop/coffee.png", "ok", "espresso"),
        ("cat-s3", f"s3://{s3_bucket}/shop/cat photo.png", "ok", "cat"),
        ("missing-s3", f"s3://{s3_bucket}/shop/missing.png", "error", "fetch: S3 NoSuchKey (HTTP 404)"),
        ("empty-s3", f"s3://{s3_bucket}/shop/empty.jpg", "error", "decode: empty body (0 bytes)"),
        ("zero-file", (tmp_path / "zero.jpg").as_uri(), "error", "decode: empty body (0 bytes)"),
        ("text-file", (tmp_path / "notes.jpg").as_uri(), "error", "decode: not an image"),
        ("missing-file", (tmp_path / "gone.jpg").as_uri(), "error", "fetch: file not found"),
    ]
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"image_id": [r[0] for r in rows], "url": [r[1] for r in rows]}), manifest)
    output = tmp_path / "out"
    settings = load_settings(overrides=["spark.master=local[2]"])
    overrides = ["spark.master=local[2]", f"model.uri={model_dir}", "fetch.max_attempts=2"]
    command = job_command(settings, manifest=manifest, output=output, overrides=overrides, spark_submit=SPARK_SUBMIT)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rows in     10" in result.stdout and "ok          5" in result.stdout and "error       5" in result.stdout
    assert "skipped     0" in result.stdout

    table = pq.read_table(output).to_pylist()
    assert len(table) == len(rows)
    by_id = {row["image_id"]: row for row in table}
    assert set(by_id) == {r[0] for r in rows}
    for image_id, url, status, expect in rows:
        row = by_id[image_id]
        assert row["url"] == url and row["status"] == status
        assert row["model_name"] == "efficientnet_lite0" and len(row["model_version"]) == 12
        assert row["processed_at"] is not None
        if status == "ok":
            assert row["error"] is None and len(row["tags"]) == 5
            scores = [t["score"] for t in row["tags"]]
            assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
            top = row["tags"][0]["label"]
            if expect == "cat":
                assert top in {"tiger cat", "Egyptian cat", "tabby"}
            elif expect:
                assert top == expect
        else:
            assert row["tags"] is None and row["error"].startswith(expect), row["error"]


@pytest.mark.spark
def test_a_uri_spark_has_no_filesystem_for_is_named(spark):
    from jobs.config import ConfigError
    from jobs.session import require_filesystems

    require_filesystems(spark, {"--manifest": "/tmp/m.csv", "--output": "file:///tmp/out"})
    with pytest.raises(ConfigError, match=r"--output s3://bucket/out: this Spark has no Hadoop filesystem for s3://"):
        require_filesystems(spark, {"--manifest": "/tmp/m.csv", "--output": "s3://bucket/out"})


@pytest.mark.e2e
def test_s3_manifest_in_local_mode_exits_2_with_what_to_do(tmp_path):
    settings = load_settings(overrides=["spark.master=local[1]"])
    command = job_command(
        settings, manifest="s3://shop-images/manifest.csv", output=tmp_path / "out", overrides=["spark.master=local[1]"],
        spark_submit=SPARK_SUBMIT,
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    said = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert "error: --manifest s3://shop-images/manifest.csv: this Spark has no Hadoop filesystem for s3://" in said
    assert "Run the job on EMR" in said and "hadoop-aws" in said
    assert "Traceback" not in said and "Py4JJavaError" not in said
    assert not (tmp_path / "out").exists()  # nothing was started or written
