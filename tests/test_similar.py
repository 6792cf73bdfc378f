"""Similar images and duplicates: the inverted file against brute force, components, within, bad input."""

from datetime import datetime

import numpy as np
import pytest
from pyspark.sql import types as T

from jobs.config import SimilarSettings
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


@pytest.mark.job
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


@pytest.mark.job
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


def rotated(vector: np.ndarray, angle: float, seed: int) -> np.ndarray:
    """`vector` turned by `angle` radians towards a random direction orthogonal to it (same length)."""
    unit = vector / np.linalg.norm(vector)
    other = np.random.default_rng(seed).normal(size=vector.shape)
    other -= other @ unit * unit
    return (np.cos(angle) * unit + np.sin(angle) * other / np.linalg.norm(other)) * np.linalg.norm(vector)


def read_groups(spark, out) -> dict[str, tuple[str, float]]:
    return {r.image_id: (r.group_id, r.score_to_group) for r in spark.read.parquet(f"{out}/duplicates").collect()}


@pytest.mark.job
def test_incremental_equals_a_full_run_on_all_images(spark, models, tmp_path, capsys):
    old, new = 160, 40
    vectors = clustered(old + new, seed=5)
    vectors[1] = rotated(vectors[0], 0.01, 1)  # an old pair of copies (cosine 0.99995)
    vectors[old] = rotated(vectors[0], 0.01, 2)  # a new copy joins that group
    # Two old groups 0.064 rad apart (cosine 0.998 < 0.999) that a new image half way between merges.
    vectors[31], vectors[40] = rotated(vectors[30], 0.005, 3), rotated(vectors[30], 0.064, 4)
    vectors[41] = rotated(vectors[40], 0.005, 5)
    vectors[old + 1] = (vectors[30] / np.linalg.norm(vectors[30]) + vectors[40] / np.linalg.norm(vectors[40])) / 2
    ids = [f"img{i:03d}" for i in range(old + new)]
    images = [(i, v, "mug") for i, v in zip(ids, vectors, strict=True)]
    exact = sets("similar.cells=4", "similar.nprobe=4", "similar.k=5", "similar.sample_size=100")
    settings = [*exact, *sets("similar.duplicate_threshold=0.999")]
    tags, out, full = tmp_path / "tags", tmp_path / "similar", tmp_path / "similar-full"
    write_ledger(spark, tags, models, images[:old])
    assert main(["--tags", str(tags), "--output", str(out), *settings], spark=spark) == 0
    assert (out / "_image_tagger" / "similar" / "index").is_dir()
    before = read_neighbours(spark, out)
    write_ledger(spark, tags, models, images[old:])  # M new images arrive
    capsys.readouterr()

    assert main(["--tags", str(tags), "--output", str(out), "--incremental", *settings], spark=spark) == 0
    summary = capsys.readouterr().out
    assert main(["--tags", str(tags), "--output", str(full), *settings], spark=spark) == 0

    after, expected = read_neighbours(spark, out), read_neighbours(spark, full)
    assert set(after) == set(expected) == set(ids)
    for image_id in ids:
        assert [n for n, _ in after[image_id]] == [n for n, _ in expected[image_id]], image_id
        assert np.allclose([s for _, s in after[image_id]], [s for _, s in expected[image_id]], atol=1e-5)
    changed = sum(after[i] != before[i] for i in ids[:old])
    assert changed > 0 and f"{new} new images searched against {old + new} (4 cells of the last full run, nprobe 4); " in summary
    assert f"; {changed} existing lists changed" in summary
    groups, expected_groups = read_groups(spark, out), read_groups(spark, full)
    assert {i: g for i, (g, _) in groups.items()} == {i: g for i, (g, _) in expected_groups.items()}
    assert {i: g for i, (g, _) in groups.items() if g in ("img000", "img030")} == {
        **dict.fromkeys(["img000", "img001", f"img{old:03d}"], "img000"),
        **dict.fromkeys(["img030", "img031", "img040", "img041", f"img{old + 1:03d}"], "img030"),
    }
    assert all(np.isclose(score, expected_groups[i][1], atol=1e-5) for i, (_, score) in groups.items())
    assert spark.read.parquet(f"{out}/neighbours").schema == nullable(NEIGHBOURS_SCHEMA)
    assert spark.read.parquet(f"{out}/duplicates").schema == nullable(DUPLICATES_SCHEMA)

    # Nothing new: nothing searched, nothing rewritten.
    assert main(["--tags", str(tags), "--output", str(out), "--incremental", *settings], spark=spark) == 0
    assert "0 new images searched against 200" in capsys.readouterr().out
    assert read_neighbours(spark, out) == after
    # Other settings than the full run's: refused, named.
    assert main(["--tags", str(tags), "--output", str(out), "--incremental", *exact], spark=spark) == 2
    default = SimilarSettings().duplicate_threshold
    assert f"similar.duplicate_threshold={default} (the full run's: 0.999)" in capsys.readouterr().err


def test_incremental_without_a_full_run_exits_2(spark, models, tmp_path, capsys):
    write_ledger(spark, tmp_path / "tags", models, [("a", [1.0] * DIM, "mug")])
    argv = ["--tags", str(tmp_path / "tags"), "--output", str(tmp_path / "out"), "--incremental"]
    assert main(argv, spark=spark) == 2
    error = capsys.readouterr().err
    assert "holds no index of a finished full similar run" in error and "run without --incremental" in error
    assert not (tmp_path / "out").exists()


def test_an_index_of_another_backbone_or_settings_is_not_reused(models):
    from jobs.similar_index import SimilarIndex, index_settings, reuse_problem

    settings = SimilarSettings()
    index = SimilarIndex(models.backbone_name, models.backbone_version, index_settings(settings), np.eye(2, dtype=np.float32))
    assert reuse_problem(index, models, settings, "out") is None
    assert reuse_problem(index, models, SimilarSettings(block_size=64), "out") is None  # speed only
    other = SimilarIndex(models.backbone_name, "0123456789ab", index.settings, index.centroids)
    assert "index compares efficientnet_lite0 0123456789ab embeddings" in reuse_problem(other, models, settings, "out")
    problem = reuse_problem(index, models, SimilarSettings(within="category", k=20), "out")
    assert "similar.k=20 (the full run's: 10), similar.within='category' (the full run's: '')" in problem
    assert "run without --incremental" in problem


def test_an_output_in_use_is_refused_before_any_search(spark, models, tmp_path, capsys, monkeypatch):
    from jobs import similar_images
    from jobs.lease import Lease, holding, lease_store
    from jobs.ledger import OutputStore

    def no_search(*args, **kwargs):
        raise AssertionError("searched an output another run holds")

    monkeypatch.setattr(similar_images, "candidates", no_search)

    write_ledger(spark, tmp_path / "tags", models, [(f"img{i}", v, "mug") for i, v in enumerate(clustered(20))])
    out = str(tmp_path / "out")
    other = Lease(lease_store(out, OutputStore(spark, out).lease_files), output=out, timeout_s=60)
    with holding(other):
        assert main(["--tags", str(tmp_path / "tags"), "--output", out, *sets("similar.sample_size=100")], spark=spark) == 4
    assert "is in use" in capsys.readouterr().err
    assert not (tmp_path / "out" / "neighbours").exists()
