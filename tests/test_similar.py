"""Similar images and duplicates: the inverted file against brute force, components, within, bad input."""

from datetime import datetime

import numpy as np
import pytest
from pyspark.sql import types as T

from jobs.current import CurrentModels
from jobs.schema import DUPLICATES_SCHEMA, NEIGHBOURS_SCHEMA, TAG_TYPE, nullable
from jobs.similar import brute_force, ivf_neighbours, kmeans
from jobs.similar_graph import connected_components
from jobs.similar_images import main

pytestmark = pytest.mark.spark

DIM = 16
LEDGER_SCHEMA = T.StructType(
    [
        *(T.StructField(name, T.StringType()) for name in ("image_id", "url", "status", "error")),
        T.StructField("tags", T.ArrayType(TAG_TYPE)),
        T.StructField("category", T.StringType()),
        T.StructField("category_score", T.FloatType()),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("embedding_norm", T.FloatType()),
        T.StructField("model_name", T.StringType()),
        T.StructField("model_version", T.StringType()),
        T.StructField("models", T.MapType(T.StringType(), T.StringType())),
        T.StructField("processed_at", T.TimestampType()),
        T.StructField("run_id", T.StringType()),
    ]
)


@pytest.fixture(scope="module")
def models() -> CurrentModels:
    """The default profile's models: the job reads the ledger for these versions."""
    from jobs.config import load_settings
    from jobs.infer import load_bundle

    settings = load_settings()
    return CurrentModels.from_bundle(load_bundle(settings.model.uri, settings.model.heads), embedding=True)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, DIM))
    return (centres[rng.integers(0, 4, n)] + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)


def write_ledger(spark, path, models, images, *, version=None, status="ok", drop=()):
    """images: [(image_id, embedding or None, category)] as one tagging run's ok rows."""
    _column, artifact, head_version = models.heads[0]
    rows = []
    for image_id, embedding, category in images:
        vector = None if embedding is None else [float(x) for x in embedding]
        norm = None if vector is None else float(np.linalg.norm(vector)) if vector else 0.0
        backbone = version or models.backbone_version
        versions = {models.backbone_name: backbone, artifact: head_version}
        result = (image_id, f"s3://images/{image_id}.jpg", status, None, [("cup", 0.5)], category, 0.9, vector, norm)
        rows.append((*result, models.backbone_name, backbone, versions, datetime(2026, 3, 1), "r1"))
    frame = spark.createDataFrame(rows, LEDGER_SCHEMA).drop(*drop)
    frame.coalesce(1).write.mode("append").parquet(str(path))


def sets(*overrides: str) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def read_neighbours(spark, out):
    return {r.image_id: [(n.image_id, n.score) for n in r.neighbours] for r in spark.read.parquet(f"{out}/neighbours").collect()}


def test_kmeans_ivf_with_every_cell_probed_is_brute_force():
    vectors = clustered(600)
    centroids = kmeans(vectors[:200], 8, iterations=5, seed=0)
    exact_rows, exact_scores = brute_force(vectors, k=5)
    rows, scores = ivf_neighbours(vectors, centroids, nprobe=8, k=5, block=64)
    assert (rows == exact_rows).all() and np.allclose(scores, exact_scores, atol=1e-5)
    assert not (rows == np.arange(len(vectors))[:, None]).any()  # never itself
    rows, _ = ivf_neighbours(vectors, centroids, nprobe=1, k=5, block=64)
    assert (rows != exact_rows).any()  # one cell only is approximate: the test above can fail


def test_connected_components_on_hand_built_graphs(spark):
    chain = [("a", "b"), ("c", "b"), ("c", "d"), ("e", "d"), ("e", "f")]  # a-b-c-d-e-f, mixed directions
    two = [("x", "y"), ("y", "z"), ("z", "x"), ("p", "q")]  # a triangle and a pair
    alone = [("s", "s")]  # a self-loop: a component of its own
    edges = spark.createDataFrame(chain + two + alone, "src string, dst string")
    found = {r.vertex: r.component for r in connected_components(edges).collect()}
    assert found == {**dict.fromkeys("abcdef", "a"), **dict.fromkeys("xyz", "x"), "p": "p", "q": "p", "s": "s"}


