"""`make bench-scale`: what grows with the catalogue, not with the images one run tags.

    python -m tools.benchmark.scale [--sizes 1000000 3000000 10000000] [--cores 2] [--current-runs 3]

Per size N, on a synthetic ledger of N images (tools/scale_ledger.py: the job's output columns, the
embedding included, every image done for the default profile; a second head on 99% of them), the
real job, spark-submit on local[<cores>] with conf/local.yaml and --set overrides:
1. `--incremental` with nothing left to do (the catalogue's manifest), single-chunk and chunked;
2. the current view, `python -m jobs.current`, of the same ledger;
3. `--incremental` with the second head: 1% of the images lack it and take the head-only path on
   their stored embeddings;
4. `--incremental` with 1% new images, whose file:// URLs do not exist (the fetch fails at once,
   so what grows is the planning against the ledger).
Each step appends at most 1% to the ledger the next one reads. Then the current view over a ledger
that `--current-runs` full runs over the same (smallest) N images appended to.

Each run's Spark event log gives the bytes each Parquet scan read (task input metrics, attributed to
the scan through its SQL metrics) and the columns it read (the scan's ReadSchema): the ledger's read
against its files' size and its embedding column's. Memory: the process tree's RSS sampled every
0.2 s (tools/benchmark/runner.py) and the JVM heap's peak from the event log. Writes
reports/scale.json; `make report` renders it (report_lines). The synthetic ledgers go under
--data (outside the repository: up to GBs) and are deleted after each size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pyspark

from jobs import metrics as M
from jobs.config import load_settings
from jobs.spark_args import job_command
from tools import scale_ledger
from tools.benchmark.ceiling import cpus_for
from tools.benchmark.runner import REPO, SPARK_SUBMIT, git_commit, machine_info, run_monitored, spark_env

HEADS = ("category",)
HEADS_PLUS_ONE = ("category", "category_again")  # the ledger's heads: the second lacks on 1% of images
TARGET_ROWS = 300_000_000
CURRENT_ROWS = 1_000_000  # the current view over --current-runs runs of this many images (issue 20)
SCENARIOS = ("incremental_noop", "current_view", "heads_on_stored_1pct", "incremental_new_1pct", "incremental_noop_chunked")
# A chunked run stages the plan and joins stored embeddings to the rows that need them (jobs/driver.py
# _stage); a single-chunk run probes the plan and, when some row needs one, joins them to every manifest
# image (single_pass_rows).
CHUNKED = ("output.chunks=2",)
# Adaptive execution on (Spark's default, as the job runs). The event log's plans keep each scan's whole
# ReadSchema (cut at 100 characters by default). No broadcast joins: the synthetic ledger's files are ~10x
# smaller than a real one's (its embedding compresses), so Spark's size estimate would broadcast the stored
# embeddings through the driver (an OOM at 300k rows), a plan a real ledger of this many rows never gets.
BENCH_CONF = {
    "spark.sql.autoBroadcastJoinThreshold": "-1",
    "spark.eventLog.logStageExecutorMetrics": "true",
    "spark.sql.maxMetadataStringLength": "100000",
}


def overrides_for(cores: int, heads: tuple[str, ...], events: Path, extra: tuple[str, ...] = ()) -> list[str]:
    heads_yaml = "[" + ", ".join(f"{{name: {h['name']}, uri: {h['uri']}}}" for h in scale_ledger.heads_for(list(heads))) + "]"
    conf = BENCH_CONF | {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri()}
    conf_overrides = [f"spark.conf.{k}={v}" for k, v in conf.items()]
    return [f"spark.master=local[{cores}]", f"model.heads={heads_yaml}", *conf_overrides, *extra]


def monitored(name: str, cmd: list[str], work: Path, events: Path, cores: int, timeout_s: float) -> dict:
    """Run one command under the memory sampler; its outcome plus what its event log says."""
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    print(f"[scale] {name} ...", flush=True)
    outcome = run_monitored(cmd, spark_env(), work / f"{name}.log", timeout_s, cpus=cpus_for(cores))
    if outcome["exit_code"] != 0:
        tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench-scale: {name} failed ({'timed out' if outcome['timed_out'] else outcome['exit_code']}):\n{tail}")
    logs = sorted(events.iterdir())
    return {**outcome, **event_log_facts(logs[-1].read_text().splitlines())}


def job_run(
    name: str, manifest: Path, ledger: Path, heads: tuple[str, ...], work: Path, cores: int, timeout_s: float,
    extra: tuple[str, ...] = (),
) -> dict:  # fmt: skip
    events, metrics = work / f"events-{name}", work / f"{name}.metrics.json"
    overrides = overrides_for(cores, heads, events, extra)
    cmd = job_command(
        load_settings(overrides=overrides), manifest=manifest, output=ledger, overrides=overrides, spark_submit=SPARK_SUBMIT,
        extra=["--incremental", "--metrics-out", str(metrics)],
    )  # fmt: skip
    facts = monitored(name, cmd, work, events, cores, timeout_s)
    record = json.loads(metrics.read_text())
    stages = record["stages"]
    work_s = stages[M.READ_MANIFEST_S] + stages.get(M.STAGE_S, 0.0) + stages[M.TAG_AND_WRITE_S] + stages[M.ACCOUNT_S]
    return {
        "work_s": round(work_s, 2),  # the job's planning, pass and accounting, without Spark's start-up
        "read_manifest_s": round(stages[M.READ_MANIFEST_S], 2),
        "tag_and_write_s": round(stages[M.TAG_AND_WRITE_S], 2),
        "account_s": round(stages[M.ACCOUNT_S], 2),
        "wall_s": round(facts["wall_s"], 2),
        "rows_in": record["rows_in"],
        "ok": record["ok"],
        "error": record["error"],
        "skipped": record["skipped"],
        "paths": record["paths"],
        **memory(facts),
        "scans": facts["scans"],
        "spark_jobs_s": facts["spark_jobs_s"],
        "executor_cpu_s": facts["executor_cpu_s"],
    }


def current_run(name: str, ledger: Path, work: Path, cores: int, timeout_s: float) -> dict:
    events = work / f"events-{name}"
    overrides = overrides_for(cores, HEADS, events)
    view = work / f"{name}-view"
    cmd = [sys.executable, "-m", "jobs.current", "--output", str(ledger), "--to", str(view)]
    cmd += [arg for override in overrides for arg in ("--set", override)]
    facts = monitored(name, cmd, work, events, cores, timeout_s)
    shutil.rmtree(view, ignore_errors=True)
    # The view's own work: its Spark jobs, first submitted to last ended (the process adds Spark's start-up).
    found = {"work_s": facts["spark_jobs_s"], "wall_s": round(facts["wall_s"], 2), "executor_cpu_s": facts["executor_cpu_s"]}
    return found | memory(facts) | {"scans": facts["scans"]}


def memory(facts: dict) -> dict:
    """Driver and executor memory. In local mode one JVM is the driver and the executor; the Python
    driver is the job's; the Python workers are the executor's (the tree's RSS at its peak, by role)."""
    roles = facts["peak_breakdown_mb"]
    return {
        "driver_peak_mb": round(roles.get("jvm", 0.0) + roles.get("python_driver", 0.0)),
        "python_workers_peak_mb": round(roles.get("python_worker", 0.0)),
        "tree_peak_mb": round(facts["peak_memory_mb"]),
        "jvm_heap_peak_mb": facts["jvm_heap_peak_mb"],
    }


def _scan_nodes(plan: dict, found: list[dict]) -> list[dict]:
    if plan.get("nodeName", "").startswith("Scan parquet"):
        meta = plan.get("metadata", {})
        found.append(
            {
                "location": meta.get("Location", ""),
                "read_schema": meta.get("ReadSchema", ""),
                "accumulators": {m["accumulatorId"] for m in plan.get("metrics", [])},
            }
        )
    for child in plan.get("children", []):
        _scan_nodes(child, found)
    return found


def event_log_facts(lines: list[str]) -> dict:
    """From a Spark event log: bytes read per Parquet location (each task's input bytes, given to the
    scan whose SQL metrics the task updated), the columns each location was read with, the JVM heap's
    peak, and the span of the Spark jobs."""
    scans: list[dict] = []
    by_location: dict[str, dict] = {}
    heap_peak = cpu_ns = 0
    job_times: list[int] = []
    for line in lines:
        event = json.loads(line)
        kind = event.get("Event", "")
        if kind.endswith(("SQLExecutionStart", "SQLAdaptiveExecutionUpdate")):
            scans += _scan_nodes(event["sparkPlanInfo"], [])
        elif kind == "SparkListenerTaskEnd":
            updated = {a["ID"] for a in event["Task Info"].get("Accumulables", [])}
            task_metrics = event.get("Task Metrics") or {}
            cpu_ns += task_metrics.get("Executor CPU Time", 0)
            read = task_metrics.get("Input Metrics", {}).get("Bytes Read", 0)
            hit = {scan["location"]: scan for scan in scans if scan["accumulators"] & updated}
            if read and len(hit) == 1:
                scan = next(iter(hit.values()))
                entry = by_location.setdefault(_path_of(scan["location"]), {"bytes_read": 0, "read_schemas": []})
                entry["bytes_read"] += read
                if scan["read_schema"] not in entry["read_schemas"]:
                    entry["read_schemas"].append(scan["read_schema"])
        elif kind == "SparkListenerStageExecutorMetrics":
            heap_peak = max(heap_peak, event["Executor Metrics"].get("JVMHeapMemory", 0))
        elif kind == "SparkListenerJobStart":
            job_times.append(event["Submission Time"])
        elif kind == "SparkListenerJobEnd":
            job_times.append(event["Completion Time"])
    span = (max(job_times) - min(job_times)) / 1000 if job_times else 0.0
    # Executor CPU seconds: what the tasks cost whatever else shares the cores (wall time does not).
    facts = {"scans": by_location, "jvm_heap_peak_mb": round(heap_peak / 2**20), "spark_jobs_s": round(span, 2)}
    return facts | {"executor_cpu_s": round(cpu_ns / 1e9, 2)}


def _path_of(location: str) -> str:
    """InMemoryFileIndex(1 paths)[file:/a/b] -> /a/b."""
    found = re.search(r"\[(?:file:)?([^\],]+)", location)
    return found.group(1).rstrip("/") if found else location


def column_bytes(folder: Path) -> dict[str, int]:
    """Compressed bytes per top-level column over a Parquet dataset's files (their footers)."""
    sizes: dict[str, int] = {}
    for path in folder.glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            for i in range(meta.num_columns):
                chunk = meta.row_group(group).column(i)
                top = chunk.path_in_schema.split(".")[0]
                sizes[top] = sizes.get(top, 0) + chunk.total_compressed_size
    return sizes


def ledger_read(run: dict, ledger: Path, embedding_bytes: int) -> dict:
    """What a run read of the ledger: its bytes (every scan of it together), and whether it read the embedding
    column: a scan asked for it and the run read at least half the column's bytes (a scan whose row groups a
    filter skips, such as the summary's few examples of this run, asks for it but reads only footers)."""
    entry = run["scans"].get(str(ledger), {"bytes_read": 0, "read_schemas": []})
    asked = any(re.search(rf"\b{scale_ledger.EMBEDDING}:", s) for s in entry["read_schemas"])
    return {"bytes_read": entry["bytes_read"], "embedding_read": asked and entry["bytes_read"] >= embedding_bytes / 2}


def measure_size(rows: int, data: Path, cores: int, timeout_s: float, models: scale_ledger.Models, *, view: bool = True) -> dict:
    """Every scenario at `rows` images; the current view only with `view` (None in the result without it)."""
    root = data / str(rows)
    generated = scale_ledger.generate(root, rows, models)
    print(
        f"[scale] {rows:,} rows generated in {generated['generate_s']} s ({generated['ledger_bytes'] / 1e6:.0f} MB)", flush=True
    )
    ledger, work = root / "ledger", root / "work"
    work.mkdir()
    columns = column_bytes(ledger)
    runs = {
        "incremental_noop": job_run("incremental_noop", root / "manifest", ledger, HEADS, work, cores, timeout_s),
        "incremental_noop_chunked": job_run(
            "incremental_noop_chunked", root / "manifest", ledger, HEADS, work, cores, timeout_s, CHUNKED
        ),
        "current_view": current_run("current_view", ledger, work, cores, timeout_s) if view else None,
        "heads_on_stored_1pct": job_run(
            "heads_on_stored_1pct", root / "manifest", ledger, HEADS_PLUS_ONE, work, cores, timeout_s
        ),
        "incremental_new_1pct": job_run("incremental_new_1pct", root / "manifest-new", ledger, HEADS, work, cores, timeout_s),
    }
    noop = runs["incremental_noop"]
    embedding_bytes = columns.get(scale_ledger.EMBEDDING, 0)
    read, chunked = (
        ledger_read(runs[name], ledger, embedding_bytes) for name in ("incremental_noop", "incremental_noop_chunked")
    )
    ran = [run for run in runs.values() if run is not None]
    result = {
        "rows": rows,
        **{f"{name}_s": runs[name]["work_s"] if runs[name] else None for name in SCENARIOS},
        "incremental_noop_rows_per_s": round(rows / max(noop["work_s"], 1e-9)),
        "driver_peak_mb": max(run["driver_peak_mb"] for run in ran),
        "python_workers_peak_mb": max(run["python_workers_peak_mb"] for run in ran),
        "jvm_heap_peak_mb": max(run["jvm_heap_peak_mb"] for run in ran),
        "ledger_bytes_read": read["bytes_read"],
        "ledger_bytes": sum(columns.values()),
        "ledger_embedding_bytes": embedding_bytes,
        "embedding_read_by_noop": read["embedding_read"],
        "ledger_bytes_read_chunked": chunked["bytes_read"],
        "embedding_read_by_noop_chunked": chunked["embedding_read"],
        "embedding_read_by_heads_on_stored": ledger_read(runs["heads_on_stored_1pct"], ledger, embedding_bytes)["embedding_read"],
        "generate_s": generated["generate_s"],
        "runs": runs,
    }
    shutil.rmtree(root)
    return result


def measure_runs(rows: int, runs: int, data: Path, cores: int, timeout_s: float, models: scale_ledger.Models) -> dict:
    """The current view over a ledger that `runs` full runs over the same `rows` images appended to."""
    root = data / f"{rows}x{runs}runs"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    scale_ledger.write_ledger(root / "ledger", rows, models, runs=runs)
    generate_s = round(time.perf_counter() - started, 1)
    (root / "work").mkdir()
    run = current_run("current_view", root / "ledger", root / "work", cores, timeout_s)
    shutil.rmtree(root)
    return {
        "images": rows,
        "runs": runs,
        "ledger_rows": rows * runs,
        "current_view_s": run["work_s"],
        "generate_s": generate_s,
        **run,
    }


def exponent(small: tuple[int, float], large: tuple[int, float]) -> float | None:
    """b in t = a * n^b through two (n, t) points; None when a time is not positive."""
    (n1, t1), (n2, t2) = small, large
    if t1 <= 0 or t2 <= 0 or n1 == n2:
        return None
    return round(math.log(t2 / t1) / math.log(n2 / n1), 2)


def exponents(sizes: list[dict]) -> dict:
    """Per scenario: the growth exponent from the smallest to the largest size, and between neighbours."""
    found: dict = {}
    for name in SCENARIOS:
        points = [(s["rows"], s[f"{name}_s"]) for s in sizes if s.get(f"{name}_s") is not None]  # None: not measured
        if len(points) < 2:
            continue
        found[name] = exponent(points[0], points[-1])
        found[f"{name}_steps"] = [exponent(a, b) for a, b in itertools.pairwise(points)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = [1_000_000, 3_000_000, 10_000_000]
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes, help="catalogue sizes (images)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--current-runs", type=int, default=3, help="full runs over the same images for the current view")
    parser.add_argument(
        "--current-rows", type=int, help="...over this many images (default: 1M when measured, else the smallest)"
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "scale-data", help="the synthetic data's folder, outside the repository"
    )
    parser.add_argument(
        "--current-max-rows",
        type=int,
        default=3_000_000,
        help="the current view only up to this many images (on 2 cores it takes over an hour at 10M)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "scale.json")
    args = parser.parse_args(argv)
    if any(n < 100 for n in args.sizes):
        parser.error("--sizes: at least 100 images each (1% of them must be an image)")
    if args.data.resolve().is_relative_to(REPO):
        parser.error(f"--data {args.data}: keep the synthetic data outside the repository (it can take GBs)")
    current_rows = args.current_rows or (CURRENT_ROWS if CURRENT_ROWS in args.sizes else min(args.sizes))
    models = scale_ledger.profile_models(scale_ledger.heads_for(list(HEADS_PLUS_ONE)))
    machine = machine_info()
    result: dict = {
        "cpu": machine["cpu_model"],
        "cpu_isa": machine["cpu_isa"],
        "cores": args.cores,
        "git_commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spark_conf": BENCH_CONF,
        "pyspark": pyspark.__version__,
        "synthetic": {
            "embedding": f"{scale_ledger.DISTINCT_EMBEDDINGS} distinct unit vectors of {scale_ledger.EMBEDDING_DIM} float32, "
            "plain + zstd, ~0.2 KB a row (a real ledger's: reports/heads-only.json's embedding_storage)",
            "row_group_rows": scale_ledger.ROW_GROUP_ROWS,
            "file_rows": scale_ledger.FILE_ROWS,
        },
        "sizes": [],
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    for rows in sorted(args.sizes):  # the report is written after each size: a long run keeps what it measured
        load = Path("/proc/loadavg").read_text().split()[0]
        size = measure_size(rows, args.data, args.cores, args.timeout, models, view=rows <= args.current_max_rows)
        size["load_avg_before"] = float(load)
        result["sizes"].append(size)
        print(f"[scale] {rows:,}: " + ", ".join(f"{name} {size[f'{name}_s']} s" for name in SCENARIOS), flush=True)
        if args.current_runs > 1 and rows == current_rows:
            found = measure_runs(rows, args.current_runs, args.data, args.cores, args.timeout, models)
            result["current_view_runs"] = found
        result["exponents"] = exponents(result["sizes"])
        result["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.report.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[scale] exponents {result['exponents']}; {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


TERRAFORM_VARIABLES = REPO / "infra" / "terraform" / "variables.tf"


def terraform_default(name: str, text: str) -> str | None:
    """A variable's default in infra/terraform/variables.tf (the cluster make deploy-cluster builds)."""
    found = re.search(rf'variable "{name}" \{{.*?default\s*=\s*"?([^"\n]+)"?', text, flags=re.DOTALL)
    return found.group(1).strip() if found else None


def cluster_nodes(text: str) -> tuple[str, int]:
    """(worker instance type, worker nodes): Terraform's default core nodes plus its spot task nodes."""
    instance = terraform_default("core_instance_type", text) or "m6i.2xlarge"
    nodes = sum(int(terraform_default(name, text) or 0) for name in ("core_instance_count", "task_spot_instance_count"))
    return instance, max(nodes, 1)


def projection(report: dict, prices, instance: str, nodes: int, target_rows: int = TARGET_ROWS) -> list[dict]:
    """Each scenario at target_rows on `nodes` x `instance`, from the largest size measured.

    Assumed: the time grows as the measured exponent (at least linearly) from the largest size; the
    work spreads over every vCPU of the cluster as it did over the bench's cores (scans and shuffles
    do; the driver's own steps do not, and they are in the measured time); a vCPU there does what a
    core did here (this CPU, this load); Spark start-up and the cluster's own start are left out.
    """
    spec = prices.instances[instance]
    usd_h = nodes * (spec.on_demand_usd_h + spec.emr_usd_h)
    master = prices.instances[prices.master]
    usd_h += master.on_demand_usd_h + master.emr_usd_h
    rows = []
    for name in SCENARIOS:
        largest = [s for s in report["sizes"] if s.get(f"{name}_s") is not None][-1]
        measured = largest[f"{name}_s"]
        grow = max(report["exponents"].get(name) or 1.0, 1.0)
        core_s = measured * report["cores"] * (target_rows / largest["rows"]) ** grow
        wall_s = core_s / (nodes * spec.vcpus)
        rows.append(
            {
                "scenario": name,
                "measured_s": measured,
                "rows": largest["rows"],
                "exponent_used": round(grow, 2),
                "core_s": round(core_s),
                "cluster_wall_s": round(wall_s),
                "usd": round(wall_s / 3600 * usd_h, 2),
            }
        )
    return rows


def report_lines(prices, path: Path) -> list[str]:
    """The catalogue-scale section of `make report` (tools/benchmark/markdown.py), from `path` (reports/scale.json)."""
    lines = ["## Catalogue scale (make bench-scale)", ""]
    if not path.is_file():
        return [*lines, f"No `{path.name}` yet: run `make bench-scale` (docs/benchmark.md).", ""]
    report = json.loads(path.read_text())
    sizes = report["sizes"]
    if not sizes:
        return [*lines, f"`{path.name}` holds no size yet.", ""]
    lines += [
        f"Synthetic ledgers (tools/scale_ledger.py: the job's columns, every image done; {report['synthetic']['embedding']}), "
        f"the real job on `local[{report['cores']}]` with conf/local.yaml, measured on {report['cpu']} "
        f"({', '.join(report['cpu_isa']) or 'no AVX2/AVX-512/VNNI'}); {report['started_at']} to {report.get('ended_at', '?')}, "
        f"load average before each size {', '.join(str(s['load_avg_before']) for s in sizes)} on 2 cores shared with other work: "
        "times are noisy. Seconds are the job's work (planning, the pass, accounting), without Spark's start-up; "
        "the current view's are its Spark jobs' span.",
        "",
        "| rows | --incremental, nothing to do | same, chunked (output.chunks=2) | 1% new images "
        "| a head on 1%, stored embeddings | current view | driver peak MB | ledger MB read (noop / chunked) "
        "| ledger MB (embedding) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        lines.append(
            f"| {s['rows']:,} | {s['incremental_noop_s']:.1f} s ({s['incremental_noop_rows_per_s']:,} rows/s) "
            f"| {s['incremental_noop_chunked_s']:.1f} s | {s['incremental_new_1pct_s']:.1f} s "
            f"| {s['heads_on_stored_1pct_s']:.1f} s | {_seconds(s['current_view_s'])} | {s['driver_peak_mb']:,} "
            f"| {s['ledger_bytes_read'] / 1e6:.1f} / {s['ledger_bytes_read_chunked'] / 1e6:.1f} "
            f"| {s['ledger_bytes'] / 1e6:.1f} ({s['ledger_embedding_bytes'] / 1e6:.1f}) |"
        )
    largest = sizes[-1]
    lines += [
        "",
        f"Embedding column read by the single-chunk no-op: **{'yes' if largest['embedding_read_by_noop'] else 'no'}**; by the "
        f"chunked no-op: **{'yes' if largest['embedding_read_by_noop_chunked'] else 'no'}** (the scans' ReadSchema in the "
        "event log). "
        + (
            "This single-chunk `--incremental` run joined stored embeddings to every manifest image before it knew whether "
            "any needed one, so it decoded the whole embedding column; a chunked run plans first and reads embeddings "
            "only when the plan has heads-only rows."
            if largest["embedding_read_by_noop"]
            else "Both plan first with the embedding pruned (a single chunk: the probe in jobs/driver.py, which also "
            "counts the progress total) and read embeddings only for images on the stored-embedding path."
        ),
        "",
    ]
    exps = report.get("exponents", {})
    if exps:
        lines += ["Growth exponent b in t = a * rows^b (smallest to largest size; between neighbours in brackets):", ""]
        for name in SCENARIOS:
            if name in exps:
                steps = ", ".join(str(e) for e in exps.get(f"{name}_steps", []))
                lines.append(f"- {name}: **{exps[name]}** ({steps})")
        read = exponent(*((s["rows"], s["ledger_bytes_read"]) for s in (sizes[0], sizes[-1])))
        lines += [
            f"- ledger bytes read by the single-chunk no-op: **{read}** (bytes do not depend on the load; wall times do, "
            "and a load that falls from one size to the next makes their exponents too low)",
            "",
        ]
    runs = report.get("current_view_runs")
    if runs:
        one = next((s for s in sizes if s["rows"] == runs["images"]), None)
        same_rows = next((s for s in sizes if s["rows"] == runs["ledger_rows"]), None)
        lines += [
            f"Current view over {runs['runs']} runs of the same {runs['images']:,} images ({runs['ledger_rows']:,} ledger rows): "
            f"{runs['current_view_s']:.1f} s"
            + (f"; over 1 run of them: {_seconds(one['current_view_s'])}" if one else "")
            + (f"; over {same_rows['rows']:,} images once: {_seconds(same_rows['current_view_s'])}" if same_rows else "")
            + ".",
            "",
        ]
    instance, nodes = cluster_nodes(TERRAFORM_VARIABLES.read_text())
    spec = prices.instances[instance]
    found = projection(report, prices, instance, nodes)
    lines += [
        f"Projection to {TARGET_ROWS / 1e6:.0f}M rows on the Terraform default cluster: {nodes} x {instance} "
        f"({spec.vcpus} vCPU each) + a {prices.master} master, on-demand + EMR uplift ({prices.as_of} prices, "
        "conf/prices.yaml). core-seconds = measured s x cores x (300M / rows)^max(b, 1); cluster s = core-seconds / "
        f"({nodes} x {spec.vcpus} vCPU). Assumed: the work spreads over every vCPU like over the bench's cores, a vCPU there "
        f"equals a core of this {report['cpu']} under this load, no start-up. "
        + embedding_at_target(largest, REPO / "reports" / "heads-only.json"),
        "",
        "| scenario | measured s at rows | b used | core-seconds at 300M | cluster s | $ |",
        "|---|---|---|---|---|---|",
    ]
    for row in found:
        lines.append(
            f"| {row['scenario']} | {row['measured_s']:.1f} at {row['rows']:,} | {row['exponent_used']} | {row['core_s']:,} "
            f"| {row['cluster_wall_s']:,} | {row['usd']:.2f} |"
        )
    return [*lines, ""]


def embedding_at_target(largest: dict, heads_only: Path, target_rows: int = TARGET_ROWS) -> str:
    """What reading the embedding column costs at target_rows on a real ledger (bytes a row from make bench-heads)."""
    if not heads_only.is_file():
        return "A real ledger's embedding bytes a row are not measured yet (make bench-heads)."
    per_row = json.loads(heads_only.read_text())["embedding_storage"]["bytes_per_image"]
    pruned = largest["ledger_bytes_read_chunked"] / largest["rows"]
    return (
        f"A real ledger's embedding takes {per_row:,.0f} bytes a row ({heads_only.name}), this one's "
        f"{largest['ledger_embedding_bytes'] / largest['rows']:,.0f}: a run that reads the column reads "
        f"{per_row * target_rows / 1e12:.2f} TB of it at {target_rows / 1e6:.0f}M rows, on top of the other columns "
        f"(the pruned read here: {pruned:,.1f} bytes a row; real image_ids and URLs are longer than these synthetic ones)."
    )


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f} s"
