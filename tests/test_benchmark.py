"""The benchmark's record format, cost arithmetic, summary and report rendering (no Spark)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from tools.benchmark import analysis, cost, report
from tools.benchmark.ceiling import combine
from tools.benchmark.dataset import MAX_BYTES, MIN_BYTES, encode_in_range
from tools.benchmark.records import (
    KIND_CEILING,
    KIND_JOB,
    KIND_REFERENCE,
    KIND_SCALING,
    RecordError,
    check,
    read_records,
    run_record_problems,
    write_record,
)
from tools.benchmark.runner import discover_profiles

REPO = Path(__file__).resolve().parent.parent
PRICES = """
as_of: "2025 (test)"
compiled_on: "2026-01-01"
region: us-east-1
currency: USD
sources: ["test page"]
master: m5.xlarge
summary_instance: m6i.2xlarge
summary_market: on_demand
instances:
  m5.xlarge: {vcpus: 4, on_demand_usd_h: 0.192, spot_usd_h: 0.08, emr_usd_h: 0.048, role: master}
  m6i.2xlarge: {vcpus: 8, on_demand_usd_h: 0.384, spot_usd_h: 0.16, emr_usd_h: 0.096}
  g5.xlarge: {vcpus: 4, on_demand_usd_h: 1.006, spot_usd_h: 0.42, emr_usd_h: 0.252, gpu: A10G}
