"""The current view: one row per image_id from a ledger that several runs (and schemas) wrote."""

import json
import shutil
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import types as T

from jobs.current import (
    CurrentModels,
    CurrentViewError,
    check_targets,
    current_view,
    main,
    view_partitions,
    view_schema,
    write_current,
)
from jobs.lease import Lease, holding, lease_store
from tests.conftest import REPO

pytestmark = pytest.mark.spark

BB, VA, VB = "efficientnet_lite0", "bbbb00000001", "bbbb00000002"  # the old and the current backbone
CAT_V1, CAT_V2 = ("product_category", "cat000000001"), ("product_category", "cat000000002")  # head A, retrained
STYLE = ("product_style", "sty000000001")  # head B, added later
CURRENT = CurrentModels(BB, VB, (("category", *CAT_V2), ("style", *STYLE)), embedding=True)
TAG = T.StructType([T.StructField("label", T.StringType()), T.StructField("score", T.FloatType())])


def at(hour: int) -> datetime:
    return datetime(2026, 3, 1, hour)


def append_run(spark, ledger, run_id, hour, rows, *, backbone=VB, heads=None, embedding=True, norm=False, path=None):
    """Append one run's rows as the job would: heads {column: (artifact, version)} make the columns."""
    heads = heads or {}
    fields = [T.StructField(name, T.StringType()) for name in ("image_id", "url", "status", "error")]
    fields.append(T.StructField("tags", T.ArrayType(TAG)))
    for column in heads:
        fields += [T.StructField(column, T.StringType()), T.StructField(f"{column}_score", T.FloatType())]
    if embedding:
        fields.append(T.StructField("embedding", T.ArrayType(T.FloatType())))
    if norm:
        fields.append(T.StructField("embedding_norm", T.FloatType()))
    fields += [
        T.StructField("model_name", T.StringType()),
        T.StructField("model_version", T.StringType()),
        T.StructField("models", T.MapType(T.StringType(), T.StringType())),
        T.StructField("processed_at", T.TimestampType()),
        T.StructField("run_id", T.StringType()),
    ]
    if path:
        fields.append(T.StructField("path", T.StringType()))
    schema = T.StructType(fields)
    defaults = {
        "status": "ok",
        "model_name": BB,
        "model_version": backbone,
        "processed_at": at(hour),
        "run_id": run_id,
        "models": {BB: backbone, **dict(heads.values())},
        "path": path,
    }
    data = []
    for row in rows:
        row = {"url": f"s3://images/{row['image_id']}.jpg", **defaults, **row}
        data.append(tuple(row.get(f.name) for f in schema.fields))
    spark.createDataFrame(data, schema).coalesce(1).write.mode("append").parquet(str(ledger))


def full(image_id, label, **extra):
    return {"image_id": image_id, "tags": [(label, 0.5)], "embedding": [0.6, 0.8], **extra}


def error(image_id, message):
    return {"image_id": image_id, "status": "error", "error": message}


