"""What a bench run says beyond its table of runs: the int8 iteration, core scaling, start-up, sizes.

Pure functions over the records (reports/runs/<bench_id>/*.json and bench.json): each returns
the summary.json block and the report's Markdown lines for one finding, so they test without
running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.benchmark.records import KIND_CEILING, KIND_JOB, KIND_SCALING

INT8_SPEEDUP_TARGET = 1.5  # iteration 07's steady images/s over 06's, same bench run
STARTUP_TARGET_S = 8.0  # JVM start to the first ready model
# The start-up segments jobs.run.startup_breakdown records, in order, with what each covers.
STARTUP_SEGMENTS = {
    "driver_start_s": "spark-submit's JVM until the Python driver runs",
    "driver_setup_s": "profile read, models read (driver)",
    "session_s": "SparkSession and SparkContext",
    "manifest_and_plan_s": "manifest opened (the SQL engine's first use), output state, ledger, plan",
    "shuffle_and_schedule_s": "the dedup shuffle stage, tasks sent (and without warm-up: Python workers forked, imports)",
    "model_load_s": "the first tagging task until its models are ready (built, or found built by the warm-up)",
}
# Beside the sum: the Python workers' own start, which overlaps the segments above.
OVERLAPPING_SEGMENTS = {
    "warm_up_s": "warm-up job (spark.warm_up): workers forked, imports, models built, beside manifest_and_plan",
    "python_worker_start_s": "one Python worker: fork, imports (and with warm-up: its models)",
}


def _ok(runs: list[dict], kind: str) -> list[dict]:
    return [r for r in runs if r["kind"] == kind and r["status"] == "ok"]


def _by_prefix(runs: list[dict], prefix: str) -> dict | None:
    return next((r for r in _ok(runs, KIND_JOB) if r["name"].startswith(prefix)), None)


# --- iteration 07: int8 ----------------------------------------------------------------------
def not_adopted(index: dict) -> set[str]:
    """Profiles that must not count as the best: an int8 iteration whose quality gates failed."""
    quality = index.get("int8")
    return {quality["profile"]} if quality and not quality["adopted"] else set()


def int8_block(quality: dict | None, runs: list[dict]) -> dict | None:
    """summary.json's `int8`: the gates as measured at build time plus the speed-up over 06 in this run."""
    if quality is None:
        return None
    measured = quality["measured"]
    int8_run, float_run = _by_prefix(runs, quality["profile"][:2]), _by_prefix(runs, "06")
    speedup = (
        int8_run["steady_images_per_s"] / float_run["steady_images_per_s"] if int8_run and float_run else None
    )
    return {
        "profile": quality["profile"],
        "model_version": quality["model_version"],
        "top1_agreement_confident": measured["top1_agreement_confident"],
        "top1_in_top5": measured["top1_in_top5"],
        "top1_agreement": measured["top1_agreement"],
        "real_photos_top1_kept": measured["real_photos_top1_kept"],
        "embedding_cosine_median": measured["embedding_cosine_median"],
        "embedding_cosine_p1": measured["embedding_cosine_p1"],
        "head_accuracy": quality.get("head_accuracy"),
        "gates": quality["gates"],
        "adopted": quality["adopted"],
        "steady_speedup_vs_06": speedup,
        "speedup_target": INT8_SPEEDUP_TARGET,
        "images": measured["images"],
    }