"""


def job_record(name: str, *, kind: str = KIND_JOB, e2e: float = 20.0, steady: float = 30.0, startup: float = 10.0) -> dict:
    rows = 200
    return {
        "record_version": 1,
        "bench_id": "20260101T000000Z",
        "name": name,
        "kind": kind,
        "status": "ok",
        "exit_code": 0,
        "git_commit": "abc123",
        "peak_memory_mb": 1500.0,
        "bench_wall_s": rows / e2e + 1.0,
        "local_cores": 2,
        "master": "local[2]",
        "command": ["spark-submit", "..."],
        "profile_path": f"conf/{name}.yaml",
        "run_id": "r1",
        "started_at": "2026-01-01T00:00:00Z",
        "profile": f"conf/{name}.yaml",
        "settings": {"model": {"uri": "model/artifacts/efficientnet_lite0"}},
        "manifest": "data/bench/manifest.csv",
        "output": "out/bench/x",
        "model_name": "efficientnet_lite0",
        "model_version": "85d09965d9a4",
        "rows_in": rows,
        "ok": rows,
        "error": 0,
        "skipped": 0,
        "wall_s": rows / e2e,
        "startup": {"jvm_to_driver_s": 1.0, "session_s": 2.0, "first_model_ready_s": startup, "model_load_s_max": 3.0},
        "startup_s": startup,
        "steady_s": rows / steady,
        "images_per_s": e2e,
        "steady_images_per_s": steady,
        "stages": {
            "read_manifest_s": 0.5,
            "fetch_s": 0.2,
            "decode_s": 2.0,
            "infer_s": 8.0,
            "write_s": 0.3,
            "spark_io_s": 0.4,
            "model_load_s": 6.0,
        },
        "tasks": 4,
        "model_builds": 2,
    }


def ceiling_record(value: float = 32.0) -> dict:
    return {
        "record_version": 1,
        "bench_id": "20260101T000000Z",
        "kind": KIND_CEILING,
        "name": "ceiling-efficientnet_lite0",
        "model_uri": "model/artifacts/efficientnet_lite0",
        "model_name": "efficientnet_lite0",
        "model_version": "85d09965d9a4",
        "settings_from": "conf/02-b.yaml",
        "batch_size": 32,
        "cores": 2,
        "images": 200,
        "decode": {"images": 200, "seconds": 1.0, "images_per_s_per_core": 200.0},
        "infer": {"all_cores": {"images_per_s": 40.0}, "one_thread": {"images_per_s": 20.0}},
        "combined": {"shared_images_per_s": 33.3, "per_core_images_per_s": value, "plan": "per_core", "images_per_s": value},
        "pipeline": {"images": 200, "images_per_s": 25.0, "decode_threads": 2},
        "ceiling_images_per_s": value,
    }


@pytest.fixture
def prices(tmp_path) -> cost.PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES)
    return cost.load_prices(path)


@pytest.fixture
def bench_dir(tmp_path) -> Path:
    """A synthetic bench run: baseline, a faster iteration, a slower one, the reference, a ceiling."""
    d = tmp_path / "runs" / "20260101T000000Z"
    d.mkdir(parents=True)
    write_record(d / "01-a.json", job_record("01-a", e2e=10.0, steady=20.0, startup=15.0))
    write_record(d / "02-b.json", job_record("02-b", e2e=20.0, steady=30.0, startup=8.0))
    write_record(d / "03-c.json", job_record("03-c", e2e=18.0, steady=29.0, startup=8.5))
    write_record(d / "predict_batch_udf-reference.json", job_record("predict_batch_udf-reference", kind=KIND_REFERENCE, e2e=8.0))
    write_record(d / "ceiling-efficientnet_lite0.json", ceiling_record(32.0))
    index = {
        "bench_id": "20260101T000000Z",
        "images": 200,
        "cores": 2,
        "master": "local[2]",
        "git_commit": "abc123",
        "manifest": "data/bench/200-s1/manifest.csv",
        "dataset": {"files": 200, "bytes_min": 51000, "bytes_max": 199000, "bytes_median": 100000, "photo_share": 0.15},
        "machine": {"cpus": 2, "cpu_model": "test", "memory_gb": 8.0},
        "load_avg_at_start": [0.1, 0.2, 0.3],
    }
    (d / "bench.json").write_text(json.dumps(index))
    return d


# --- record format ----------------------------------------------------------------------


def test_well_formed_job_record_passes():
    assert run_record_problems(job_record("01-a")) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("steady_images_per_s"), "steady_images_per_s"),
        (lambda r: r["stages"].pop("decode_s"), "stages.decode_s"),
        (lambda r: r["startup"].update(model_load_s_max=None), "startup.model_load_s_max is null"),
        (lambda r: r.update(ok=-1), "ok=-1"),
        (lambda r: r.update(rows_in=True), "rows_in=True"),
        (lambda r: r.update(ok=300), "ok + error + skipped > rows_in"),
        (lambda r: r.pop("peak_memory_mb"), "peak_memory_mb"),
        (lambda r: r.pop("git_commit"), "git_commit"),
        (lambda r: r.update(kind="other"), "kind='other'"),
        (lambda r: r.update(settings=None), "settings"),
    ],
)
def test_bad_job_records_name_the_problem(mutate, expected):
    record = job_record("01-a")
    mutate(record)
    problems = run_record_problems(record)
    assert any(expected in p for p in problems), problems
    with pytest.raises(RecordError, match="01-a"):
        check(record)


def test_reference_may_leave_unmeasurable_stages_null_the_job_may_not():
    record = job_record("predict_batch_udf-reference", kind=KIND_REFERENCE)
    record["stages"].update(write_s=None, spark_io_s=None)
    assert run_record_problems(record) == []
    record["kind"] = KIND_JOB
    assert {"stages.write_s is null", "stages.spark_io_s is null"} <= set(run_record_problems(record))


def test_failed_run_needs_a_message_but_not_the_job_keys():
    record = {**job_record("01-a"), "status": "failed", "failure": "exit code 1"}
    for key in ("stages", "startup", "images_per_s"):
        record.pop(key)
    assert run_record_problems(record) == []
    record.pop("failure")
    assert run_record_problems(record) == ["status must be 'ok', or 'failed' with a 'failure' message"]


def test_ceiling_record_checked_and_records_read_back_sorted(bench_dir):
    bad = ceiling_record()
    bad["ceiling_images_per_s"] = 0
    with pytest.raises(RecordError, match="ceiling_images_per_s"):
        check(bad)
    runs, ceilings = read_records(bench_dir)
    assert [r["name"] for r in runs] == ["01-a", "02-b", "03-c", "predict_batch_udf-reference"]
    assert [c["name"] for c in ceilings] == ["ceiling-efficientnet_lite0"]


def test_write_record_refuses_a_bad_record(tmp_path):
    record = job_record("01-a")
    del record["stages"]
    with pytest.raises(RecordError):
        write_record(tmp_path / "x.json", record)
    assert not (tmp_path / "x.json").exists()


# --- cost arithmetic (expected values computed by hand) ------------------------------------


def test_cost_per_million_by_hand():
    # 30 images/s per core x 8 vCPUs = 240 images/s = 864,000 images/h; (0.384 + 0.096) $/h / 0.864 M = 0.5556 $/M
    rate = cost.instance_rate(cost.per_core_rate(60.0, 2), 8)
    assert rate == 240.0
    assert cost.cost_per_million(0.384, 0.096, rate) == pytest.approx(0.48 / 0.864, rel=1e-12)
    assert cost.cost_per_million(0.384, 0.096, rate) == pytest.approx(0.5556, abs=1e-4)


def test_nodes_for_300m_in_24h_by_hand():
    # 300e6 / 86,400 s = 3,472.2 images/s needed; 240 per node -> 14.47 -> 15 nodes
    assert cost.nodes_needed(300e6, 24, 240.0) == 15
    # exactly enough: 300e6 / 86,400 / 10 = 347.22 images/s per node -> 10 nodes, not 11
    assert cost.nodes_needed(300e6, 24, 300e6 / 86_400 / 10) == 10
    assert cost.nodes_needed(1, 24, 1000.0) == 1
    with pytest.raises(ValueError):
        cost.nodes_needed(300e6, 24, 0)


def test_projection_300m_by_hand(prices):
    p = cost.project(prices, "m6i.2xlarge", "on_demand", 240.0)
    assert p.nodes == 15
    assert p.run_hours == pytest.approx(300e6 / (15 * 240 * 3600))  # 23.148 h
    assert p.run_hours == pytest.approx(23.148, abs=1e-3)
    assert p.workers_usd == pytest.approx(15 * 0.48 * 23.148148, rel=1e-6)  # 166.67
    assert p.workers_usd == pytest.approx(300 * p.cost_per_million_usd)  # same thing, per million
    assert p.master_usd == pytest.approx((0.192 + 0.048) * 23.148148, rel=1e-6)  # 5.56: on-demand master
    assert p.total_usd == pytest.approx(172.22, abs=0.01)
    spot = cost.project(prices, "m6i.2xlarge", "spot", 240.0)
    assert spot.cost_per_million_usd == pytest.approx((0.16 + 0.096) / 0.864)  # EMR uplift applies to spot too
    assert spot.master_usd == pytest.approx(p.master_usd)


def test_projections_skip_the_master_and_mark_gpu_na_without_a_gpu_measurement(prices):
    rows = cost.projections(prices, per_core=30.0)
    assert {(r["instance"], r["market"]) for r in rows} == {
        (i, m) for i in ("m6i.2xlarge", "g5.xlarge") for m in ("on_demand", "spot")
    }
    gpu = [r for r in rows if r["instance"] == "g5.xlarge"]
    assert all(not r["available"] for r in gpu)
    with_gpu = cost.projections(prices, per_core=30.0, gpu_images_per_s=500.0)
    g = next(r for r in with_gpu if r["instance"] == "g5.xlarge" and r["market"] == "on_demand")
    assert g["cost_per_million_usd"] == pytest.approx((1.006 + 0.252) / (500 * 3600) * 1e6)


def test_price_table_must_be_dated_and_sourced(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PRICES.replace('as_of: "2025 (test)"\n', ""))
    with pytest.raises(cost.PriceError, match="as_of"):
        cost.load_prices(path)
    path.write_text(PRICES.replace("spot_usd_h: 0.16", "spot_usd_h: -1"))
    with pytest.raises(cost.PriceError, match="spot_usd_h"):
        cost.load_prices(path)


def test_the_projects_price_table_loads():
    table = cost.load_prices(REPO / "conf" / "prices.yaml")
    assert table.sources and table.as_of and table.compiled_on
    assert table.master in table.instances and table.summary_instance in table.instances
    assert any(i.gpu for i in table.instances.values())


# --- ceiling arithmetic -----------------------------------------------------------------


def test_combined_ceiling_by_hand():
    # decode 100/s per core, infer 60/s on 2 cores, 35/s on one thread
    # shared: 1 / (1/200 + 1/60) = 46.15; per core: 2 / (1/100 + 1/35) = 51.85
    c = combine(100.0, 60.0, 35.0, 2)
    assert c["shared_images_per_s"] == pytest.approx(46.1538, abs=1e-3)
    assert c["per_core_images_per_s"] == pytest.approx(51.8519, abs=1e-3)
    assert c["plan"] == "per_core" and c["images_per_s"] == c["per_core_images_per_s"]


# --- summary and report -----------------------------------------------------------------


def test_summary_keys_and_values(bench_dir, prices):
    summary = analysis.build_summary(analysis.load_bench(bench_dir), prices)
    assert summary["ceiling_images_per_s"] == 32.0
    assert summary["best_profile"] == "02-b" and summary["baseline_profile"] == "01-a"
    ref = [name for name in summary["profiles"] if "predict_batch" in name]
    assert ref == ["predict_batch_udf-reference"]
    for name, p in summary["profiles"].items():
        for key in ("images_per_s", "steady_images_per_s", "startup_s", "speedup_vs_baseline", "cost_per_million_usd"):
            assert key in p, (name, key)
    assert summary["profiles"]["02-b"]["speedup_vs_baseline"] == pytest.approx(2.0)
    assert summary["profiles"]["01-a"]["speedup_vs_baseline"] == pytest.approx(1.0)
    # 02-b: 30 steady on 2 cores = 15/core x 8 vCPU = 120/s on m6i.2xlarge on-demand: 0.48 / 0.432 $/M
    assert summary["profiles"]["02-b"]["cost_per_million_usd"] == pytest.approx(0.48 / (120 * 3600) * 1e6)


def test_targets_pass_and_fail_on_the_numbers(bench_dir, prices):
    bench = analysis.load_bench(bench_dir)
    targets = analysis.evaluate_targets(bench)
    # best 02-b: steady 30 vs ceiling 32 = 94% -> pass; 20 / 8 = 2.5x reference -> pass; 1500 MB -> pass
    assert all(t["passed"] for t in targets), targets
    assert "= 94%" in targets[0]["detail"] and "= 2.50x" in targets[1]["detail"]
    slow = copy.deepcopy(bench)
    slow["ceilings"][0]["ceiling_images_per_s"] = 40.0  # 30 / 40 = 75%
    assert not analysis.evaluate_targets(slow)[0]["passed"]
    fat = copy.deepcopy(bench)
    next(r for r in fat["runs"] if r["name"] == "02-b")["peak_memory_mb"] = 5000.0
    assert not next(t for t in analysis.evaluate_targets(fat) if "memory" in t["target"])["passed"]


def test_report_renders_markdown_plots_and_summary(bench_dir, prices, tmp_path):
    out = tmp_path / "latest"
    summary = report.write_report(analysis.load_bench(bench_dir), prices, out)
    text = (out / "README.md").read_text()
    for png in ("throughput.png", "speedup.png", "stages.png", "cost.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert json.loads((out / "summary.json").read_text())["ceiling_images_per_s"] == summary["ceiling_images_per_s"]
    assert "made it slower" in text  # 03-c is slower than 02-b: the report says so, with numbers
    assert "20.0 -> 18.0 images/s (-10%" in text
    assert "10.0 -> 20.0 images/s (+100%, helped)" in text
    assert "g5.xlarge" in text and "n/a" in text
    assert "not verified: re-check before quoting" in text  # `verified` absent means unverified
    assert math.isfinite(summary["profiles"]["03-c"]["speedup_vs_baseline"])


def test_discover_profiles_sorted_or_given(tmp_path):
    for name in ("02-b.yaml", "01-a.yaml", "local.yaml", "10-j.yaml"):
        (tmp_path / name).write_text("{}\n")
    assert [p.name for p in discover_profiles(tmp_path)] == ["01-a.yaml", "02-b.yaml", "10-j.yaml"]
    given = [str(tmp_path / "local.yaml") + " " + str(tmp_path / "01-a.yaml")]
    assert [p.name for p in discover_profiles(tmp_path, given)] == ["local.yaml", "01-a.yaml"]
    with pytest.raises(SystemExit, match="not found"):
        discover_profiles(tmp_path, [str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit, match="no profiles"):
        discover_profiles(tmp_path / "empty")


def test_jpeg_sizes_land_in_range():
    import numpy as np
    from PIL import Image

    from tools.sample_data import fashion_mnist, product_photo

    rng = np.random.default_rng(3)
    items, _ = fashion_mnist("t10k")
    img = product_photo(items[0], rng)
    for target in (55_000, 120_000, 190_000):
        data, quality = encode_in_range(img, target)
        assert MIN_BYTES <= len(data) <= MAX_BYTES, (target, len(data), quality)
    assert Image.open(__import__("io").BytesIO(data)).format == "JPEG"


def test_tree_memory_sees_a_child_process_and_its_role():
    import subprocess
    import sys

    from tools.benchmark.runner import TreeMemory

    code = (
        "import time; block = bytearray(80 * 2**20); [block.__setitem__(i, 1) for i in range(0, len(block), 4096)]; time.sleep(1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    memory = TreeMemory(proc.pid, every_s=0.05)
    memory.start()
    proc.wait()
    memory.stop()
    assert memory.peak_bytes >= 80 * 2**20
    assert memory.peak_pss_bytes >= 70 * 2**20
    assert memory.peak_breakdown.get("python_driver_count") == 1


def test_last_error_line_of_a_log(tmp_path):
    from tools.benchmark.runner import last_error

    log = tmp_path / "run.log"
    log.write_text(
        "INFO start\nTraceback (most recent call last):\n  File x\nValueError: first\nAttributeError: the last one\nINFO bye\n"
    )
    assert last_error(log) == "AttributeError: the last one"
    assert last_error(tmp_path / "missing.log") == ""


def test_bench_heads_arithmetic(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tools.benchmark.heads_only import embedding_storage, rates

    vectors = [[float(i % 7)] * 1280 for i in range(50)]
    table = pa.table(
        {
            "image_id": [str(i) for i in range(50)],
            "embedding": pa.array(vectors, pa.list_(pa.float32())),
            "embedding_norm": pa.array([1.0] * 50, pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    storage = embedding_storage(tmp_path)
    assert 0 < storage["bytes_per_image"] < 5200
    assert storage["gb_per_million_images"] == round(storage["bytes_per_image"] / 1e3, 2)
    assert 0 < storage["share_of_output"] <= 1
    record = {
        "wall_s": 20.0,
        "steady_s": 8.0,
        "stored_embedding_s": 0.0,
        "paths": {"full": 100, "stored_embedding": 0},
        "stages": {"read_manifest_s": 1.0, "stage_s": 0.0, "tag_and_write_s": 8.0, "account_s": 1.0},
    }
    assert rates(record, 100)["rows_per_s_work"] == 10.0 and rates(record, 100)["rows_per_s_udf"] == 12.5
    stored = {**record, "paths": {"full": 0, "stored_embedding": 100}, "stored_embedding_s": 0.5}
    assert rates(stored, 100)["rows_per_s_udf"] == 200.0


# --- iteration 07, scaling, start-up, timeline, sizes (tools/benchmark/findings.py) ---------------
INT8_QUALITY = {
    "profile": "07-int8",
    "model_version": "feedbeef0001",
    "measured": {
        "images": 1006,
        "top1_agreement_confident": 0.99,
        "top1_in_top5": 0.999,
        "top1_agreement": 0.88,
        "real_photos_top1_kept": 1.0,
        "embedding_cosine_median": 0.993,
        "embedding_cosine_p1": 0.98,
    },
    "head_accuracy": {"float": 0.87, "int8": 0.865, "items": 2000},
    "gates": [{"gate": "top1_agreement_confident", "value": 0.99, "threshold": 0.97, "passed": True}],
    "adopted": True,
}


@pytest.fixture
def full_bench_dir(bench_dir) -> Path:
    """bench_dir plus 06/07 runs, the best profile's 1-core run and ceiling, a task timeline and int8 quality."""
    tflite = {"model": {"uri": "model/artifacts/efficientnet_lite0_tflite"}}
    int8 = {"model": {"uri": "model/artifacts/efficientnet_lite0_int8"}}
    write_record(bench_dir / "06-f.json", {**job_record("06-f", e2e=25.0, steady=40.0), "settings": tflite})
    best = {**job_record("07-int8", e2e=30.0, steady=64.0, startup=7.5), "settings": int8}
    best["startup"]["breakdown"] = {
        "driver_start_s": 2.0, "session_s": 2.5, "model_load_s": 0.2, "first_batch_s": 0.4, "manifest_read_s": 0.3,
    }  # fmt: skip
    best["task_timeline"] = [
        {"start": 7.0, "ready": 7.5, "end": 9.0, "images": 100, "worker": 11},
        {"start": 7.1, "ready": 7.6, "end": 10.0, "images": 100, "worker": 12},
        {"start": 9.0, "ready": 9.0, "end": 10.5, "images": 100, "worker": 11},
    ]
    write_record(bench_dir / "07-int8.json", best)
    one_core = {
        **job_record("07-int8-1core", kind=KIND_SCALING, steady=40.0),
        "settings": int8,
        "profile_path": "conf/07-int8.yaml",
        "local_cores": 1,
        "master": "local[1]",
    }
    write_record(bench_dir / "07-int8-1core.json", one_core)
    for cores, value in ((2, 70.0), (1, 42.0)):
        ceiling = {
            **ceiling_record(value),
            "model_uri": "model/artifacts/efficientnet_lite0_int8",
            "cores": cores,
            "name": f"ceiling-int8-{cores}",
        }
        write_record(bench_dir / f"ceiling-int8-{cores}.json", ceiling)
    index = json.loads((bench_dir / "bench.json").read_text())
    (bench_dir / "bench.json").write_text(json.dumps({**index, "int8": INT8_QUALITY, "ended_at": "x"}))
    return bench_dir


