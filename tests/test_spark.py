"""DataFrame-level tests on the session's local[2] SparkSession."""

from collections import Counter

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from jobs.config import load_settings
from jobs.decode import prepare_with
from jobs.infer import ModelBundle
from jobs.manifest import ManifestError, read_manifest, stable_image_id, with_image_ids
from jobs.metrics import StageTimes
from jobs.phash import perceptual_hash
from jobs.pipeline import tag_dataframe
from jobs.schema import OUTPUT_SCHEMA

pytestmark = pytest.mark.spark


def test_image_id_defaults_to_stable_url_hash(spark):
    raw = spark.createDataFrame([("file:///a.jpg",), ("s3://b/c d.png",), (None,)], "url string")
    expected = spark.createDataFrame(
        [
            (stable_image_id("file:///a.jpg"), "file:///a.jpg"),
            (stable_image_id("s3://b/c d.png"), "s3://b/c d.png"),
            (stable_image_id(""), None),
        ],
        "image_id string, url string",
    )
    assert_df_equality(with_image_ids(raw), expected, ignore_row_order=True)


def test_given_image_ids_kept_blank_ones_filled(spark):
    raw = spark.createDataFrame([("x1", "u1", 5), ("", "u2", 6), (None, "u3", 7)], "image_id string, URL string, extra int")
    expected = spark.createDataFrame(
        [("x1", "u1"), (stable_image_id("u2"), "u2"), (stable_image_id("u3"), "u3")], "image_id string, url string"
    )
    assert_df_equality(with_image_ids(raw), expected, ignore_row_order=True)


def test_missing_url_column_fails_with_its_name(spark):
    with pytest.raises(ManifestError, match=r"manifest has no 'url' column \(columns: path, id\)"):
        with_image_ids(spark.createDataFrame([("a", "b")], "path string, id string"))


def test_reads_parquet_csv_and_text(spark, tmp_path):
    rows = [("i1", "file:///x/1.jpg"), ("i2", "s3://bucket/2.jpg")]
    expected = spark.createDataFrame(rows, "image_id string, url string")
    expected.write.parquet(str(tmp_path / "m.parquet"))
    (tmp_path / "m.csv").write_text("image_id,url\ni1,file:///x/1.jpg\ni2,s3://bucket/2.jpg\n")
    (tmp_path / "m.txt").write_text("# comment\nfile:///x/1.jpg\n\n  s3://bucket/2.jpg  \n")
    assert_df_equality(read_manifest(spark, str(tmp_path / "m.parquet")), expected, ignore_row_order=True)
    assert_df_equality(read_manifest(spark, str(tmp_path / "m.csv")), expected, ignore_row_order=True)
    from_text = read_manifest(spark, str(tmp_path / "m.txt"))
    assert sorted(r.url for r in from_text.collect()) == ["file:///x/1.jpg", "s3://bucket/2.jpg"]
    assert {r.image_id for r in from_text.collect()} == {stable_image_id(u) for _, u in rows}
    with pytest.raises(ManifestError, match="not one of"):
        read_manifest(spark, str(tmp_path / "m.csv"), "json")


def test_tag_dataframe_one_row_per_input_and_model_once_per_worker(spark, artifact, photos, tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    urls = [
        photos["coffee"].as_uri(),
        photos["chelsea"].as_uri(),
        (tmp_path / "zero.jpg").as_uri(),
        (tmp_path / "missing.jpg").as_uri(),
    ] * 3
    rows = [(u, f"id{i}") for i, u in enumerate(urls)]
    manifest = with_image_ids(spark.createDataFrame(rows, "url string, image_id string")).repartition(6)
    settings = load_settings(overrides=["inference.batch_size=4", "model.embedding=false"])
    times = spark.sparkContext.accumulator(Counter(), StageTimes())
    out = tag_dataframe(manifest, ModelBundle(artifact), settings, times, run_id="run-1")
    assert out.schema == OUTPUT_SCHEMA
    rows = {r.image_id: r for r in out.collect()}
    assert len(rows) == len(urls)
    for i, url in enumerate(urls):
        row = rows[f"id{i}"]
        assert row.url == url and row.model_name == "efficientnet_lite0" and row.model_version == artifact.version
        assert row.run_id == "run-1"
        if url.endswith(("coffee.png", "chelsea.png")):
            assert row.status == "ok" and row.error is None and len(row.tags) == 5
            # The hash of the decoded model input, every bit of it (batches mix hashes and nulls).
            photo = photos[url.rsplit("/", 1)[1].removesuffix(".png")]
            assert row.phash == perceptual_hash(prepare_with(photo.read_bytes(), settings.decode)) > 2**53
        else:
            assert row.status == "error" and row.tags is None and row.phash is None
    assert rows["id0"].tags[0].label == "espresso"
    assert rows["id2"].error == "decode: empty body (0 bytes)"
    assert rows["id3"].error.startswith("fetch: file not found")
    # Six tasks ran on two Python workers: the model was built at most once per worker.
    assert times.value["tasks"] == 6
    assert 1 <= times.value["model_builds"] <= 2
    # One timeline entry per task, in wall-clock order within each, images summing to the tagged ones.
    timeline = times.value["task_timeline"]
    assert len(timeline) == 6 and sum(t["images"] for t in timeline) == times.value["images"]
    assert all(t["start"] <= t["ready"] <= t["end"] for t in timeline) and len({t["worker"] for t in timeline}) <= 2
    assert times.value["worker_start_at_min"] <= times.value["task_start_at_min"] <= times.value["ready_at_min"]
    assert out.where(F.col("processed_at").isNull()).count() == 0