def int8_lines(block: dict | None) -> list[str]:
    if block is None:
        return []
    lines = [
        f"## Iteration 07: int8 backbone ({block['profile']}, version {block['model_version']})",
        "",
        f"Quality gates against the float TFLite model on {block['images']} images (seeded product photos and views "
        "of real photos, plus the original real photos), measured when `make model` built the artifact "
        "(`reports/int8/quality.json`):",
        "",
        "| gate | measured | threshold | result |",
        "|---|---|---|---|",
    ]
    for gate in block["gates"]:
        below = gate["gate"] == "head_accuracy_drop"
        lines.append(
            f"| {gate['gate']} | {gate['value']:.4f} | {'<=' if below else '>='} {gate['threshold']:.2f} | "
            f"{'pass' if gate['passed'] else '**FAIL**'} |"
        )
    head = block.get("head_accuracy")
    lines += [
        "",
        f"Reported, not gated: top-1 agreement on every image {block['top1_agreement']:.1%}; embedding cosine 1st "
        f"percentile {block['embedding_cosine_p1']:.4f}"
        + (f"; category head accuracy {head['float']:.2%} on float embeddings, {head['int8']:.2%} on int8 "
           f"({head['items']} Fashion-MNIST test renders)" if head else "")
        + ".",
        "",
    ]  # fmt: skip
    speedup = block["steady_speedup_vs_06"]
    if speedup is not None:
        verdict = "meets" if speedup >= block["speedup_target"] else "misses"
        target = block["speedup_target"]
        lines.append(f"Steady images/s of 07 over 06 in this run: **{speedup:.2f}x** ({verdict} the {target}x target).")
    lines += [
        "",
        "**Adopted**: int8 passes every gate; `conf/emr.yaml` names it." if block["adopted"] else
        "**Not adopted**: a gate failed, so the float model stays the default (`conf/emr.yaml`); 07 shows what int8 would give.",
        "",
    ]  # fmt: skip
    return lines


# --- scaling: 1 core against N -----------------------------------------------------------------
def scaling_block(runs: list[dict], ceilings: list[dict]) -> dict | None:
    """summary.json's `scaling`: the best profile's steady rate on 1 core and on N, and the ceilings."""
    one = next(iter(_ok(runs, KIND_SCALING)), None)
    if one is None:
        return None
    full = next((r for r in _ok(runs, KIND_JOB) if r["profile_path"] == one["profile_path"]), None)
    if full is None:
        return None
    cores = int(full.get("local_cores") or 2)
    rate_1, rate_n = one["steady_images_per_s"], full["steady_images_per_s"]
    uri = (one.get("settings") or {}).get("model", {}).get("uri")
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


def scaling_lines(block: dict | None) -> list[str]:
    if block is None:
        return []
    n = block["cores"]
    c1, cn = block.get("ceiling_1_core"), block.get(f"ceiling_{n}_cores")
    return [
        f"## Scaling: 1 core against {n} ({block['profile']})",
        "",
        "| cores | steady images/s | per core | ceiling | of ceiling |",
        "|---|---|---|---|---|",
        f"| 1 | {block['cores_1_steady_images_per_s']:.1f} | {block['cores_1_steady_images_per_s']:.1f} | "
        f"{_num(c1)} | {_share(block['cores_1_steady_images_per_s'], c1)} |",
        f"| {n} | {block[f'cores_{n}_steady_images_per_s']:.1f} | {block[f'cores_{n}_steady_images_per_s'] / n:.1f} | "
        f"{_num(cn)} | {_share(block[f'cores_{n}_steady_images_per_s'], cn)} |",
        "",
        f"{n} cores give **{block['speedup']:.2f}x** the rate of 1: {block['linearity']:.0%} of linear. The cost "
        f"projection below uses the per-core rate measured with all {n} cores busy, so this shortfall is already in it; "
        f"beyond {n} cores (an instance's 16 vCPUs) linearity is assumed, not measured.",
        "",
    ]


# --- start-up ----------------------------------------------------------------------------------
def startup_lines(run: dict | None) -> list[str]:
    breakdown = ((run or {}).get("startup") or {}).get("breakdown")
    if not breakdown:
        return []
    total = run["startup_s"]
    verdict = "meets" if total <= STARTUP_TARGET_S else "misses"
    lines = [
        f"### Start-up of {run['name']}: {total:.1f} s to the first ready model ({verdict} the {STARTUP_TARGET_S:.0f} s target)",
        "",
        "| segment | seconds | what |",
        "|---|---|---|",
    ]
    for key, what in STARTUP_SEGMENTS.items():
        lines.append(f"| {key[:-2]} | {_num(breakdown.get(key), '.2f')} | {what} |")
    lines.append(
        f"| (then) first_batch | {_num(breakdown.get('first_batch_s'), '.2f')} | the first batch fetched, decoded, "
        "inferred (steady time) |"
    )
    for key, what in OVERLAPPING_SEGMENTS.items():
        if breakdown.get(key) is not None:
            lines.append(f"| (overlapping) {key[:-2]} | {breakdown[key]:.2f} | {what} |")
    lines.append("")
    return lines


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