def test_summary_has_int8_scaling_and_the_ceiling_of_the_same_cores(full_bench_dir, prices):
    summary = analysis.build_summary(analysis.load_bench(full_bench_dir), prices)
    int8 = summary["int8"]
    assert int8["adopted"] is True and int8["top1_agreement_confident"] == 0.99
    assert int8["steady_speedup_vs_06"] == pytest.approx(64.0 / 40.0)
    scaling = summary["scaling"]
    assert scaling["cores_1_steady_images_per_s"] == 40.0 and scaling["cores_2_steady_images_per_s"] == 64.0
    assert scaling["linearity"] == pytest.approx(64.0 / 80.0)
    assert scaling["ceiling_1_core"] == 42.0 and scaling["ceiling_2_cores"] == 70.0
    assert summary["best_profile"] == "07-int8"
    assert summary["ceiling_images_per_s"] == 70.0  # the 2-core ceiling of the best run's model, not the 1-core one
    assert "07-int8" in summary["profiles"] and summary["profiles"]["07-int8-1core"]["kind"] == KIND_SCALING
    timeline = summary["timeline"]
    assert timeline["tasks"] == 3 and timeline["workers"] == 2
    assert timeline["tail_idle_s_max"] == pytest.approx(0.5)  # worker 12 ends at 10.0, the last task at 10.5
    assert [row["images"] for row in summary["sizes"]] == [200]