def test_job_matches_brute_force_groups_copies_and_leaves_out_unusable(spark, models, tmp_path, capsys):
    vectors = clustered(160)
    vectors[1] = vectors[0] + 0.02  # near-copies of img000 (cosine > 0.999, never tied with it)
    vectors[2] = vectors[0] - 0.02
    vectors[11] = vectors[10] * 0.5 + 0.02  # and of img010, another length
    ids = [f"img{i:03d}" for i in range(len(vectors))]
    unusable = [("zero", [0.0] * DIM, "mug"), ("empty", [], "mug"), ("none", None, "mug")]
    write_ledger(spark, tmp_path / "tags", models, [(i, v, "mug") for i, v in zip(ids, vectors, strict=True)] + unusable)
    write_ledger(spark, tmp_path / "tags", models, [("failed", None, None)], status="error")
    out = tmp_path / "similar"
    # Every cell probed: exact. Random 16-d clusters hold pairs at 0.95, so copies are pairs above 0.999.
    settings = sets(
        "similar.cells=4", "similar.nprobe=4", "similar.k=5", "similar.sample_size=100", "similar.duplicate_threshold=0.999"
    )
    assert main(["--tags", str(tmp_path / "tags"), "--output", str(out), *settings], spark=spark) == 0

    summary = capsys.readouterr().out
    assert "160 images searched (4 cells, nprobe 4)" in summary
    for line in (
        "zero-norm embedding: 1 (zero)",
        "empty embedding: 1 (empty)",
        "no embedding (tagged with model.embedding=false): 1 (none)",
    ):
        assert f"left out, {line}" in summary
    assert "left out, tagging failed (status error): 1 (failed)" in summary
    assert "2 duplicate groups, 5 images in them" in summary

    found = read_neighbours(spark, out)
    exact_rows, exact_scores = brute_force(vectors, k=5)
    assert set(found) == set(ids)
    for row, image_id in enumerate(ids):
        assert [n for n, _ in found[image_id]] == [ids[j] for j in exact_rows[row]], image_id
        assert np.allclose([s for _, s in found[image_id]], exact_scores[row], atol=1e-5)
    groups = {r.image_id: (r.group_id, r.score_to_group) for r in spark.read.parquet(f"{out}/duplicates").collect()}
    assert {i: g for i, (g, _) in groups.items()} == {
        "img000": "img000",
        "img001": "img000",
        "img002": "img000",
        "img010": "img010",
        "img011": "img010",
    }
    assert 0.999 <= groups["img011"][1] < 1
    assert spark.read.parquet(f"{out}/neighbours").schema == nullable(NEIGHBOURS_SCHEMA)
    assert spark.read.parquet(f"{out}/duplicates").schema == nullable(DUPLICATES_SCHEMA)
    assert not (out / "neighbours" / "_temporary").exists() and not (out / "_temporary").exists()


def test_within_searches_only_equal_values(spark, models, tmp_path, capsys):
    vectors = clustered(80, seed=3)
    categories = ["mug", "shoe"] * 40
    images = [(f"img{i:03d}", v, c) for i, (v, c) in enumerate(zip(vectors, categories, strict=True))] + [
        ("unsure", vectors[0], None)
    ]
    write_ledger(spark, tmp_path / "tags", models, images)
    out = tmp_path / "similar"
    argv = [
        "--tags",
        str(tmp_path / "tags"),
        "--output",
        str(out),
        "--set",
        "similar.within=category",
        "--set",
        "similar.cells=3",
    ]
    assert main([*argv, "--set", "similar.sample_size=100"], spark=spark) == 0
    assert "left out, no category value: 1 (unsure)" in capsys.readouterr().out
    category = dict(zip((i for i, _, _ in images), categories, strict=False))
    found = read_neighbours(spark, out)
    assert len(found) == 80 and all(len(n) == 10 for n in found.values())
    assert all(category[n] == category[image_id] for image_id, listed in found.items() for n, _ in listed)


@pytest.mark.parametrize(
    ("case", "overrides", "message"),
    [
        ("no embedding", [], "no embedding column: it was tagged with model.embedding=false"),
        ("no embedding", [], "--incremental run of the tagging job with --set model.embedding=true"),
        ("other backbone", [], "no row of the tags output has the profile's backbone version"),
        ("ok", ["similar.within=colour"], "similar.within=colour: no such column"),
        ("ok", ["similar.k=0"], "similar.k=0: must be between 1 and 1000"),
    ],
)
def test_bad_input_exits_2_naming_the_fix(spark, models, tmp_path, capsys, case, overrides, message):
    drop = ("embedding", "embedding_norm") if case == "no embedding" else ()
    version = "0123456789ab" if case == "other backbone" else None
    write_ledger(spark, tmp_path / "tags", models, [("a", [1.0] * DIM, "mug")], version=version, drop=drop)
    argv = ["--tags", str(tmp_path / "tags"), "--output", str(tmp_path / "out"), *sets(*overrides)]
    assert main(argv, spark=spark) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_inside_the_tags_output_is_refused(spark, tmp_path, capsys):
    assert main(["--tags", str(tmp_path / "tags"), "--output", str(tmp_path / "tags" / "similar")], spark=spark) == 2
    assert "overlaps --tags" in capsys.readouterr().err