def plot_timeline(run: dict | None, out: Path, plt) -> list[str]:
    """timeline.png: one row per Python worker, a bar per task (model ready -> end), labelled with its images."""
    tasks = (run or {}).get("task_timeline") or []
    if not tasks:
        return []
    workers = sorted({t["worker"] for t in tasks})
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * len(workers)))
    for row, worker in enumerate(workers):
        for t in (t for t in tasks if t["worker"] == worker):
            ax.barh(row, t["ready"] - t["start"], left=t["start"], color="tab:grey", height=0.6)
            ax.barh(row, t["end"] - t["ready"], left=t["ready"], color="tab:blue", height=0.6, edgecolor="white")
            ax.text((t["ready"] + t["end"]) / 2, row, str(t["images"]), ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(workers)), [f"worker {i + 1}" for i in range(len(workers))])
    ax.set_xlabel("seconds since the JVM started (grey: task start to model ready; blue: tagging; label: images)")
    ax.set_title(f"Task timeline of {run['name']}")
    ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=110)
    plt.close(fig)
    return ["timeline.png"]


# --- other bench sizes -------------------------------------------------------------------------
def latest_by_size(runs_dir: Path) -> dict[int, Path]:
    """The newest complete bench directory per IMAGES value."""
    found: dict[int, Path] = {}
    for bench_json in sorted(runs_dir.glob("*/bench.json")):
        index = json.loads(bench_json.read_text())
        if "ended_at" in index:
            found[int(index["images"])] = bench_json.parent
    return found


def size_row(index: dict, runs: list[dict], ceilings: list[dict]) -> dict | None:
    """One bench size's best run (steady), its ceiling share, end to end and start-up."""
    jobs = [r for r in _ok(runs, KIND_JOB) if r["name"] not in not_adopted(index)]
    if not jobs:
        return None
    best = max(jobs, key=lambda r: r["steady_images_per_s"])
    uri = (best.get("settings") or {}).get("model", {}).get("uri")
    cores = int(best.get("local_cores") or 2)
    ceiling = next((c for c in ceilings if c["model_uri"] == uri and c["cores"] == cores), None)
    return {
        "images": index["images"],
        "bench_id": index["bench_id"],
        "profile": best["name"],
        "steady_images_per_s": best["steady_images_per_s"],
        "images_per_s": best["images_per_s"],
        "startup_s": best["startup_s"],
        "ceiling_images_per_s": ceiling["ceiling_images_per_s"] if ceiling else None,
        "of_ceiling": best["steady_images_per_s"] / ceiling["ceiling_images_per_s"] if ceiling else None,
    }


def sizes_lines(rows: list[dict], target: float) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Bench sizes: the best steady run of the newest bench at each IMAGES",
        "",
        "| images | bench | best run | steady images/s | ceiling | of ceiling | end-to-end images/s | start-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["images"]):
        share = r["of_ceiling"]
        mark = "" if share is None else " (pass)" if share >= target else " (**below target**)"
        lines.append(
            f"| {r['images']} | {r['bench_id']} | {r['profile']} | {r['steady_images_per_s']:.1f} | "
            f"{_num(r['ceiling_images_per_s'])} | {_share(r['steady_images_per_s'], r['ceiling_images_per_s'])}{mark} | "
            f"{r['images_per_s']:.1f} | {r['startup_s']:.1f} |"
        )
    lines += ["", f"Target: steady >= {target:.0%} of the same run's ceiling for the same model and cores.", ""]
    return lines


def _num(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float, of: float | None) -> str:
    return "-" if not of else f"{value / of:.0%}"