def test_targets_include_startup_and_the_int8_speedup(full_bench_dir):
    targets = {t["target"]: t for t in analysis.evaluate_targets(analysis.load_bench(full_bench_dir))}
    startup = next(t for name, t in targets.items() if name.startswith("start-up (JVM"))
    assert startup["passed"] and "7.5 s" in startup["detail"]
    speedup = next(t for name, t in targets.items() if "int8" in name)
    assert speedup["passed"] and "1.60x" in speedup["detail"]


def test_report_shows_gates_scaling_startup_and_timeline(full_bench_dir, prices, tmp_path):
    out = tmp_path / "latest"
    report.write_report(analysis.load_bench(full_bench_dir), prices, out)
    text = (out / "README.md").read_text()
    assert "## Iteration 07: int8 backbone" in text and "| top1_agreement_confident | 0.9900 | >= 0.97 | pass |" in text
    assert "**Adopted**" in text
    assert "2 cores give **1.60x** the rate of 1: 80% of linear" in text
    assert "| driver_start | 2.00 |" in text and "| (inside) manifest_read | 0.30 |" in text
    assert (out / "timeline.png").stat().st_size > 1000 and "](timeline.png)" in text


def test_sizes_table_takes_the_newest_bench_of_each_size(full_bench_dir, prices):
    other = full_bench_dir.parent / "20260102T000000Z"
    other.mkdir()
    write_record(other / "05-e.json", job_record("05-e", steady=27.0))
    write_record(other / "ceiling-efficientnet_lite0.json", ceiling_record(30.0))
    index = json.loads((full_bench_dir / "bench.json").read_text())
    (other / "bench.json").write_text(json.dumps({**index, "images": 500, "bench_id": "20260102T000000Z"}))
    rows = {row["images"]: row for row in analysis.build_summary(analysis.load_bench(full_bench_dir), prices)["sizes"]}
    assert rows[500]["of_ceiling"] == pytest.approx(0.9) and rows[500]["profile"] == "05-e"
    assert rows[200]["profile"] == "07-int8" and rows[200]["of_ceiling"] == pytest.approx(64.0 / 70.0)