@pytest.fixture(scope="module")
def ledger(spark, tmp_path_factory):
    """The history: two backbones, head A retrained, head B added later (also as head-only rows)."""
    path = tmp_path_factory.mktemp("ledger") / "out"
    cat_v1 = {"category": CAT_V1}
    append_run(
        spark,
        path,
        "r0",
        0,
        [error("retried", "fetch: HTTP 503 (transient, gave up after 3 attempts)")],
        backbone=VA,
        heads=cat_v1,
    )
    append_run(
        spark,
        path,
        "r1",
        1,
        [
            full("old", "teapot", category="bag", category_score=0.5),
            full("retried", "cup"),
            full("newfail", "cup"),
            full("x1", "cup"),
        ],
        backbone=VA,
        heads=cat_v1,
    )
    # First run on the current backbone, head A v1 only; no style, embedding_norm or path columns yet.
    append_run(
        spark,
        path,
        "r2",
        2,
        [
            full("x1", "espresso", category="shirt", category_score=0.75),
            full("x2", "mug", category=None, category_score=0.125),  # below the head's min_score
            full("flip", "teapot", category="bag", category_score=0.5),
            error("bad", "fetch: S3 NoSuchKey (HTTP 404) for s3://images/bad.jpg (permanent, 1 attempt)"),
            error("erronly", "decode: not an image"),
            error("newfail", "fetch: HTTP 403 Forbidden (permanent, 1 attempt)"),
        ],
        heads=cat_v1,
    )
    # Head B appears (and embedding_norm); later errors for images that already have an ok row or none.
    append_run(
        spark,
        path,
        "r3",
        3,
        [
            error("flip", "fetch: HTTP 503 (transient, gave up after 3 attempts)"),
            error("bad", "fetch: still missing"),
            error("erronly", "decode: truncated"),
        ],
        heads={"category": CAT_V1, "style": STYLE},
        norm=True,
    )
    # Head-only rows for B from the stored embeddings: x1 counts, the old backbone and old head version do not.
    head_only = {"tags": None, "embedding": None}
    append_run(
        spark,
        path,
        "r4",
        4,
        [
            {"image_id": "x1", "style": "casual", "style_score": 0.25, **head_only},
            {"image_id": "x2", "style": "formal", "style_score": 0.5, "models": {BB: VB, STYLE[0]: "sty000000000"}, **head_only},
            {
                "image_id": "old",
                "style": "formal",
                "style_score": 0.5,
                "model_version": VA,
                "models": {BB: VA, STYLE[0]: STYLE[1]},
                **head_only,
            },
        ],
        heads={"style": STYLE},
        embedding=False,
        path="stored_embedding",
    )
    # Head A retrained (v2): a head-only row for x1, a full row with both heads for x3.
    append_run(
        spark,
        path,
        "r5",
        5,
        [{"image_id": "x1", "category": "dress", "category_score": 0.5, **head_only}],
        heads={"category": CAT_V2},
        embedding=False,
        path="stored_embedding",
    )
    append_run(
        spark,
        path,
        "r6",
        6,
        [
            full(
                "x3",
                "shoe",
                category="sneaker",
                category_score=0.75,
                style="sport",
                style_score=0.5,
                embedding_norm=2.5,
                path="full",
            )
        ],
        heads={"category": CAT_V2, "style": STYLE},
        norm=True,
        path="full",
    )
    # Same processed_at, two runs: run_id breaks the tie.
    append_run(spark, path, "r7-a", 7, [full("tie", "lamp")], heads={"category": CAT_V2})
    append_run(spark, path, "r7-b", 7, [full("tie", "lampshade")], heads={"category": CAT_V2})
    return path


@pytest.fixture(scope="module")
def view(spark, ledger, tmp_path_factory):
    to = tmp_path_factory.mktemp("view") / "current"
    counts = write_current(spark, str(ledger), str(to), CURRENT)
    return to, counts, {row["image_id"]: row.asDict(recursive=True) for row in spark.read.parquet(str(to)).collect()}


def expect_ok(image_id, run_id, hour, label, *, category=None, style=None, models=(), norm=None, processed=None):
    return {
        "image_id": image_id,
        "url": f"s3://images/{image_id}.jpg",
        "status": "ok",
        "error": None,
        "tags": [{"label": label, "score": 0.5}],
        "category": category[0] if category else None,
        "category_score": category[1] if category else None,
        "style": style[0] if style else None,
        "style_score": style[1] if style else None,
        "embedding": [pytest.approx(0.6), pytest.approx(0.8)],
        "embedding_norm": norm,
        "phash": None,  # this ledger's runs predate the column: null, as in outputs written before it
        "model_name": BB,
        "model_version": VB,
        "models": {BB: VB, **dict(models)},
        "processed_at": at(processed if processed is not None else hour),
        "run_id": run_id,
    }


