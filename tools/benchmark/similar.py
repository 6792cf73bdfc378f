"""Benchmark of jobs/similar_images.py's search (`make bench-similar`): recall, time, memory, growth.

    python -m tools.benchmark.similar [--sizes 10000 50000 200000] [--queries 2000] [--out reports/similar.json]

On a synthetic clustered set shaped like the backbone's embeddings (1280-d, non-negative, low
intrinsic dimension: a mixture of products in a 64-d latent space through a random ReLU layer), it
runs the inverted file exactly as each Spark task does (jobs.similar: k-means on a sample, base
cell + nprobe probed cells, exact blocks) in one process, BLAS limited to --cores threads:
- recall@10 against exact brute force, on --queries random images (exact top 10 over all n);
- for each nprobe in --nprobes at the largest size (queries only: recall as nprobe grows);
- time and peak traced memory (numpy's allocations, tracemalloc) of the full search at each size,
  next to exact search's time (measured on --queries images, scaled to n: exact is n x n);
  the growth exponents are the slopes of log(time) against log(n);
- new images (1% of the largest size) searched against the index vs a full run over all of them.
--real (default reports/duplicate_set.npz, from `python -m tools.duplicate_set`) adds recall on real
embeddings of generated product photos; --spark-sizes runs the job itself (local[--cores]) end to end;
--job-incremental N runs the job on N images, then `--incremental` after 1% more arrive, then a full
run on all of them (the alternative), in one Spark session. --only-job-incremental measures just that
and merges it into the existing --out. Writes reports/similar.json. Opt-in: never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from jobs.config import SimilarSettings
from jobs.similar import default_cells, ivf_neighbours, kmeans, nearest_cells, search, top_k, unit_rows

DIM, LATENT = 1280, 64
REAL = Path("reports/duplicate_set.npz")  # python -m tools.duplicate_set writes it
K = 10


def synthetic(n: int, *, seed: int, products: int | None = None) -> np.ndarray:
    """n clustered vectors like the backbone's: ~10 images per product, products grouped in 50 categories."""
    rng = np.random.default_rng(seed)
    products = products or max(1, n // 10)
    categories = rng.normal(size=(50, LATENT))
    centres = categories[rng.integers(0, 50, products)] + 0.7 * rng.normal(size=(products, LATENT))
    latent = centres[rng.integers(0, products, n)] + 0.6 * rng.normal(size=(n, LATENT))
    lift = np.random.default_rng(1234).normal(size=(LATENT, DIM)).astype(np.float32) / np.sqrt(LATENT)
    vectors = np.maximum(latent.astype(np.float32) @ lift, 0)
    vectors += 0.05 * np.abs(rng.standard_normal(size=vectors.shape, dtype=np.float32))
    return unit_rows(vectors)


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top K of the query rows against all rows, and the seconds it took."""
    start = time.perf_counter()
    pairs = search(vectors[queries], queries, vectors, np.arange(len(vectors)), k=K, min_score=np.inf, block=1024)
    rows, _ = top_k(pairs, len(queries), K)
    return rows, time.perf_counter() - start


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]))


def traced(work):
    """(result, seconds, peak MiB numpy allocated while it ran)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def index(vectors: np.ndarray, settings: SimilarSettings, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Centroids as the job learns them (a sample of similar.sample_size, about sqrt(n) cells); seconds."""
    cells = settings.cells or default_cells(len(vectors))
    sample = vectors[rng.choice(len(vectors), min(settings.sample_size, len(vectors)), replace=False)]
    start = time.perf_counter()
    centroids = kmeans(sample, min(cells, len(sample)), iterations=settings.kmeans_iterations, seed=settings.seed)
    return centroids, time.perf_counter() - start


def measure_size(n: int, settings: SimilarSettings, queries: int, seed: int) -> dict:
    vectors = synthetic(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(n, min(queries, n), replace=False)
    exact, exact_s = exact_top(vectors, chosen)
    centroids, train_s = index(vectors, settings, rng)
    (rows, _), search_s, peak = traced(
        lambda: ivf_neighbours(vectors, centroids, nprobe=settings.nprobe, k=K, block=settings.block_size)
    )
    return {
        "vectors": n,
        "cells": len(centroids),
        "nprobe": settings.nprobe,
        "recall_at_10": round(recall(rows[chosen], exact), 4),
        "ivf_train_s": round(train_s, 2),
        "ivf_search_s": round(search_s, 2),
        "ivf_total_s": round(train_s + search_s, 2),
        "ivf_peak_mib": round(peak, 1),
        "exact_s_estimated": round(exact_s * n / len(chosen), 2),
        "exact_measured_on_queries": len(chosen),
    }


def nprobe_sweep(n: int, settings: SimilarSettings, nprobes: list[int], queries: int, seed: int) -> list[dict]:
    """Recall and search time per query as nprobe grows, at one size (the queries only)."""
    vectors = synthetic(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(n, min(queries, n), replace=False)
    exact, _ = exact_top(vectors, chosen)
    centroids, _ = index(vectors, settings, rng)
    out = []
    for nprobe in nprobes:
        start = time.perf_counter()
        rows, _ = ivf_neighbours(vectors, centroids, nprobe=nprobe, k=K, block=settings.block_size, queries=chosen)
        per_query_ms = (time.perf_counter() - start) / len(chosen) * 1000
        out.append({"nprobe": nprobe, "recall_at_10": round(recall(rows, exact), 4), "ms_per_query": round(per_query_ms, 3)})
        print(f"  nprobe {nprobe}: recall@10 {out[-1]['recall_at_10']}", flush=True)
    return out


def incremental(n: int, settings: SimilarSettings, seed: int) -> dict:
    """n images indexed (centroids and each one's base cell kept from their run), 1% new: the new images
    assigned and searched against all vs a full run over all of them with the same centroids."""
    new = max(1, n // 100)
    vectors = synthetic(n + new, seed=seed)
    centroids, _ = index(vectors[:n], settings, np.random.default_rng(seed))
    indexed_cells = nearest_cells(vectors[:n], centroids, 1)[:, 0]
    fresh = np.arange(n, n + new)
    start = time.perf_counter()
    base_cell = np.concatenate([indexed_cells, nearest_cells(vectors[fresh], centroids, 1)[:, 0]])
    ivf_neighbours(vectors, centroids, nprobe=settings.nprobe, k=K, block=settings.block_size, queries=fresh, base_cell=base_cell)
    incremental_s = time.perf_counter() - start
    start = time.perf_counter()
    ivf_neighbours(vectors, centroids, nprobe=settings.nprobe, k=K, block=settings.block_size)
    full_s = time.perf_counter() - start
    return {"indexed": n, "new": new, "incremental_s": round(incremental_s, 2), "full_s": round(full_s, 2)}


def real_recall(path: Path, settings: SimilarSettings) -> dict:
    vectors = unit_rows(np.load(path)["embeddings"])
    exact, _ = exact_top(vectors, np.arange(len(vectors)))
    centroids, _ = index(vectors, settings, np.random.default_rng(0))
    rows, _ = ivf_neighbours(vectors, centroids, nprobe=settings.nprobe, k=K, block=settings.block_size)
    return {"source": str(path), "vectors": len(vectors), "cells": len(centroids), "recall_at_10": round(recall(rows, exact), 4)}


def synthetic_ledger(path: Path, vectors: np.ndarray, first: int = 0) -> None:
    """A tags output holding `vectors` as ok rows of the default profile's backbone (what the job reads):
    images img<first>, img<first + 1>, ... in one more Parquet file."""
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.config import load_settings
    from jobs.infer import load_bundle

    settings = load_settings()
    backbone = load_bundle(settings.model.uri, []).backbone
    n = len(vectors)
    tag = pa.struct([("label", pa.string()), ("score", pa.float32())])
    table = pa.table(
        {
            "image_id": pa.array([f"img{i:07d}" for i in range(first, first + n)]),
            "url": pa.array([f"s3://images/img{i:07d}.jpg" for i in range(first, first + n)]),
            "status": pa.array(["ok"] * n),
            "error": pa.nulls(n, pa.string()),
            "tags": pa.array([[{"label": "cup", "score": 0.5}]] * n, pa.list_(tag)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]).cast(
                pa.list_(pa.float32())
            ),
            "embedding_norm": pa.array(np.ones(n, dtype=np.float32)),
            "model_name": pa.array([backbone.name] * n),
            "model_version": pa.array([backbone.version] * n),
            "models": pa.array([[(backbone.name, backbone.version)]] * n, pa.map_(pa.string(), pa.string())),
            "processed_at": pa.array([datetime(2026, 3, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")),
            "run_id": pa.array(["bench"] * n),
        }
    )
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / f"part-{first:07d}.parquet", row_group_size=8192)


def local_spark(cores: int):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers need this venv's numpy and pandas
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.shuffle.partitions", str(4 * cores))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def run_job(spark, tags: Path, output: Path, *flags: str) -> dict:
    """jobs/similar_images.py's main in this session: exit status, wall seconds, its summary lines."""
    import contextlib
    import io

    from jobs.similar_images import main as similar_main

    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = similar_main(["--tags", str(tags), "--output", str(output), *flags], spark=spark)
    seconds = time.perf_counter() - start
    return {"exit": code, "wall_s": round(seconds, 1), "summary": printed.getvalue().strip().splitlines()}


def spark_job(n: int, cores: int, seed: int, workdir: Path) -> dict:
    """The job itself (spark-submit's main, local[cores]) on n synthetic vectors: wall time and its stages."""
    synthetic_ledger(workdir / f"tags-{n}", synthetic(n, seed=seed))
    spark = local_spark(cores)
    result = run_job(spark, workdir / f"tags-{n}", workdir / f"similar-{n}")
    spark.stop()
    return {"vectors": n, **result}


def job_incremental(n: int, cores: int, seed: int, workdir: Path) -> dict:
    """The job on n images, then --incremental after 1% new ones arrive, then a full run over all of them
    (what the incremental run saves), one after the other in one Spark session."""
    new = max(1, n // 100)
    vectors = synthetic(n + new, seed=seed)
    tags = workdir / f"tags-incremental-{n}"
    synthetic_ledger(tags, vectors[:n])
    spark = local_spark(cores)
    first = run_job(spark, tags, workdir / "similar-incremental")
    synthetic_ledger(tags, vectors[n:], first=n)
    incremental_run = run_job(spark, tags, workdir / "similar-incremental", "--incremental")
    full = run_job(spark, tags, workdir / "similar-full")
    spark.stop()
    return {"indexed": n, "new": new, "first_full": first, "incremental": incremental_run, "full": full}


def cost(images: int, seconds: float, cores: int, prices) -> dict:
    """USD per million images for `images` handled in `seconds` on `cores` cores, on the tagging report's price
    basis (tools.benchmark.cost, `prices` a PriceTable: the local per-core rate times the summary instance's
    vCPUs, EMR uplift included). Per image cost grows as sqrt(n) (docs/similar.md)."""
    from tools.benchmark.cost import cost_per_million, instance_rate, per_core_rate

    instance = prices.instances[prices.summary_instance]
    rate = instance_rate(per_core_rate(images / seconds, cores), instance.vcpus)
    usd = cost_per_million(instance.usd_h(prices.summary_market), instance.emr_usd_h, rate)
    return {
        "images": images,
        "seconds": seconds,
        "instance": instance.name,
        "market": prices.summary_market,
        "images_per_s_per_instance": round(rate, 1),
        "usd_per_million": round(usd, 4),
    }


def costs(report: dict, prices) -> dict:
    """The report's cost lines: the numpy core at the largest size; the Spark job (wall, fixed costs included)
    full over all images and --incremental per new image, when they were measured."""
    cores, largest = report["cores"], report["sizes"][-1]
    out = {"numpy_core": {**cost(largest["vectors"], largest["ivf_total_s"], cores, prices), "cpu": report["cpu"]}}
    job = report.get("job_incremental")
    if job:
        total = job["indexed"] + job["new"]
        out["job_full"] = {**cost(total, job["full"]["wall_s"], job["cores"], prices), "cpu": job["cpu"]}
        per_new = cost(job["new"], job["incremental"]["wall_s"], job["cores"], prices)
        out["job_incremental_per_new_image"] = {**per_new, "cpu": job["cpu"]}
    return out


def slope(points: list[dict], key: str) -> float:
    x = np.log([p["vectors"] for p in points])
    y = np.log([p[key] for p in points])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmark.similar", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--queries", type=int, default=2000, help="images whose exact top 10 is computed for recall")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--cores", type=int, default=2, help="recorded; the BLAS threads are set by the caller (bench.mk)")
    parser.add_argument("--real", type=Path, default=REAL, help="real embeddings (.npz), skipped when missing")
    parser.add_argument(
        "--spark-sizes", type=int, nargs="*", default=[10_000, 50_000], help="the Spark job itself at these sizes"
    )
    parser.add_argument(
        "--job-incremental", type=int, default=200_000, help="the job's --incremental at N images + 1%% (0: skip)"
    )
    parser.add_argument("--only-job-incremental", action="store_true", help="measure only that; merge it into --out")
    parser.add_argument("--prices", type=Path, default=Path("conf/prices.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports/similar.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.only_job_incremental:
        report = json.loads(args.out.read_text())
        measure_job_incremental(report, args)
        return write_report(report, args)
    settings = SimilarSettings()
    report = {"cpu": cpu_name(), "cores": args.cores, "k": K, "settings": {"nprobe": settings.nprobe, "cells": "sqrt(n)"}}
    report["sizes"] = []
    for n in args.sizes:
        print(f"{n} vectors ...", flush=True)
        report["sizes"].append(measure_size(n, settings, args.queries, args.seed))
        print(f"  {report['sizes'][-1]}", flush=True)
    if len(args.sizes) > 1:
        report["growth_exponent"] = {
            "ivf": slope(report["sizes"], "ivf_total_s"),
            "exact": slope(report["sizes"], "exact_s_estimated"),
        }
    print(f"nprobe sweep at {max(args.sizes)} ...", flush=True)
    report["nprobe_sweep"] = {
        "vectors": max(args.sizes),
        "points": nprobe_sweep(max(args.sizes), settings, args.nprobes, args.queries, args.seed),
    }
    report["incremental"] = incremental(max(args.sizes), settings, args.seed)
    if args.spark_sizes:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench-similar-") as workdir:
            report["spark_job"] = [spark_job(n, args.cores, args.seed, Path(workdir)) for n in args.spark_sizes]
    if args.real.exists():
        report["real"] = real_recall(args.real, settings)
    if args.job_incremental:
        measure_job_incremental(report, args)
    return write_report(report, args)


def measure_job_incremental(report: dict, args: argparse.Namespace) -> None:
    import tempfile

    print(f"the job: {args.job_incremental} vectors, then --incremental with 1% new ...", flush=True)
    machine = {"cpu": cpu_name(), "cores": args.cores, "load_avg_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as workdir:
        report["job_incremental"] = {**machine, **job_incremental(args.job_incremental, args.cores, args.seed, Path(workdir))}


def write_report(report: dict, args: argparse.Namespace) -> int:
    from tools.benchmark.cost import load_prices

    report["cost"] = costs(report, load_prices(args.prices))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def report_lines(prices, path: Path) -> list[str]:
    """The similar-images section of `make report` (tools/benchmark/markdown.py): its cost per million images
    from `path` (make bench-similar's JSON), priced with the tagging section's `prices` (a PriceTable)."""
    lines = ["## Similar images (jobs/similar_images.py)", ""]
    if not path.is_file():
        return [*lines, f"No `{path.name}` yet: run `make bench-similar` (docs/similar.md).", ""]
    report = json.loads(path.read_text())
    found = costs(report, prices)
    instance = found["numpy_core"]
    lines += [
        f"From `{path.name}` (`make bench-similar`), on the tagging section's price basis: the per-core rate measured "
        f"there times a {instance['instance']}'s vCPUs, {instance['market'].replace('_', '-')}, EMR uplift included. "
        "Each number comes from the CPU named beside it; the cost per image grows as sqrt(n) with the images searched "
        "together (docs/similar.md).",
        "",
        "| what | images | seconds | cores | CPU | $ per 1M images |",
        "|---|---|---|---|---|---|",
    ]
    job = report.get("job_incremental")
    rows = [("the search core (numpy, k-means + search)", "numpy_core", report["cores"])]
    if job:
        added = f"the Spark job, --incremental: new images added to {job['indexed']:,} (wall)"
        rows += [
            ("the Spark job, full run (wall)", "job_full", job["cores"]),
            (added, "job_incremental_per_new_image", job["cores"]),
        ]
    for what, key, cores in rows:
        c = found[key]
        lines.append(f"| {what} | {c['images']:,} | {c['seconds']:.1f} | {cores} | {c['cpu']} | {c['usd_per_million']:.4f} |")
    if job:
        lines += [
            "",
            f"The job's runs share one Spark session; load average {job['load_avg_before']} before them (a shared machine).",
        ]
    else:
        lines += ["", "The Spark job's own cost is not measured yet: run `make bench-similar` (its --job-incremental part)."]
    return [*lines, ""]