def test_an_int8_iteration_whose_gates_failed_is_not_the_best(full_bench_dir, prices, tmp_path):
    index = json.loads((full_bench_dir / "bench.json").read_text())
    failed = {**INT8_QUALITY, "adopted": False}
    (full_bench_dir / "bench.json").write_text(json.dumps({**index, "int8": failed}))
    bench = analysis.load_bench(full_bench_dir)
    summary = analysis.build_summary(bench, prices)
    assert summary["best_profile"] == "06-f" and summary["int8"]["adopted"] is False
    assert summary["ceiling_images_per_s"] is None  # no tflite ceiling in this synthetic bench: not int8's
    report.write_report(bench, prices, tmp_path / "latest")
    text = (tmp_path / "latest" / "README.md").read_text()
    assert "07-int8 (gates failed: not adopted)" in text and "**Not adopted**" in text


def test_a_one_core_run_is_pinned_to_one_cpu(tmp_path):
    import os
    import sys

    from tools.benchmark.runner import cpus_for, run_monitored

    allowed = sorted(os.sched_getaffinity(0))
    assert cpus_for(len(allowed)) is None  # every CPU: nothing to pin
    one = cpus_for(1)
    assert one == {allowed[0]}
    log = tmp_path / "pinned.log"
    probe = [sys.executable, "-c", "import os; print('cpus', sorted(os.sched_getaffinity(0)))"]
    assert run_monitored(probe, dict(os.environ), log, timeout_s=60, cpus=one)["exit_code"] == 0
    assert f"cpus [{allowed[0]}]" in log.read_text()  # the child, and so its whole tree, sees one CPU


