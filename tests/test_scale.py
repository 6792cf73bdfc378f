"""Catalogue scale (make bench-scale): the synthetic ledger is one the job sees as done, the planning reads
of the ledger leave the embedding out, and nothing brings per-image rows back to the driver."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from pyspark.rdd import RDD
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import metrics as M
from jobs.config import load_settings
from jobs.driver import JobArgs, TaggingRun
from jobs.infer import load_bundle
from jobs.ledger import OutputStore, finished_rows
from jobs.manifest import read_manifest
from jobs.planning import plan_pending
from jobs.schema import PATH_FULL, PATH_STORED_EMBEDDING, nullable, output_schema
from tools import scale_ledger
from tools.benchmark.runner import REPO
from tools.benchmark.scale import SCENARIOS, event_log_facts, exponent, exponents

CATALOGUE = 2_000
NEW = CATALOGUE // 100  # manifest-new's new images, and the images lacking the second head
TWO_HEADS = ["category", "category_again"]


@pytest.fixture(scope="module")
def bundles():
    settings = load_settings()
    return {n: load_bundle(settings.model.uri, scale_ledger.heads_for(TWO_HEADS[:n])) for n in (1, 2)}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, bundles):
    root = tmp_path_factory.mktemp("scale")
    scale_ledger.generate(root, CATALOGUE, scale_ledger.Models.from_bundle(bundles[2]))
    return root


def plan(spark, root, manifest, bundle):
    rows = read_manifest(spark, str(root / manifest))
    ledger = finished_rows(spark, OutputStore(spark, str(root / "ledger")))
    pending, _counts = plan_pending(
        rows, ledger, models=bundle, embedding=True, run_id="new-run", incremental=True, partitions=2, single_pass=False
    )
    return pending


def test_the_synthetic_ledger_has_the_jobs_columns_and_types(spark, catalogue):
    read = spark.read.parquet(str(catalogue / "ledger")).schema
    expected = output_schema(TWO_HEADS, embedding=True)
    assert [(f.name, f.dataType) for f in read.fields] == [(f.name, nullable(f.dataType)) for f in expected.fields]


def test_the_job_sees_the_synthetic_ledger_as_done_but_for_the_1pct_it_is_built_to_lack(spark, catalogue, bundles):
    def paths(manifest, heads):
        found = plan(spark, catalogue, manifest, bundles[heads]).groupBy("path").count().collect()
        return {row["path"]: row["count"] for row in found}

    assert paths("manifest", 1) == {}  # nothing left to do
    assert paths("manifest", 2) == {PATH_STORED_EMBEDDING: NEW}  # the second head, on stored embeddings
    assert paths("manifest-new", 1) == {PATH_FULL: NEW}  # the new images only


def ledger_scans(df: DataFrame, ledger) -> list[list[str]]:
    """The columns each scan of `ledger` in the DataFrame's physical plan reads (its required schema)."""
    leaves = df._jdf.queryExecution().sparkPlan().collectLeaves()  # before AQE wraps it
    scans = [leaves.apply(i) for i in range(leaves.size())]
    return [
        list(scan.requiredSchema().fieldNames())
        for scan in scans
        if scan.nodeName().startswith("Scan parquet") and str(ledger) in scan.relation().location().rootPaths().toString()
    ]


def test_planning_prunes_the_embedding_out_of_the_ledger_read(spark, catalogue, bundles):
    schemas = ledger_scans(plan(spark, catalogue, "manifest", bundles[1]), catalogue / "ledger")
    assert schemas, "no scan of the ledger in the plan"
    assert all("embedding" not in columns for columns in schemas), schemas
    assert any("embedding_norm" in columns for columns in schemas), schemas  # whether an image has one is read


@pytest.fixture
def driver_results(monkeypatch):
    """Rows each driver-side collect brought back, however it was asked for (DataFrame or RDD)."""
    sizes: list[tuple[str, int]] = []

    def counting(cls, name):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            rows = len(result) if hasattr(result, "__len__") else None
            if rows is None:  # an iterator: materialise it to count
                result = list(result)
                rows = len(result)
            sizes.append((f"{cls.__name__}.{name}", rows))
            return result

        monkeypatch.setattr(cls, name, wrapper)

    for name in ("collect", "toPandas", "toLocalIterator", "take", "tail", "toArrow"):
        if hasattr(DataFrame, name):
            counting(DataFrame, name)
    for name in ("collect", "take", "toLocalIterator"):
        counting(RDD, name)
    return sizes


