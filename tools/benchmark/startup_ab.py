"""Whole-process A/B at 10,000 images: this tree against a baseline commit and the Daft peer, one run.

    python -m tools.benchmark.startup_ab --images 10000 --baseline 2a61f2c^ --rounds 3

The machines are shared and noisy, so the engines alternate within each round (the order rotates)
and the report compares medians measured in this one run. Per run: the whole process's wall time
(spark-submit or python, from exec to exit) and images / that; for the job also its own record
(--metrics-out: start-up, its breakdown, steady images/s). Same seeded JPEGs as `make bench`
(data/bench/<images>-s<seed>), same profile, local[<cores>]. The baseline is `git archive` of the
commit beside this tree, with this tree's built model artifacts linked in. The Daft peer
(tools/benchmark/peer_daft.py) runs only when `make peer-tools` has installed Daft into --peer-site.
Writes reports/startup-ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.benchmark.dataset import make_bench_dataset
from tools.benchmark.peer_daft import NO_TELEMETRY
from tools.benchmark.runner import REPO, SPARK_SUBMIT, git_commit, machine_info, run_monitored, spark_env

RUN_TIMEOUT_S = 3600  # a run that hangs is killed (its whole process group) and counts as failed
THIS_TREE = "this tree"
DAFT = "daft"


def baseline_tree(revision: str, into: Path) -> tuple[Path, str]:
    """The baseline commit's files (git archive), its model artifacts those this tree built."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    artifacts = into / "model" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    for built in (REPO / "model" / "artifacts").iterdir():
        if not (artifacts / built.name).exists():
            (artifacts / built.name).symlink_to(built)
    return into, commit


