"""The ledger per model set: reruns do only what each image lacks, heads from stored embeddings."""

import shutil
from unittest import mock

import pytest
from pyspark.sql import functions as F

from jobs.config import load_settings
from jobs.driver import JobArgs, TaggingRun
from jobs.infer import ModelBundle
from model.artifact import ModelArtifact, load_artifact
from tests.test_heads import make_head

pytestmark = [pytest.mark.spark, pytest.mark.job]


@pytest.fixture(scope="module")
def backbone(model_dir):
    return load_artifact(str(model_dir.parent / "efficientnet_lite0_tflite"))


@pytest.fixture(scope="module")
def heads(tmp_path_factory, artifact):
    """Two heads, and a retrained A (new weights, so a new version), on the backbone's embedding."""
    root = tmp_path_factory.mktemp("heads")
    names = {"a": "head_a", "b": "head_b", "a2": "head_a"}  # a2: head_a retrained
    made = {key: load_artifact(str(make_head(root / key, artifact.version, name=name))) for key, name in names.items()}
    assert len({head.version for head in made.values()}) == 3
    return made


@pytest.fixture
def catalogue(photos, tmp_path):
    """Three photos (copies the test may delete) and a broken file; a manifest of them."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        shutil.copy(photos[name], folder / photos[name].name)
    (folder / "bad.jpg").write_text("not an image")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_id,url\n" + "".join(f"{p.stem},{p.as_uri()}\n" for p in sorted(folder.iterdir())))
    return folder, str(manifest)


def bundle(backbone, heads, names, *, version=None):
    backbone = backbone if version is None else ModelArtifact({**backbone.meta, "version": version}, backbone.files)
    columns = {"a2": "a"}  # the retrained head writes the same column
    return ModelBundle(backbone, tuple((columns.get(n, n), heads[n]) for n in names))


def tag_run(spark, models, manifest, out, *, incremental, embedding=True, chunks=1):
    settings = load_settings(
        overrides=[
            "spark.partitions=2",
            "inference.batch_size=8",
            f"output.chunks={chunks}",
            f"model.embedding={str(embedding).lower()}",
        ]
    )
    result = TaggingRun(spark, settings, models, JobArgs(manifest, str(out), incremental=incremental)).execute()
    return {"run_id": result.run_id, "resumed": result.resumed, **result.counts}


def rows_of(spark, out, run_id):
    written = spark.read.option("mergeSchema", "true").parquet(str(out)).where(F.col("run_id") == run_id)
    return {r["image_id"]: r.asDict(recursive=True) for r in written.collect()}


class Killed(Exception):
    """The driver dying between two chunks."""


def resumed_run(spark, models, manifest, out, **kwargs):
    """The same run killed after its first chunk committed, then started again with the same arguments."""
    calls = []
    real_write = TaggingRun._write

    def dies_after_first_chunk(self, *args, **kw):
        if calls:
            raise Killed
        calls.append(1)
        return real_write(self, *args, **kw)

    with mock.patch.object(TaggingRun, "_write", dies_after_first_chunk), pytest.raises(Killed):
        tag_run(spark, models, manifest, out, chunks=2, **kwargs)
    result = tag_run(spark, models, manifest, out, chunks=2, **kwargs)
    assert result["resumed"]
    return result


# (first run's heads, embedding, backbone version) -> (second run's), what the second run must
# do, and the heads a stored-embedding row then holds.
SCENARIOS = {
    "add a head": (["a"], True, None, ["a", "b"], True, None, {"stored_embedding": 3, "full": 1, "skipped": 0}, ["b"]),
    "retrain a head": (["a"], True, None, ["a2"], True, None, {"stored_embedding": 3, "full": 1, "skipped": 0}, ["a2"]),
    "remove a head": (["a", "b"], True, None, ["a"], True, None, {"stored_embedding": 0, "full": 1, "skipped": 3}, []),
    "change the backbone": (["a"], True, None, ["a"], True, "feedfacecafe", {"stored_embedding": 0, "full": 4, "skipped": 0}, []),
    "no embedding stored": (["a"], False, None, ["a", "b"], True, None, {"stored_embedding": 0, "full": 4, "skipped": 0}, []),
}


@pytest.mark.parametrize("resume", [False, True], ids=["incremental", "incremental+resumed"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rerun_does_only_what_each_image_lacks(spark, backbone, heads, catalogue, tmp_path, scenario, resume):
    heads1, embedding1, version1, heads2, embedding2, version2, expected, new = SCENARIOS[scenario]
    folder, manifest = catalogue
    out = tmp_path / "out"
    first = tag_run(
        spark, bundle(backbone, heads, heads1, version=version1), manifest, out, incremental=False, embedding=embedding1
    )
    assert (first["ok"], first["error"]) == (3, 1)
    if expected["stored_embedding"]:
        for photo in folder.glob("*.png"):
            photo.unlink()  # the stored-embedding path must not need the images at all
    models = bundle(backbone, heads, heads2, version=version2)
    again = resumed_run if resume else tag_run
    result = again(spark, models, manifest, out, incremental=True, embedding=embedding2)

    assert result["path_stored_embedding"] == expected["stored_embedding"]
    assert result["path_full"] == expected["full"] and result["skipped_done"] == expected["skipped"]
    assert result["ok"] + result["error"] + result["skipped"] == result["rows_in"] == 4
    written = rows_of(spark, out, result["run_id"])
    assert len(written) == expected["stored_embedding"] + expected["full"]  # each image at most once
    assert written["bad"]["status"] == "error"  # errors are always retried
    for image_id, row in written.items():
        if row["path"] == "stored_embedding":
            assert row["status"] == "ok" and row["tags"] is None and row["embedding"] is None
            assert row["models"] == {backbone.name: backbone.version, **{heads[n].name: heads[n].version for n in new}}
            assert row["b_score" if new == ["b"] else "a_score"] is not None, image_id
            assert row.get("a_score" if new == ["b"] else "b_score") is None  # heads it already had are not rerun
        elif row["status"] == "ok":
            assert row["tags"] and set(row["models"]) == {backbone.name, *(heads[n].name for n in heads2)}


def test_heads_from_stored_embeddings_equal_a_full_pass(spark, backbone, heads, catalogue, tmp_path):
    """The stored path gives the answers a full pass gives (raw-embedding heads too, through the stored norm)."""
    _, manifest = catalogue
    out, reference = tmp_path / "out", tmp_path / "reference"
    category = load_artifact("model/artifacts/product_category_tflite")  # a head on the raw embedding
    assert category.meta["input_normalisation"] == "none"
    tag_run(spark, ModelBundle(backbone, (("a", heads["a"]),)), manifest, out, incremental=False)
    two_more = ModelBundle(backbone, (("a", heads["a"]), ("b", heads["b"]), ("category", category)))
    result = tag_run(spark, two_more, manifest, out, incremental=True)
    assert result["path_stored_embedding"] == 3
    full = tag_run(spark, two_more, manifest, reference, incremental=False)
    stored, expected = rows_of(spark, out, result["run_id"]), rows_of(spark, reference, full["run_id"])
    for image_id in ("coffee", "chelsea", "rocket"):
        for column in ("b", "category"):
            assert stored[image_id][column] == expected[image_id][column]
            assert stored[image_id][f"{column}_score"] == pytest.approx(expected[image_id][f"{column}_score"], abs=1e-4)
        assert stored[image_id]["a"] is None  # head a was done already: not run again


def test_min_score_leaves_the_label_null_and_keeps_the_score(spark, backbone, heads, catalogue, tmp_path):
    _, manifest = catalogue
    floored = ModelBundle(backbone, (("a", heads["a"]),), (1.0,))
    result = tag_run(spark, floored, manifest, tmp_path / "out", incremental=False)
    rows = [r for r in rows_of(spark, tmp_path / "out", result["run_id"]).values() if r["status"] == "ok"]
    assert rows and all(r["a"] is None and 0 < r["a_score"] < 1.0 for r in rows)


def test_summary_shows_both_paths():
    from jobs.run_record import render_summary

    record = {
        "model_name": "b",
        "model_version": "v",
        "run_id": "r",
        "resumed": False,
        "rows_in": 3,
        "ok": 3,
        "error": 0,
        "skipped": 0,
        "skipped_duplicates": 0,
        "skipped_done": 0,
        "paths": {"full": 1, "stored_embedding": 2},
        "wall_s": 1.0,
        "images_per_s": 3.0,
        "startup_s": 0.5,
        "steady_images_per_s": 2.0,
        "stages": dict.fromkeys(("read_manifest_s", "fetch_s", "decode_s", "infer_s", "spark_io_s", "write_s"), 0.0),
        "settings": {"model": {"heads": [{"name": "category"}, {"name": "style"}]}},
    }
    examples = [
        {
            "url": "file:///a.jpg",
            "tags": [{"label": "espresso", "score": 0.9}],
            "category": "Bag",
            "category_score": 0.8,
            "style": None,
            "style_score": 0.3,
            "embedding": [0.0] * 4,
        },
        {"url": "file:///b.jpg", "tags": None, "category": None, "category_score": None, "style": "plain", "style_score": 0.7},
    ]
    text = render_summary(record, examples)
    assert "paths       1 full (fetch, decode, backbone, heads), 2 heads only, on stored embeddings (no fetch)" in text
    assert "espresso 0.90 | category: Bag 0.80 | style: (unsure) 0.30 | embedding[4]" in text
    assert "b.jpg" in text and "(heads only, on the stored embedding) | style: plain 0.70" in text


def test_a_changed_min_score_reruns_the_head_on_stored_embeddings(spark, backbone, heads, catalogue, tmp_path):
    _, manifest = catalogue
    out = tmp_path / "out"
    tag_run(spark, ModelBundle(backbone, (("a", heads["a"]),), (1.0,)), manifest, out, incremental=False)
    same = tag_run(spark, ModelBundle(backbone, (("a", heads["a"]),), (1.0,)), manifest, out, incremental=True)
    assert same["skipped_done"] == 3 and same["path_stored_embedding"] == 0
    lowered = tag_run(spark, ModelBundle(backbone, (("a", heads["a"]),), (None,)), manifest, out, incremental=True)
    assert lowered["path_stored_embedding"] == 3 and lowered["path_full"] == 1  # the error row is retried
    rows = [r for r in rows_of(spark, out, lowered["run_id"]).values() if r["status"] == "ok"]
    assert len(rows) == 3 and all(r["a"] is not None and r["path"] == "stored_embedding" for r in rows)