def test_an_incremental_run_brings_no_per_image_rows_to_the_driver(spark, catalogue, bundles, tmp_path, driver_results):
    """The whole run (plan, tagging pass, accounting) on 2,020 images: a per-image collect would return
    ~2,000 rows; what the driver gets is counts (a row per status, a few observations)."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for path in (catalogue / "ledger").iterdir():
        (ledger / path.name).symlink_to(path)  # the run appends its files beside them, the catalogue's stay
    settings = load_settings(overrides=["spark.partitions=2"])
    job = TaggingRun(spark, settings, bundles[1], JobArgs(str(catalogue / "manifest-new"), str(ledger), incremental=True))
    counts = job.execute().counts
    assert (counts["rows_in"], counts["error"], counts["skipped_done"]) == (CATALOGUE + NEW, NEW, CATALOGUE)
    assert driver_results, "the guard saw no collect at all: it is not watching"
    assert max(rows for _how, rows in driver_results) <= 10, driver_results


def test_growth_exponents():
    assert exponent((1_000_000, 10.0), (3_000_000, 30.0)) == 1.0
    assert exponent((1_000_000, 10.0), (4_000_000, 160.0)) == 2.0
    assert exponent((1, 0.0), (2, 1.0)) is None
    sizes = [{"rows": n, **{f"{name}_s": n / 1000 for name in SCENARIOS}} for n in (1000, 2000, 4000)]
    found = exponents(sizes)
    assert found["incremental_noop"] == 1.0 and found["current_view_steps"] == [1.0, 1.0]


def test_event_log_attributes_each_tasks_input_bytes_to_its_scan():
    plan = {
        "nodeName": "WholeStageCodegen",
        "children": [
            {
                "nodeName": "Scan parquet ",
                "metadata": {
                    "Location": "InMemoryFileIndex(1 paths)[file:/data/ledger]",
                    "ReadSchema": "struct<image_id:string>",
                },
                "metrics": [{"accumulatorId": 7}],
                "children": [],
            }
        ],
    }
    events = [
        {"Event": "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart", "sparkPlanInfo": plan},
        {"Event": "SparkListenerJobStart", "Submission Time": 1000},
        {
            "Event": "SparkListenerTaskEnd",
            "Task Info": {"Accumulables": [{"ID": 7}]},
            "Task Metrics": {"Input Metrics": {"Bytes Read": 300}, "Executor CPU Time": 2 * 10**9},
        },
        {
            "Event": "SparkListenerTaskEnd",
            "Task Info": {"Accumulables": [{"ID": 9}]},
            "Task Metrics": {"Input Metrics": {"Bytes Read": 50}},
        },
        {"Event": "SparkListenerStageExecutorMetrics", "Executor Metrics": {"JVMHeapMemory": 3 * 2**20}},
        {"Event": "SparkListenerJobEnd", "Completion Time": 3500},
    ]
    facts = event_log_facts([json.dumps(e) for e in events])
    assert facts["scans"] == {"/data/ledger": {"bytes_read": 300, "read_schemas": ["struct<image_id:string>"]}}
    assert (facts["jvm_heap_peak_mb"], facts["spark_jobs_s"], facts["executor_cpu_s"]) == (3, 2.5, 2.0)


def test_the_manifest_with_new_images_points_at_missing_files(spark, catalogue):
    rows = read_manifest(spark, str(catalogue / "manifest-new"))
    new = rows.where(F.col("image_id") >= f"scale-{CATALOGUE:010d}")
    assert new.count() == NEW
    urls = [row["url"] for row in new.select("url").take(3)]
    assert all(url.startswith("file:///") and not Path(url.removeprefix("file://")).exists() for url in urls), urls


def test_the_cluster_is_terraforms_default_and_the_report_projects_each_scenario(tmp_path):
    from tools.benchmark import cost
    from tools.benchmark.scale import TERRAFORM_VARIABLES, cluster_nodes, report_lines

    instance, nodes = cluster_nodes(TERRAFORM_VARIABLES.read_text())
    assert (instance, nodes) == ("m6i.2xlarge", 4)  # 2 core + 2 spot task nodes (infra/terraform/variables.tf)
    size = {f"{name}_s": 10.0 for name in SCENARIOS} | {"incremental_noop_rows_per_s": 100_000, "load_avg_before": 1.0}
    size |= {"driver_peak_mb": 900, "ledger_bytes_read": 10**7, "ledger_bytes_read_chunked": 10**6, "ledger_bytes": 10**8}
    size |= {"ledger_embedding_bytes": 9 * 10**7, "embedding_read_by_noop": True, "embedding_read_by_noop_chunked": False}
    sizes = [size | {"rows": 1_000_000}, size | {"rows": 3_000_000} | {f"{name}_s": 30.0 for name in SCENARIOS}]
    sizes[1]["current_view_s"] = None  # not measured at that size (--current-max-rows): projected from the largest measured
    report = {"cores": 2, "cpu": "a CPU", "cpu_isa": [], "started_at": "t0", "synthetic": {"embedding": "8 vectors"}}
    report |= {"sizes": sizes, "exponents": exponents(sizes)}
    (tmp_path / "scale.json").write_text(json.dumps(report))
    text = "\n".join(report_lines(cost.load_prices(REPO / "conf" / "prices.yaml"), tmp_path / "scale.json"))
    # 30 s at 3M on 2 cores, linear: 30 x 2 x 100 = 6,000 core-seconds at 300M, over 4 x 8 vCPUs = 188 s.
    assert "| incremental_noop | 30.0 at 3,000,000 | 1.0 | 6,000 | 188 |" in text
    assert "| current_view | 10.0 at 1,000,000 | 1.0 | 6,000 | 188 |" in text
    assert "Embedding column read by the single-chunk no-op: **yes**; by the chunked no-op: **no**" in text


def test_the_embedding_counts_as_read_only_when_its_bytes_were():
    from tools.benchmark.scale import ledger_read

    every_column = "struct<image_id:string,embedding:array<float>,run_id:string>"
    footers_only = {"scans": {"/l": {"bytes_read": 1_000, "read_schemas": ["struct<image_id:string>", every_column]}}}
    whole_column = {"scans": {"/l": {"bytes_read": 90_000, "read_schemas": [every_column]}}}
    assert ledger_read(footers_only, Path("/l"), 80_000) == {"bytes_read": 1_000, "embedding_read": False}
    assert ledger_read(whole_column, Path("/l"), 80_000)["embedding_read"]


def test_an_incremental_no_op_ends_without_reading_embeddings(spark, catalogue, bundles, tmp_path, monkeypatch):
    """Adaptive execution finds the plan empty at run time and replaces it by an empty relation; the
    observation that counts its rows must survive that, or the driver waits for it forever. With no
    image on the stored-embedding path the pass joins no embeddings (it read the whole column)."""
    import jobs.driver

    joined = []
    real = jobs.driver.stored_embeddings
    monkeypatch.setattr(jobs.driver, "stored_embeddings", lambda *a, **k: joined.append(1) or real(*a, **k))
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for path in (catalogue / "ledger").iterdir():
        (ledger / path.name).symlink_to(path)
    settings = load_settings(overrides=["spark.partitions=2"])  # adaptive execution is on: Spark's default
    job = TaggingRun(spark, settings, bundles[1], JobArgs(str(catalogue / "manifest"), str(ledger), incremental=True))
    files = sorted(ledger.rglob("*.parquet"))
    ended: dict = {}
    # A daemon thread: a run that hangs must not keep pytest from ending.
    worker = threading.Thread(target=lambda: ended.update(result=job.execute()), daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        spark.sparkContext.cancelAllJobs()
        pytest.fail("an --incremental run with nothing left to do did not end in 120 s")
    counts, phases = ended["result"].counts, ended["result"].phases
    assert phases[M.READ_MANIFEST_S] > 0 and phases[M.TAG_AND_WRITE_S] > 0  # the probe, and the pass that wrote nothing
    assert (counts["rows_in"], counts["skipped_done"], counts["ok"] + counts["error"]) == (CATALOGUE, CATALOGUE, 0)
    assert not joined
    assert sorted(ledger.rglob("*.parquet")) == files  # no empty file a day for a daily no-op

    # A head the ledger lacks on 1% of the images: those take the stored-embedding path, with their embeddings.
    job = TaggingRun(spark, settings, bundles[2], JobArgs(str(catalogue / "manifest"), str(ledger), incremental=True))
    counts = job.execute().counts
    assert (counts["path_stored_embedding"], counts["ok"], counts["skipped_done"]) == (NEW, NEW, CATALOGUE - NEW)
    assert joined


def test_the_rule_that_drops_observations_is_excluded_beside_the_profiles_own(spark):
    from jobs.planning import AQE_EXCLUDED_RULES, EMPTY_RELATION_RULE, keep_observations

    before = spark.conf.get(AQE_EXCLUDED_RULES, None)
    try:
        spark.conf.set(AQE_EXCLUDED_RULES, "org.example.SomeRule")
        keep_observations(spark)
        keep_observations(spark)
        assert spark.conf.get(AQE_EXCLUDED_RULES) == f"org.example.SomeRule,{EMPTY_RELATION_RULE}"
    finally:
        spark.conf.set(AQE_EXCLUDED_RULES, before) if before else spark.conf.unset(AQE_EXCLUDED_RULES)