def job_run(tree: Path, manifest: Path, profile: str, cores: int, work: Path, name: str) -> dict:
    """One spark-submit of the job in `tree`, with that tree's own reading of the profile."""
    env = spark_env() | {"SPARK_CONF_DIR": str(tree / "conf" / "spark")}
    master = f"spark.master=local[{cores}]"
    spark_args = subprocess.run(
        [sys.executable, "-m", "jobs.spark_args", "--profile", profile, "--set", master],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    metrics, output = work / f"{name}.metrics.json", work / f"{name}-out"
    shutil.rmtree(output, ignore_errors=True)
    cmd = [
        str(SPARK_SUBMIT), *spark_args, "jobs/tag_images.py", "--manifest", str(manifest), "--output", str(output),
        "--profile", profile, "--set", master, "--metrics-out", str(metrics),
    ]  # fmt: skip
    found = timed(cmd, tree, env, work / f"{name}.log")
    if found["exit_code"] == 0:
        record = json.loads(metrics.read_text())
        found |= {
            "startup_s": round(record["startup_s"], 2),
            "steady_images_per_s": round(record["steady_images_per_s"], 1),
            "job_images_per_s": round(record["images_per_s"], 1),
            "startup_breakdown": record["startup"]["breakdown"],
            "stages": record["stages"],  # the job's phases: manifest, tag and write, accounting
        }
    shutil.rmtree(output, ignore_errors=True)
    return found


def daft_run(manifest: Path, profile: str, cores: int, peer_site: Path, work: Path, name: str) -> dict:
    env = spark_env() | NO_TELEMETRY | {"PYTHONPATH": f"{peer_site}{os.pathsep}{REPO}"}
    output = work / f"{name}-out"
    shutil.rmtree(output, ignore_errors=True)
    record = work / f"{name}.daft.json"
    cmd = [
        sys.executable, "-m", "tools.benchmark.peer_daft", "--manifest", str(manifest), "--profile", profile,
        "--out", str(output), "--cores", str(cores), "--record", str(record),
    ]  # fmt: skip
    found = timed(cmd, REPO, env, work / f"{name}.log")
    if found["exit_code"] == 0:  # the query's own time, without the interpreter's start and imports
        found["daft_query_s"] = json.loads(record.read_text())["run_s"]
    shutil.rmtree(output, ignore_errors=True)
    return found


def timed(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> dict:
    """The whole process under the benchmarks' sampler (tools/benchmark/runner.py), and the load before it."""
    load = os.getloadavg()[0]
    outcome = run_monitored(cmd, env, log_path, RUN_TIMEOUT_S, cwd=cwd)
    return {
        "exit_code": outcome["exit_code"],
        "process_s": round(outcome["wall_s"], 2),
        "peak_memory_mb": round(outcome["peak_memory_mb"]),
        "load_avg_before": round(load, 1),
    }


def summary(runs: list[dict], images: int) -> dict:
    """Per engine: the median whole-process time and images/s, and the job's start-up and steady medians."""
    found = {}
    for engine in dict.fromkeys(run["engine"] for run in runs):
        ok = [run for run in runs if run["engine"] == engine and run["exit_code"] == 0]
        if not ok:
            found[engine] = {"runs": 0}
            continue
        process_s = statistics.median(run["process_s"] for run in ok)
        found[engine] = {"runs": len(ok), "process_s": round(process_s, 2), "images_per_s": round(images / process_s, 1)}
        for key in ("startup_s", "steady_images_per_s"):
            if key in ok[0]:
                found[engine][key] = round(statistics.median(run[key] for run in ok), 2)
    return found


def report_lines(path: Path) -> list[str]:
    """The whole-process section of `make report` (tools/benchmark/markdown.py), from `path` (reports/startup-ab.json)."""
    lines = ["## Whole process against the previous commit and Daft (make bench-startup)", ""]
    if not path.is_file():
        return [*lines, f"No `{path.name}` yet: run `make bench-startup` (docs/benchmark.md).", ""]
    report = json.loads(path.read_text())
    loads = [run["load_avg_before"] for run in report["runs"]]
    lines += [
        f"{report['images']:,} seeded JPEGs, {report['profile']}, {report['cores']} cores, measured on {report['cpu']} "
        f"({', '.join(report['cpu_isa']) or 'no AVX2/AVX-512/VNNI'}); the engines alternated, the order rotating each round, "
        f"load average {min(loads)}-{max(loads)} before the runs. Whole process: exec to exit (JVM, Python, every import). "
        f"Baseline: {report['baseline_commit'][:8]}; this tree: {report['git_commit'][:8]}.",
        "",
        "| engine | runs | whole process s (median) | images/s | job start-up s | job steady images/s |",
        "|---|---|---|---|---|---|",
    ]
    for engine, found in report["summary"].items():
        if not found["runs"]:
            lines.append(f"| {engine} | 0 (failed) | | | | |")
            continue
        lines.append(
            f"| {engine} | {found['runs']} | {found['process_s']:.1f} | {found['images_per_s']:.1f} "
            f"| {found.get('startup_s', '')} | {found.get('steady_images_per_s', '')} |"
        )
    mine = [run for run in report["runs"] if run["engine"] == THIS_TREE and run["exit_code"] == 0]
    if mine:
        median = sorted(mine, key=lambda run: run["process_s"])[len(mine) // 2]
        parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in median["startup_breakdown"].items() if v is not None)
        lines += ["", f"Start-up of this tree's median run, seconds: {parts}."]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--baseline", required=True, help="the commit to compare with (a git revision)")
    parser.add_argument("--profile", default="conf/08-warm-start.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--peer-site", type=Path, default=REPO / ".peer-site", help="where `make peer-tools` put Daft")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "startup-ab.json")
    args = parser.parse_args(argv)
    manifest = make_bench_dataset(args.data_dir / f"{args.images}-s{args.seed}", args.images, seed=args.seed)
    with_daft = (args.peer_site / "daft").is_dir()
    if not with_daft:
        print(f"[startup-ab] no Daft in {args.peer_site} (make peer-tools): comparing the job's trees only", flush=True)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="startup-ab-") as tmp:
        baseline, commit = baseline_tree(args.baseline, Path(tmp) / "baseline")
        work = Path(tmp) / "work"
        work.mkdir()
        engines = {
            f"baseline {commit[:8]}": lambda name: job_run(baseline, manifest, args.profile, args.cores, work, name),
            THIS_TREE: lambda name: job_run(REPO, manifest, args.profile, args.cores, work, name),
        }
        if with_daft:
            engines[DAFT] = lambda name: daft_run(manifest, args.profile, args.cores, args.peer_site, work, name)
        names = list(engines)
        runs: list[dict] = []
        for round_ in range(args.rounds):
            for engine in names[round_ % len(names) :] + names[: round_ % len(names)]:
                found = {"round": round_, "engine": engine, **engines[engine](f"{round_}-{len(runs)}")}
                runs.append(found)
                print(f"[startup-ab] {json.dumps(found)}", flush=True)
        result = {
            "cpu": machine["cpu_model"],
            "cpu_isa": machine["cpu_isa"],
            "cores": args.cores,
            "images": args.images,
            "profile": args.profile,
            "git_commit": git_commit(),
            "baseline_commit": commit,
            "summary": summary(runs, args.images),
            "runs": runs,
        }
    args.report.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[startup-ab] {json.dumps(result['summary'])}; {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
