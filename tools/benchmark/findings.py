"""What a bench run says beyond its table of runs: the int8 iteration, core scaling, start-up, sizes.

Pure functions over the records (reports/runs/<bench_id>/*.json and bench.json): each returns
the summary.json block and the report's Markdown lines for one finding, so they test without
running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.benchmark.records import KIND_CEILING, KIND_JOB, KIND_SCALING, cores_of, model_uri_of, ok_runs, same_ceiling

INT8_SPEEDUP_TARGET = 1.5  # iteration 07's steady images/s over 06's, same bench run
STARTUP_TARGET_S = 8.0  # JVM start to the first ready model
# The start-up segments jobs.driver.startup_breakdown records, in order, with what each covers.
STARTUP_SEGMENTS = {
    "driver_start_s": "spark-submit's JVM until the Python driver runs",
    "driver_setup_s": "profile read, models read (driver)",
    "session_s": "SparkSession and SparkContext",
    "manifest_and_plan_s": "manifest opened (the SQL engine's first use), output state, ledger, plan",
    "shuffle_and_schedule_s": "the dedup shuffle stage, tasks sent (without warm-up: Python workers forked, imports; with it: "
    "any wait for the warm-up's tasks to free the slots)",
    "model_load_s": "the first tagging task until its models are ready (built, or found built by the warm-up)",
}
# Part of one segment above.
INSIDE_SEGMENTS = {
    "manifest_read_s": "of manifest_and_plan: the manifest opened (small ones read on the driver with pyarrow, "
    "else Spark's reader and its first job)",
}
# Beside the sum: the Python workers' own start, which overlaps the segments above.
OVERLAPPING_SEGMENTS = {
    "warm_up_s": "warm-up job (spark.warm_up): workers forked, imports, models built, beside manifest_and_plan",
    "python_worker_start_s": "the slowest Python worker's start: fork and imports (with warm-up also its models)",
}


def _by_prefix(runs: list[dict], prefix: str) -> dict | None:
    return next((r for r in ok_runs(runs, KIND_JOB) if r["name"].startswith(prefix)), None)


# --- iteration 07: int8 ----------------------------------------------------------------------
def not_adopted(index: dict) -> set[str]:
    """Profiles that must not count as the best: an int8 iteration whose quality gates failed."""
    quality = index.get("int8")
    return {quality["profile"]} if quality and not quality["adopted"] else set()


def best_run(runs: list[dict], index: dict) -> dict | None:
    """The best profile: the highest end-to-end images/s of the job runs that may ship (not an int8
    iteration whose gates failed). The report, the 1-core scaling run and the sizes table all use it."""
    shippable = [r for r in ok_runs(runs, KIND_JOB) if r["name"] not in not_adopted(index)]
    return max(shippable, key=lambda r: r["images_per_s"], default=None)


def int8_block(quality: dict | None, runs: list[dict]) -> dict | None:
    """summary.json's `int8`: the gates as measured at build time plus the speed-up over 06 in this run."""
    if quality is None:
        return None
    measured = quality["measured"]
    int8_run, float_run = _by_prefix(runs, quality["profile"][:2]), _by_prefix(runs, "06")
    speedup = int8_run["steady_images_per_s"] / float_run["steady_images_per_s"] if int8_run and float_run else None
    return {
        "profile": quality["profile"],
        "model_version": quality["model_version"],
        "top1_agreement_confident": measured["top1_agreement_confident"],
        "top1_in_top5": measured["top1_in_top5"],
        "top1_agreement": measured["top1_agreement"],
        "real_photos_top1_kept": measured["real_photos_top1_kept"],
        "real_photos_kept": measured.get("real_photos_kept"),  # the gate: near-ties kept within int8's top-2
        "embedding_cosine_median": measured["embedding_cosine_median"],
        "embedding_cosine_p1": measured["embedding_cosine_p1"],
        "head_accuracy": quality.get("head_accuracy"),
        "gates": quality["gates"],
        "adopted": quality["adopted"],
        "steady_speedup_vs_06": speedup,
        "speedup_target": INT8_SPEEDUP_TARGET,
        "images": measured["images"],
    }


