"""`make bench-heads`: a head added to a tagged catalogue, full pass against heads on stored embeddings.

    python -m tools.benchmark.heads_only --images 2000

On the bench data set (the seeded JPEGs of `make bench`), in one run of this script:
1. the full pass: the default profile (TFLite backbone, the category head, the embedding),
   spark-submit on local[<cores>], fresh output;
2. the same command with --incremental and one more head (the category head's artifact again
   under a second column, so the ledger sees a head it lacks): every image already has an
   embedding for this backbone, so only the new head runs, on the stored embeddings.
Rows/s of each pass is measured three ways: end to end (JVM start to exit), the job's work
(planning, staging and tagging, without Spark's start-up), and the tagging UDF alone. Both
passes run on half the images and on all of them, so that the marginal rate of each path
(extra rows over extra work seconds) separates the per-row cost from Spark's fixed cost per
job, which dominates a head-only pass at a few thousand rows. The embedding's storage is read
from the Parquet footers of the full pass's output. Writes reports/heads-only.json and prints
one line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from jobs import metrics as M
from jobs.config import load_settings
from jobs.spark_args import job_command
from tools.benchmark.dataset import make_bench_dataset
from tools.benchmark.runner import REPO, SPARK_SUBMIT, spark_env

HEADS = "[{name: category, uri: model/artifacts/product_category_tflite}"
NOISE_S = 0.5
NEW_HEAD = ", {name: category_again, uri: model/artifacts/product_category_tflite}]"


def run_job(manifest: Path, output: Path, metrics: Path, overrides: list[str], incremental: bool, cores: int) -> dict:
    overrides = [f"spark.master=local[{cores}]", *overrides]
    extra = ["--metrics-out", str(metrics), *(["--incremental"] if incremental else [])]
    settings = load_settings(overrides=overrides)
    command = job_command(settings, manifest=manifest, output=output, overrides=overrides, extra=extra, spark_submit=SPARK_SUBMIT)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=spark_env(), cwd=REPO, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"bench-heads: the job failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    record = json.loads(metrics.read_text())
    record["outside_wall_s"] = time.perf_counter() - started
    return record


def rates(record: dict, rows: int) -> dict:
    stages = record["stages"]
    work_s = stages[M.READ_MANIFEST_S] + stages.get(M.STAGE_S, 0.0) + stages[M.TAG_AND_WRITE_S] + stages[M.ACCOUNT_S]
    udf_s = max(record["steady_s"], 1e-9) if record["paths"]["full"] else max(record["stored_embedding_s"], 1e-9)
    return {
        "rows": rows,
        "paths": record["paths"],
        "wall_s": round(record["wall_s"], 2),
        "work_s": round(work_s, 2),
        "rows_per_s_end_to_end": round(rows / record["wall_s"], 1),
        "rows_per_s_work": round(rows / work_s, 1),
        "rows_per_s_udf": round(rows / udf_s, 1),
    }


def embedding_storage(output: Path) -> dict:
    """Compressed bytes of the embedding columns in the output's Parquet files, per image."""
    columns: dict[str, int] = {}
    rows = 0
    for path in output.glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for group in range(meta.num_row_groups):
            for i in range(meta.num_columns):
                chunk = meta.row_group(group).column(i)
                top = chunk.path_in_schema.split(".")[0]
                columns[top] = columns.get(top, 0) + chunk.total_compressed_size
    per_image = (columns.get("embedding", 0) + columns.get("embedding_norm", 0)) / max(rows, 1)
    return {
        "format": "Parquet, snappy: embedding array<float> (1280 x float32) + embedding_norm float",
        "bytes_per_image": round(per_image, 1),
        "gb_per_million_images": round(per_image * 1e6 / 1e9, 2),
        "share_of_output": round(per_image * rows / max(sum(columns.values()), 1), 3),
    }


def both_passes(manifest: Path, work: Path, cores: int) -> tuple[dict, dict, Path]:
    output = work / "output"
    full = run_job(manifest, output, work / "full.json", [f"model.heads={HEADS}]"], False, cores)
    heads = run_job(manifest, output, work / "heads.json", [f"model.heads={HEADS}{NEW_HEAD}"], True, cores)
    return full, heads, output


def subset(manifest: Path, rows: int, out: Path) -> Path:
    lines = manifest.read_text().splitlines(keepends=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines[: rows + 1]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "out" / "bench-heads")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "heads-only.json")
    args = parser.parse_args(argv)
    manifest = make_bench_dataset(REPO / "data" / "bench" / f"{args.images}-s20240", args.images)
    sizes = {"half": args.images // 2, "all": args.images}
    result: dict = {"images": args.images, "cores": args.cores}
    for label, rows in sizes.items():
        work = args.work / label
        full, heads, output = both_passes(subset(manifest, rows, work / "manifest.csv"), work, args.cores)
        if heads["paths"] != {"full": 0, "stored_embedding": rows}:
            raise SystemExit(f"bench-heads: expected every row on the stored-embedding path, got {heads['paths']}")
        result[label] = {"full_pass": rates(full, rows), "heads_only_pass": rates(heads, rows)}
    result["full_pass"], result["heads_only_pass"] = result["all"]["full_pass"], result["all"]["heads_only_pass"]
    for how in ("end_to_end", "work", "udf"):
        key = f"rows_per_s_{how}"
        result[f"speedup_{how}"] = round(result["heads_only_pass"][key] / result["full_pass"][key], 1)
    extra = sizes["all"] - sizes["half"]
    marginal = {}
    for name in ("full_pass", "heads_only_pass"):
        grew = result["all"][name]["work_s"] - result["half"][name]["work_s"]
        # Under half a second of growth is within this machine's run-to-run noise: no rate.
        marginal[name] = round(extra / grew, 1) if grew > NOISE_S else None
    result["marginal_rows_per_s"] = marginal
    result["speedup_marginal"] = (
        round(marginal["heads_only_pass"] / marginal["full_pass"], 1)
        if marginal["heads_only_pass"] and marginal["full_pass"]
        else None
    )
    result["embedding_storage"] = embedding_storage(output)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(result, indent=2) + "\n")
    storage = result["embedding_storage"]
    print(
        f"bench-heads: {args.images} images on local[{args.cores}]: head-only pass "
        f"{result['heads_only_pass']['rows_per_s_work']} rows/s against {result['full_pass']['rows_per_s_work']} for the full "
        f"pass ({result['speedup_work']}x; per extra row: {marginal['heads_only_pass'] or 'below noise'} against "
        f"{marginal['full_pass']} rows/s; UDF alone {result['speedup_udf']}x; end to end with Spark start-up "
        f"{result['speedup_end_to_end']}x); embedding {storage['bytes_per_image']} bytes/image = "
        f"{storage['gb_per_million_images']} GB per million images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