def test_latest_bench_skips_unfinished_and_side_benches(tmp_path):
    runs = tmp_path / "runs"
    for bench_id, index in (("1-done", {"ended_at": "x"}), ("2-large", {"ended_at": "x", "label": "large"}), ("3-killed", {})):
        (runs / bench_id).mkdir(parents=True)
        (runs / bench_id / "bench.json").write_text(json.dumps(index))
    assert analysis.latest_bench(runs).name == "1-done"


def test_an_iteration_after_a_rejected_one_is_compared_with_the_one_before(full_bench_dir):
    from tools.benchmark.markdown import iteration_notes

    bench = analysis.load_bench(full_bench_dir)
    write_record(full_bench_dir / "08-h.json", job_record("08-h", e2e=27.0, steady=45.0))
    runs = analysis.load_bench(full_bench_dir)["runs"]
    note = next(n for n in iteration_notes(runs, {"07-int8"}) if n.startswith("**08-h**"))
    assert "Versus 06-f" in note
    assert bench["index"]["int8"]["profile"] == "07-int8"


def test_cpu_facts_name_the_instruction_sets_int8_depends_on():
    from tools.benchmark.markdown import cpu_isa_text
    from tools.benchmark.runner import cpu_facts

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nmodel name\t: other\n"
    assert cpu_facts(x86) == ("AMD EPYC 7B13", ["avx2"])
    sapphire = "model name\t: Intel(R) Xeon(R)\nflags\t: avx2 avx512f avx512_vnni avx_vnni amx_int8 amx_tile\n"
    assert cpu_facts(sapphire)[1] == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
    graviton = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd40\n"
    assert cpu_facts(graviton) == ("", ["asimddp", "i8mm"])
    assert cpu_isa_text({"cpu_isa": ["avx2"]}) == "; avx2"
    assert cpu_isa_text({}) == "; instruction sets not recorded"