# --- scaling: 1 core against N -----------------------------------------------------------------
def scaling_block(runs: list[dict], ceilings: list[dict]) -> dict | None:
    """summary.json's `scaling`: the best profile's steady rate on 1 core and on N, and the ceilings."""
    one = next(iter(ok_runs(runs, KIND_SCALING)), None)
    if one is None:
        return None
    full = next((r for r in ok_runs(runs, KIND_JOB) if r["profile_path"] == one["profile_path"]), None)
    if full is None:
        return None
    cores = cores_of(full)
    rate_1, rate_n = one["steady_images_per_s"], full["steady_images_per_s"]
    uri = model_uri_of(one)
    ceiling = {c["cores"]: c["ceiling_images_per_s"] for c in ceilings if c["kind"] == KIND_CEILING and c["model_uri"] == uri}
    return {
        "profile": full["name"],
        "cores_1_steady_images_per_s": rate_1,
        f"cores_{cores}_steady_images_per_s": rate_n,
        "cores": cores,
        "speedup": rate_n / rate_1 if rate_1 else None,
        "linearity": rate_n / (cores * rate_1) if rate_1 else None,  # 1.0 = linear in cores
        "ceiling_1_core": ceiling.get(1),
        f"ceiling_{cores}_cores": ceiling.get(cores),
        "cores_1_vs_ceiling": rate_1 / ceiling[1] if ceiling.get(1) else None,
        "cores_1_images_per_s_end_to_end": one["images_per_s"],
    }


# --- task timeline -----------------------------------------------------------------------------
def timeline_summary(run: dict | None) -> dict | None:
    """The tail of a run: when tasks end against the last one, idle worker time after each worker's last task."""
    tasks = (run or {}).get("task_timeline") or []
    if not tasks:
        return None
    ready = min(t["ready"] for t in tasks)
    last_end = max(t["end"] for t in tasks)
    workers: dict[int, list[dict]] = {}
    for t in tasks:
        workers.setdefault(t["worker"], []).append(t)
    idle_tail = {w: last_end - max(t["end"] for t in ts) for w, ts in workers.items()}
    return {
        "tasks": len(tasks),
        "workers": len(workers),
        "steady_window_s": last_end - ready,
        "tail_idle_s_max": max(idle_tail.values()),
        "worker_ready_spread_s": max(min(t["ready"] for t in ts) for ts in workers.values()) - ready,
    }


# --- other bench sizes -------------------------------------------------------------------------
def latest_by_size(runs_dir: Path) -> dict[int, Path]:
    """The newest complete bench directory per IMAGES value."""
    found: dict[int, Path] = {}
    for bench_json in sorted(runs_dir.glob("*/bench.json")):
        index = json.loads(bench_json.read_text())
        if "ended_at" in index:
            found[int(index["images"])] = bench_json.parent
    return found


def short_commit(commit: str) -> str:
    """12 hex digits, keeping a "-dirty" mark (the run had uncommitted changes)."""
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def size_row(index: dict, runs: list[dict], ceilings: list[dict]) -> dict | None:
    """One bench size's best run (best_run), its ceiling share, end to end, start-up and commit."""
    best = best_run(runs, index)
    if best is None:
        return None
    ceiling = same_ceiling(best, ceilings)
    return {
        "images": index["images"],
        "bench_id": index["bench_id"],
        "git_commit": short_commit(index.get("git_commit", "")),
        "profile": best["name"],
        "steady_images_per_s": best["steady_images_per_s"],
        "images_per_s": best["images_per_s"],
        "startup_s": best["startup_s"],
        "ceiling_images_per_s": ceiling["ceiling_images_per_s"] if ceiling else None,
        "of_ceiling": best["steady_images_per_s"] / ceiling["ceiling_images_per_s"] if ceiling else None,
    }