def expect_not_ok(image_id, status, error, run_id, hour, *, version=VB, models=None):
    return {
        "image_id": image_id,
        "url": f"s3://images/{image_id}.jpg",
        "status": status,
        "error": error,
        "tags": None,
        "category": None,
        "category_score": None,
        "style": None,
        "style_score": None,
        "embedding": None,
        "embedding_norm": None,
        "phash": None,
        "model_name": BB,
        "model_version": version,
        "models": models,
        "processed_at": at(hour),
        "run_id": run_id,
    }


def test_one_row_per_image_by_the_rules(view):
    _to, counts, rows = view
    expected = {
        # Tags and embedding from r2, head A v2 from the head-only r5, head B from the head-only r4.
        "x1": expect_ok(
            "x1", "r2", 2, "espresso", category=("dress", 0.5), style=("casual", 0.25), models=[CAT_V2, STYLE], processed=5
        ),
        # Head A only ever ran as v1 on x2 and head B as an older version: both null, not in models.
        "x2": expect_ok("x2", "r2", 2, "mug"),
        "x3": expect_ok(
            "x3", "r6", 6, "shoe", category=("sneaker", 0.75), style=("sport", 0.5), models=[CAT_V2, STYLE], norm=2.5
        ),
        "flip": expect_ok("flip", "r2", 2, "teapot"),  # the later failed run does not hide the ok row
        "tie": expect_ok("tie", "r7-b", 7, "lampshade"),
        "bad": expect_not_ok("bad", "error", "fetch: still missing", "r3", 3, models={BB: VB, **dict([CAT_V1, STYLE])}),
        "erronly": expect_not_ok("erronly", "error", "decode: truncated", "r3", 3, models={BB: VB, **dict([CAT_V1, STYLE])}),
        # An ok row on the old backbone, then a failure on the current one: the failure is the news.
        "newfail": expect_not_ok(
            "newfail", "error", "fetch: HTTP 403 Forbidden (permanent, 1 attempt)", "r2", 2, models={BB: VB, **dict([CAT_V1])}
        ),
        # Tagged only by the old backbone (its latest row is a head-only row): outdated, no results.
        "old": expect_not_ok("old", "outdated", None, "r4", 4, version=VA, models={BB: VA, STYLE[0]: STYLE[1]}),
        # Failed, then tagged on a retry, both on the old backbone: outdated, not the stale error.
        "retried": expect_not_ok("retried", "outdated", None, "r1", 1, version=VA, models={BB: VA, **dict([CAT_V1])}),
    }
    assert sorted(rows) == sorted(expected)
    for image_id, want in expected.items():
        assert rows[image_id] == want, image_id
    assert counts == {"images": 10, "ok": 5, "error": 3, "outdated": 2}