def test_serverless_cost_beside_ec2_from_the_cluster_profiles_executors():
    from tools.benchmark import analysis, cost
    from tools.benchmark.markdown import serverless_lines

    prices = cost.load_prices(REPO / "conf" / "prices.yaml")
    rows = cost.serverless_projections(prices, 60.0, analysis.cluster_profiles_spark_conf())
    emr, gpu = rows
    # conf/emr.yaml's executor: 4 cores, 6g + 3g overhead; 4 x 60 images/s; $ per hour over images per hour.
    assert (emr["vcpus"], emr["memory_gb"], emr["images_per_s_per_worker"]) == (4, 9, 240.0)
    per_hour = 4 * prices.serverless.vcpu_usd_h + 9 * prices.serverless.gb_usd_h
    assert emr["cost_per_million_usd"] == pytest.approx(per_hour / (240.0 * 3600) * 1e6)
    assert not gpu["available"] and "no GPU" in gpu["reason"]
    text = "\n".join(serverless_lines(rows, prices))
    assert f"| emr | 4 | 9 | 240.0 | {emr['cost_per_million_usd']:.3f} |" in text and "| gpu | 4 |" in text


def test_similar_images_cost_in_the_report_from_bench_similar_or_how_to_get_it(prices, tmp_path):
    from tools.benchmark.similar import report_lines

    assert "run `make bench-similar`" in "\n".join(report_lines(prices, tmp_path / "similar.json"))
    job = {"cpu": "EPYC", "cores": 2, "indexed": 200_000, "new": 2000, "load_avg_before": 1.5}
    job |= {"full": {"wall_s": 200.0}, "incremental": {"wall_s": 50.0}}
    bench = {"cpu": "Xeon", "cores": 2, "sizes": [{"vectors": 200_000, "ivf_total_s": 40.0}], "job_incremental": job}
    (tmp_path / "similar.json").write_text(json.dumps(bench))
    text = "\n".join(report_lines(prices, tmp_path / "similar.json"))
    # m6i.2xlarge: 8 vCPUs at $0.384 + $0.096 EMR an hour; per-core rate x 8 images/s per instance.
    for images, seconds, cpu in ((200_000, 40.0, "Xeon"), (202_000, 200.0, "EPYC"), (2000, 50.0, "EPYC")):
        usd = 0.48 / (images / seconds / 2 * 8 * 3600) * 1e6
        assert f"| {images:,} | {seconds:.1f} | 2 | {cpu} | {usd:.4f} |" in text
    assert "--incremental: new images added to 200,000" in text and "load average 1.5" in text