def test_view_has_one_schema_for_every_reader(spark, view):
    to, _counts, rows = view
    columns = [f.name for f in view_schema(CURRENT).fields]
    assert columns == [
        "image_id",
        "url",
        "status",
        "error",
        "tags",
        "category",
        "category_score",
        "style",
        "style_score",
        "embedding",
        "embedding_norm",
        "phash",
        "model_name",
        "model_version",
        "models",
        "processed_at",
        "run_id",
    ]
    assert spark.read.parquet(str(to)).schema.simpleString() == view_schema(CURRENT).simpleString()

    files = sorted(to.glob("*.parquet"))
    schemas = {str(pq.read_schema(f).remove_metadata()) for f in files}
    assert len(files) >= 1 and len(schemas) == 1  # every file the same schema
    table = pq.read_table(to)
    assert table.column_names == columns and table.num_rows == len(rows)
    assert str(table.schema.field("processed_at").type) == "timestamp[us, tz=UTC]"
    models = table.schema.field("models").type
    assert (models.key_type, models.item_type) == (pa.string(), pa.string())

    con = duckdb.connect()
    ok = con.execute(
        f"SELECT image_id, url, category, category_score FROM '{to}/*.parquet' "
        "WHERE status = 'ok' AND category IS NOT NULL ORDER BY image_id"
    ).fetchall()
    assert ok == [("x1", "s3://images/x1.jpg", "dress", 0.5), ("x3", "s3://images/x3.jpg", "sneaker", 0.75)]
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{to}/*.parquet')").fetchall())
    assert types["processed_at"] == "TIMESTAMP WITH TIME ZONE" and types["models"] == "MAP(VARCHAR, VARCHAR)"
    style = con.execute(f"SELECT models['product_style'] FROM '{to}/*.parquet' WHERE image_id = 'x1'").fetchone()
    assert style == ("sty000000001",)


def test_the_aggregation_gets_a_partition_per_rows_per_partition_ledger_rows(spark, ledger, view, tmp_path, caplog):
    assert view_partitions(300_000_000, 100_000, 200) == 3_000  # the catalogue decides
    assert view_partitions(1_000_001, 100_000, 4) == 11
    assert view_partitions(1_000, 100_000, 200) == 200  # never fewer than the profile's
    rows = spark.read.parquet(str(ledger)).count()
    configured = spark.conf.get("spark.sql.shuffle.partitions")
    with caplog.at_level("INFO", logger="image_tagger.current"):
        counts = write_current(spark, str(ledger), str(tmp_path / "v"), CURRENT, rows_per_partition=2)
    wanted = max(int(configured), -(-rows // 2))
    assert f"current view: {rows} ledger rows, {wanted} shuffle partitions" in caplog.text
    assert spark.conf.get("spark.sql.shuffle.partitions") == configured  # the session's own again
    again = {row["image_id"]: row.asDict(recursive=True) for row in spark.read.parquet(str(tmp_path / "v")).collect()}
    assert (counts, again) == (view[1], view[2])  # more partitions, the same view


def test_no_embedding_and_unseen_heads(spark, ledger):
    models = CurrentModels(BB, VB, (("colour", "product_colour", "col000000001"),), embedding=False)
    rows = {r.image_id: r for r in current_view(spark.read.option("mergeSchema", "true").parquet(str(ledger)), models).collect()}
    assert rows["x3"].asDict().keys() >= {"colour", "colour_score"} and "embedding" not in rows["x3"].asDict()
    assert (rows["x3"].status, rows["x3"].colour, rows["x3"].colour_score, rows["x3"].models) == ("ok", None, None, {BB: VB})
    assert current_view(spark.read.parquet(str(ledger)), models).schema.simpleString() == view_schema(models).simpleString()


def test_ledger_without_the_job_columns_is_refused(spark):
    with pytest.raises(CurrentViewError, match="no column status, model_version, processed_at"):
        current_view(spark.createDataFrame([("a",)], "image_id string"), CURRENT)


def test_targets_must_not_overlap(tmp_path):
    check_targets(str(tmp_path / "out" / "local"), str(tmp_path / "out" / "current"))
    check_targets("s3://bucket/ledger", "s3://bucket/ledger-current")
    for output, to in [
        ("out/local", "out/local/"),
        ("out/local", "out/local/current"),
        ("out/local", "out"),
        ("s3://b/ledger", "s3://b/ledger/view"),
        (str(tmp_path / "x"), f"file://{tmp_path}/x"),
    ]:
        with pytest.raises(CurrentViewError, match="overlaps --output"):
            check_targets(output, to)


# The command line, with the profile's real models (the default profile: TFLite backbone, category head).

REPO_ARTIFACTS = REPO / "model" / "artifacts"


@pytest.fixture(scope="module")
def default_models():
    from jobs.config import load_settings
    from jobs.infer import load_bundle

    settings = load_settings()
    return CurrentModels.from_bundle(load_bundle(settings.model.uri, settings.model.heads), embedding=settings.model.embedding)


def test_command_line_writes_the_view(spark, default_models, tmp_path, capsys):
    assert default_models.heads == (("category", "product_category", default_models.heads[0][2]),)
    ledger, to = tmp_path / "ledger", tmp_path / "current"
    version = default_models.backbone_version
    # A ledger written before the category head existed: the view still has its (null) columns.
    append_run(spark, ledger, "r1", 1, [full("a", "espresso"), error("b", "decode: not an image")], backbone=version)
    append_run(spark, ledger, "r2", 2, [full("a", "cup")], backbone="0123456789ab")
    to.mkdir()
    (to / "stale.parquet").write_bytes(b"overwritten")
    assert main(["--output", str(ledger), "--to", str(to)], spark=spark) == 0
    assert "2 images (ok 1, error 1, outdated 0)" in capsys.readouterr().out
    rows = {r.image_id: r for r in spark.read.parquet(str(to)).collect()}
    a = rows["a"]
    assert (a.status, a.tags[0].label, a.category, a.category_score) == ("ok", "espresso", None, None)
    assert rows["a"].models == {default_models.backbone_name: version} and rows["a"].embedding is not None
    assert (rows["b"].status, rows["b"].error) == ("error", "decode: not an image")
    assert not (to / "stale.parquet").exists()
    assert not (to / "_temporary").exists() and not any((to / "_image_tagger" / "writes").iterdir())

    # Another job writing --to (it holds its lease): refused, exit 4, the view untouched.
    held_by_other = Lease(lease_store(str(to)), output=str(to), timeout_s=60, manifest="other-ledger")
    with holding(held_by_other) as held:
        held.name_run("other-view")
        assert main(["--output", str(ledger), "--to", str(to)], spark=spark) == 4
    assert f"{to} is in use: run other-view" in capsys.readouterr().err
    assert spark.read.parquet(str(to)).count() == 2

    # Another profile: a second head (its artifact is only read for its name and version) and no embedding.
    style = tmp_path / "style_head"
    shutil.copytree(f"{REPO_ARTIFACTS}/product_category_tflite", style, ignore=shutil.ignore_patterns("model.tflite"))
    meta = json.loads((style / "model.json").read_text())
    (style / "model.json").write_text(json.dumps({**meta, "name": "product_style", "version": "sty000000001"}))
    (style / "model.tflite").write_bytes(b"not read by the view")
    heads = f"model.heads=[{{name: category, uri: {REPO_ARTIFACTS}/product_category_tflite}}, {{name: style, uri: '{style}'}}]"
    assert main(["--output", str(ledger), "--to", str(to), "--set", heads, "--set", "model.embedding=false"], spark=spark) == 0
    written = spark.read.parquet(str(to))
    assert "embedding" not in written.columns and {"style", "style_score"} <= set(written.columns)


def test_rows_written_twice_count_once(spark, tmp_path):
    """An incident before the lease wrote a run's rows twice: the view and its counts hold each image once."""
    ledger, to = tmp_path / "ledger", tmp_path / "current"
    rows = [full("a", "espresso"), error("b", "decode: not an image")]
    append_run(spark, ledger, "r1", 1, rows)
    append_run(spark, ledger, "r1", 1, rows)
    assert spark.read.parquet(str(ledger)).count() == 4
    counts = write_current(spark, str(ledger), str(to), CURRENT)
    assert (counts["images"], counts["ok"], counts["error"]) == (2, 1, 1)
    assert sorted(r.image_id for r in spark.read.parquet(str(to)).collect()) == ["a", "b"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.top_k=0"], "model.top_k=0: must be between 1 and 100"),
        (["--set", "model.uri=/nonexistent/model"], "model artifact file not found"),
        (["--profile", "/nonexistent.yaml"], "cannot read profile"),
        (["--to", "{ledger}/current"], "overlaps --output"),
        (["--output", "{ledger}/missing"], "no output dataset there"),
    ],
)
def test_bad_arguments_exit_2(spark, tmp_path, capsys, args, message):
    argv = ["--output", str(tmp_path / "ledger"), "--to", str(tmp_path / "current"), *args]
    assert main([a.replace("{ledger}", str(tmp_path / "ledger")) for a in argv], spark=spark) == 2
    assert message in capsys.readouterr().err