def test_startup_ab_takes_medians_per_engine_and_renders_them(tmp_path):
    from tools.benchmark.startup_ab import THIS_TREE, report_lines, summary

    def job(engine, process_s, startup_s, code=0):
        breakdown = {"driver_start_s": 1.5, "manifest_read_s": 0.4, "warm_up_s": None}
        found = {"engine": engine, "exit_code": code, "process_s": process_s, "load_avg_before": 1.0}
        job_facts = {"startup_s": startup_s, "steady_images_per_s": 120.0, "startup_breakdown": breakdown}
        return found | (job_facts if not code else {})

    runs = [job("baseline abc", 90.0, 8.0), job(THIS_TREE, 85.0, 6.0), job(THIS_TREE, 95.0, 7.0), job(THIS_TREE, 80.0, 5.0)]
    runs += [{"engine": "daft", "exit_code": 0, "process_s": 100.0, "load_avg_before": 2.5}, job("baseline abc", 0, 0, code=1)]
    found = summary(runs, images=10_000)
    medians = {"runs": 3, "process_s": 85.0, "images_per_s": 117.6, "startup_s": 6.0, "steady_images_per_s": 120.0}
    assert found[THIS_TREE] == medians
    assert found["baseline abc"]["runs"] == 1 and found["daft"] == {"runs": 1, "process_s": 100.0, "images_per_s": 100.0}
    report = {"images": 10_000, "profile": "conf/08-warm-start.yaml", "cores": 2, "cpu": "a CPU", "cpu_isa": ["avx2"]}
    report |= {"baseline_commit": "abc" * 13, "git_commit": "def" * 13, "summary": found, "runs": runs}
    (tmp_path / "ab.json").write_text(json.dumps(report))
    text = "\n".join(report_lines(tmp_path / "ab.json"))
    assert "| this tree | 3 | 85.0 | 117.6 | 6.0 | 120.0 |" in text and "| daft | 1 | 100.0 | 100.0 |  |  |" in text
    assert "load average 1.0-2.5" in text and "driver_start 1.50, manifest_read 0.40." in text  # the median run's
    assert "No `none.json` yet" in "\n".join(report_lines(tmp_path / "none.json"))
