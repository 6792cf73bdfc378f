"""`make report`: reports/latest/ from the newest bench run's records.

    python -m tools.benchmark.report [--runs-dir reports/runs] [--bench-id ID] [--out reports/latest]

Writes README.md (tables, per-iteration notes with the numbers, targets, cost), PNG plots
(throughput, speed-up, stage breakdown, cost) and summary.json. Everything comes from the
run records; nothing is re-measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from itertools import pairwise
from pathlib import Path

import yaml

from tools.benchmark import cost, findings
from tools.benchmark.records import KIND_JOB, KIND_REFERENCE, read_records

REPO = Path(__file__).resolve().parents[2]
STEADY_TARGET = 0.9  # best steady images/s >= 90% of the single-process ceiling
REFERENCE_TARGET = 1.5  # best end-to-end images/s >= 1.5x the predict_batch_udf reference
MEMORY_TARGET_MB = 4096  # peak RSS of the whole local run < 4 GB
CHANGE_NOISE = 0.03  # |change| under 3% is reported as no clear change
STAGES = ("read_manifest_s", "fetch_s", "decode_s", "infer_s", "spark_io_s", "write_s", "model_load_s")
PER_IMAGE_STAGES = ("fetch_s", "decode_s", "infer_s", "spark_io_s")  # grow with the images
ONE_OFF_STAGES = ("read_manifest_s", "write_s", "model_load_s")  # once per run or per worker


# --- loading -----------------------------------------------------------------------------


def latest_bench(runs_dir: Path) -> Path:
    """The newest bench run that is not a labelled side bench (make bench-large)."""
    benches = sorted(p.parent for p in runs_dir.glob("*/bench.json") if not json.loads(p.read_text()).get("label"))
    if not benches:
        raise SystemExit(f"error: no bench runs under {runs_dir}: run `make bench` first")
    return benches[-1]


def load_bench(bench_dir: Path) -> dict:
    """bench.json plus its run and ceiling records."""
    index = json.loads((bench_dir / "bench.json").read_text())
    runs, ceilings = read_records(bench_dir)
    return {"index": index, "runs": runs, "ceilings": ceilings, "dir": bench_dir}


def profile_comment(path: str | None) -> str:
    """The comment block at the top of a profile YAML: what changed and why."""
    if not path:
        return ""
    file = Path(path) if Path(path).is_absolute() else REPO / path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError:
        return ""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines.append(line.lstrip("#").strip())
        elif line.strip():
            break
    return " ".join(x for x in lines if x)


# --- analysis ----------------------------------------------------------------------------


def ok_runs(runs: list[dict], kind: str) -> list[dict]:
    return [r for r in runs if r["kind"] == kind and r["status"] == "ok"]


def pick(bench: dict) -> dict:
    """baseline (first job profile), best (highest end-to-end images/s of the profiles that may ship:
    not an int8 iteration whose quality gates failed), reference."""
    jobs = ok_runs(bench["runs"], KIND_JOB)
    refs = ok_runs(bench["runs"], KIND_REFERENCE)
    shippable = [r for r in jobs if r["name"] not in findings.not_adopted(bench["index"])]
    return {
        "baseline": jobs[0] if jobs else None,
        "best": max(shippable, key=lambda r: r["images_per_s"]) if shippable else None,
        "reference": refs[0] if refs else None,
    }


def ceiling_for(run: dict | None, ceilings: list[dict]) -> dict | None:
    """The ceiling measured with the same model artifact and the same number of cores as run."""
    if not ceilings:
        return None
    if run is not None:
        uri = run.get("settings", {}).get("model", {}).get("uri")
        same = [c for c in ceilings if c["model_uri"] == uri and c["cores"] == cores_of(run)]
        if same:
            return same[0]
    return ceilings[0] if len(ceilings) == 1 else None


def cores_of(run: dict) -> int:
    return int(run.get("local_cores") or 2)


def run_cost(run: dict, prices: cost.PriceTable) -> float | None:
    """USD per million images on the summary instance type, from the run's steady per-core rate."""
    if run["status"] != "ok" or not run["steady_images_per_s"]:
        return None
    inst = prices.instances[prices.summary_instance]
    if inst.gpu:
        return None
    rate = cost.instance_rate(cost.per_core_rate(run["steady_images_per_s"], cores_of(run)), inst.vcpus)
    return cost.cost_per_million(inst.usd_h(prices.summary_market), inst.emr_usd_h, rate)


def gpu_rate(runs: list[dict]) -> float | None:
    gpu = [r for r in ok_runs(runs, KIND_JOB) if r.get("accelerator") == "gpu"]
    return max((r["steady_images_per_s"] for r in gpu), default=None)


def evaluate_targets(bench: dict) -> list[dict]:
    """The issue's targets, each with pass/fail and the numbers behind it."""
    chosen = pick(bench)
    best, ref = chosen["best"], chosen["reference"]
    ceiling = ceiling_for(best, bench["ceilings"])
    targets = []
    if best and ceiling:
        ratio = best["steady_images_per_s"] / ceiling["ceiling_images_per_s"]
        targets.append({
            "target": f"best steady images/s >= {STEADY_TARGET:.0%} of the single-process ceiling",
            "passed": ratio >= STEADY_TARGET,
            "detail": f"{best['name']}: {best['steady_images_per_s']:.1f} vs ceiling {ceiling['ceiling_images_per_s']:.1f} "
            f"= {ratio:.0%}",
        })  # fmt: skip
    else:
        targets.append({"target": "steady vs ceiling", "passed": False, "detail": "no best run or no ceiling record"})
    if best and ref:
        ratio = best["images_per_s"] / ref["images_per_s"]
        targets.append({
            "target": f"best end-to-end images/s >= {REFERENCE_TARGET}x the predict_batch_udf reference",
            "passed": ratio >= REFERENCE_TARGET,
            "detail": f"{best['name']}: {best['images_per_s']:.1f} vs {ref['images_per_s']:.1f} = {ratio:.2f}x",
        })  # fmt: skip
    else:
        targets.append({"target": "end-to-end vs reference", "passed": False, "detail": "no best run or no reference run"})
    if best:
        targets.append({
            "target": f"best profile's peak memory < {MEMORY_TARGET_MB / 1024:.0f} GB (whole process tree)",
            "passed": best["peak_memory_mb"] < MEMORY_TARGET_MB,
            "detail": f"{best['name']}: {best['peak_memory_mb']:.0f} MB RSS summed ({memory_breakdown(best)})",
        })  # fmt: skip
        s = best["startup"]
        targets.append({
            "target": "start-up measured (JVM, workers, model load)",
            "passed": best["startup_s"] is not None,
            "detail": f"{best['name']}: {best['startup_s']:.1f} s to the first ready model (driver up after "
            f"{s['jvm_to_driver_s']:.1f} s, session {s['session_s']:.1f} s, slowest model build {s['model_load_s_max']:.1f} s)",
        })  # fmt: skip
        targets.append({
            "target": f"start-up (JVM start to the first ready model) <= {findings.STARTUP_TARGET_S:.0f} s",
            "passed": best["startup_s"] <= findings.STARTUP_TARGET_S,
            "detail": f"{best['name']}: {best['startup_s']:.1f} s",
        })  # fmt: skip
    int8 = findings.int8_block(bench["index"].get("int8"), bench["runs"])
    if int8 and int8["steady_speedup_vs_06"] is not None:
        targets.append({
            "target": f"iteration 07 (int8) steady images/s >= {findings.INT8_SPEEDUP_TARGET}x iteration 06",
            "passed": int8["steady_speedup_vs_06"] >= findings.INT8_SPEEDUP_TARGET,
            "detail": f"{int8['steady_speedup_vs_06']:.2f}x; "
            + ("gates all passed (adopted)" if int8["adopted"] else "a gate failed"),
        })  # fmt: skip
    failed = [r["name"] for r in bench["runs"] if r["status"] != "ok"]
    if failed:
        targets.append({"target": "every run succeeded", "passed": False, "detail": "failed: " + ", ".join(failed)})
    return targets


def print_targets(bench_dir: Path) -> bool:
    """Print the target check of one bench run; True when all hold."""
    targets = evaluate_targets(load_bench(bench_dir))
    for t in targets:
        print(f"[bench] target {'PASS' if t['passed'] else 'FAIL'}: {t['target']}: {t['detail']}", flush=True)
    return all(t["passed"] for t in targets)


def memory_breakdown(run: dict) -> str:
    """'JVM 900 MB, 2 Python workers 1800 MB, ...' at the moment of the peak; PSS when recorded."""
    parts = []
    b = run.get("peak_breakdown_mb") or {}
    for role, label in (("jvm", "JVM"), ("python_driver", "Python driver"), ("python_worker", "Python workers")):
        if role in b:
            count = int(b.get(f"{role}_count", 1))
            parts.append(f"{label}{f' x{count}' if count > 1 else ''} {b[role]:.0f} MB")
    if run.get("peak_pss_mb") is not None:
        parts.append(f"PSS {run['peak_pss_mb']:.0f} MB")
    return ", ".join(parts) or "no breakdown"


def pct(new: float, old: float) -> float:
    return (new / old - 1.0) if old else math.nan


def verdict(change: float) -> str:
    if math.isnan(change):
        return "n/a"
    if change > CHANGE_NOISE:
        return "helped"
    if change < -CHANGE_NOISE:
        return "made it slower"
    return "no clear change"


def per_image_ms(run: dict, key: str) -> float | None:
    value = run["stages"].get(key)
    rows = run.get("rows_in") or 0
    return None if value is None or not rows else value / rows * 1000.0


def iteration_notes(runs: list[dict]) -> list[str]:
    """One paragraph per iteration: what it changed (its comment) and what that did, in numbers."""
    notes, previous = [], None
    for run in runs:
        if run["kind"] != KIND_JOB:
            continue
        comment = profile_comment(run.get("profile_path"))
        head = f"**{run['name']}**" + (f" - {comment}" if comment else "")
        if run["status"] != "ok":
            notes.append(f"{head}\n\n  Failed: {run['failure'].splitlines()[0]}")
            continue
        if previous is None:
            notes.append(
                f"{head}\n\n  Baseline: {run['images_per_s']:.1f} images/s end to end, {run['steady_images_per_s']:.1f} steady, "
                f"start-up {run['startup_s']:.1f} s, peak {run['peak_memory_mb']:.0f} MB."
            )
            previous = run
            continue
        e2e, steady = (
            pct(run["images_per_s"], previous["images_per_s"]),
            pct(run["steady_images_per_s"], previous["steady_images_per_s"]),
        )
        moves = []
        for key in PER_IMAGE_STAGES:
            a, b = per_image_ms(previous, key), per_image_ms(run, key)
            if a is not None and b is not None and abs(b - a) >= 0.5:
                moves.append((abs(b - a), f"{key[:-2]} {a:.1f} -> {b:.1f} ms/image"))
        moves.sort(reverse=True)
        one_off = []
        for key in ONE_OFF_STAGES:
            a, b = previous["stages"].get(key), run["stages"].get(key)
            if a is not None and b is not None and abs(b - a) >= 0.5:
                one_off.append(f"{key[:-2]} {a:.1f} -> {b:.1f} s")
        stage_text = "; per image: " + ", ".join(m for _, m in moves[:3]) if moves else ""
        stage_text += "; one-off: " + ", ".join(one_off) if one_off else ""
        notes.append(
            f"{head}\n\n  Versus {previous['name']}: end to end {previous['images_per_s']:.1f} -> {run['images_per_s']:.1f} "
            f"images/s ({e2e:+.0%}, {verdict(e2e)}), steady {previous['steady_images_per_s']:.1f} -> "
            f"{run['steady_images_per_s']:.1f} ({steady:+.0%}, {verdict(steady)}), start-up {previous['startup_s']:.1f} -> "
            f"{run['startup_s']:.1f} s, peak memory {previous['peak_memory_mb']:.0f} -> {run['peak_memory_mb']:.0f} MB"
            f"{stage_text}."
        )
        previous = run
    return notes


def build_summary(bench: dict, prices: cost.PriceTable) -> dict:
    """reports/latest/summary.json."""
    chosen = pick(bench)
    baseline, best = chosen["baseline"], chosen["best"]
    ceiling = ceiling_for(best, bench["ceilings"])
    profiles = {}
    for run in bench["runs"]:
        ok = run["status"] == "ok"
        profiles[run["name"]] = {
            "kind": run["kind"],
            "status": run["status"],
            "images_per_s": run["images_per_s"] if ok else None,
            "steady_images_per_s": run["steady_images_per_s"] if ok else None,
            "startup_s": run["startup_s"] if ok else None,
            "speedup_vs_baseline": run["images_per_s"] / baseline["images_per_s"] if ok and baseline else None,
            "steady_speedup_vs_baseline": (
                run["steady_images_per_s"] / baseline["steady_images_per_s"] if ok and baseline else None
            ),
            "cost_per_million_usd": run_cost(run, prices),
            "peak_memory_mb": run["peak_memory_mb"],
            "wall_s": run["wall_s"] if ok else None,
            "bench_wall_s": run["bench_wall_s"],
            "rows_in": run.get("rows_in"),
            "ok": run.get("ok"),
            "error": run.get("error"),
        }
    targets = evaluate_targets(bench)
    projection = []
    if best:
        per_core = cost.per_core_rate(best["steady_images_per_s"], cores_of(best))
        projection = cost.projections(prices, per_core, gpu_images_per_s=gpu_rate(bench["runs"]))
    return {
        "bench_id": bench["index"]["bench_id"],
        "git_commit": bench["index"]["git_commit"],
        "images": bench["index"]["images"],
        "cores": bench["index"]["cores"],
        "ceiling_images_per_s": ceiling["ceiling_images_per_s"] if ceiling else None,
        "ceiling": {
            "decode_images_per_s_per_core": ceiling["decode"]["images_per_s_per_core"],
            "infer_images_per_s_all_cores": ceiling["infer"]["all_cores"]["images_per_s"],
            "infer_images_per_s_one_thread": ceiling["infer"]["one_thread"]["images_per_s"],
            "plan": ceiling["combined"]["plan"],
            "pipeline_images_per_s": (ceiling.get("pipeline") or {}).get("images_per_s"),
            "model_uri": ceiling["model_uri"],
        }
        if ceiling
        else None,
        "baseline_profile": baseline["name"] if baseline else None,
        "best_profile": best["name"] if best else None,
        "reference_profile": chosen["reference"]["name"] if chosen["reference"] else None,
        "profiles": profiles,
        "targets": targets,
        "targets_met": all(t["passed"] for t in targets),
        "cost_basis": {
            "cost_per_million_usd": f"{prices.summary_instance} {prices.summary_market.replace('_', '-')} + EMR uplift, "
            "steady per-core images/s of the run x the instance's vCPUs",
            "prices_as_of": prices.as_of,
            "prices_compiled_on": prices.compiled_on,
            "prices_verified": prices.verified,
            "region": prices.region,
        },
        "projection_300m_24h": projection,
        "int8": findings.int8_block(bench["index"].get("int8"), bench["runs"]),
        "scaling": findings.scaling_block(bench["runs"], bench["ceilings"]),
        "startup_breakdown": (best or {}).get("startup", {}).get("breakdown"),
        "timeline": findings.timeline_summary(best),
        "sizes": bench_sizes(bench),
    }


def bench_sizes(bench: dict) -> list[dict]:
    """This bench's best run against its ceiling, and the newest bench of every other IMAGES beside it."""
    others = [load_bench(d) for images, d in findings.latest_by_size(bench["dir"].parent).items()
              if images != bench["index"]["images"]]  # fmt: skip
    rows = [findings.size_row(b["index"], b["runs"], b["ceilings"]) for b in (bench, *others)]
    return [row for row in rows if row]


# --- rendering ---------------------------------------------------------------------------


def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def make_plots(bench: dict, summary: dict, out: Path) -> list[str]:
    """The PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in bench["runs"] if r["status"] == "ok"]
    names = [r["name"] for r in runs]
    files = []
    if not runs:
        return files
    x = range(len(runs))
    colours = ["tab:grey" if r["kind"] == KIND_REFERENCE else "tab:blue" for r in runs]

    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(runs)), 4.5))
    width = 0.4
    ax.bar(
        [i - width / 2 for i in x], [r["images_per_s"] for r in runs], width, label="end to end (incl. start-up)", color=colours
    )
    ax.bar([i + width / 2 for i in x], [r["steady_images_per_s"] for r in runs], width, label="steady", color="tab:orange")
    best_uri = (summary["ceiling"] or {}).get("model_uri")
    for ceiling in bench["ceilings"]:
        c, model = ceiling["ceiling_images_per_s"], Path(ceiling["model_uri"].rstrip("/")).name
        colour = "tab:red" if ceiling["model_uri"] == best_uri else "tab:purple"
        ax.axhline(c, color=colour, linestyle="--", label=f"single-process ceiling, {model}, {ceiling['cores']} core(s): {c:.1f}")
        if ceiling["model_uri"] == best_uri:
            ax.axhline(STEADY_TARGET * c, color=colour, linestyle=":", label=f"{STEADY_TARGET:.0%} of it (target)")
    tops = [r["steady_images_per_s"] for r in runs] + [c["ceiling_images_per_s"] for c in bench["ceilings"]]
    ax.set_ylim(top=max(tops) * 1.45)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("images/s")
    ax.set_title(f"Throughput, Spark {bench['index']['master']}, {bench['index']['images']} images")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    files.append("throughput.png")

    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(runs)), 4))
    speed = [summary["profiles"][n]["speedup_vs_baseline"] or 0 for n in names]
    steady = [summary["profiles"][n]["steady_speedup_vs_baseline"] or 0 for n in names]
    ax.bar([i - width / 2 for i in x], speed, width, label="end to end", color=colours)
    ax.bar([i + width / 2 for i in x], steady, width, label="steady", color="tab:orange")
    ax.axhline(1.0, color="black", linewidth=0.8)
    for i, v in enumerate(speed):
        ax.text(i - width / 2, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylim(top=max([*speed, *steady, 1.0]) * 1.2)
    ax.set_ylabel(f"speed-up over {summary['baseline_profile']}")
    ax.set_title("Speed-up over the baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=110)
    plt.close(fig)
    files.append("speedup.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 2.4 * len(runs)), 4.8))
    bottom = [0.0] * len(runs)
    for key in STAGES:
        values = [r["stages"].get(key) or 0.0 for r in runs]
        ax1.bar(list(x), values, bottom=bottom, label=key[:-2])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax1.set_xticks(list(x), names, rotation=20, ha="right")
    ax1.set_ylabel("seconds (fetch/decode summed over threads, infer over tasks)", fontsize=8)
    ax1.set_title(f"Time per stage ({bench['index']['images']} images)")
    ax1.set_ylim(top=max(bottom) * 1.45 or 1)
    ax1.legend(fontsize=7, ncol=4, loc="upper center")
    startup = [r["startup_s"] for r in runs]
    steady_s = [r["steady_s"] for r in runs]
    tail = [max(0.0, r["wall_s"] - r["startup_s"] - r["steady_s"]) for r in runs]
    ax2.bar(list(x), startup, label="start-up (JVM -> first model ready)", color="tab:red")
    ax2.bar(list(x), steady_s, bottom=startup, label="steady tagging", color="tab:green")
    ax2.bar(
        list(x),
        tail,
        bottom=[a + b for a, b in zip(startup, steady_s, strict=True)],
        label="commit, count, stop",
        color="tab:grey",
    )
    ax2.set_xticks(list(x), names, rotation=20, ha="right")
    ax2.set_ylabel("seconds of wall time")
    ax2.set_title("Where the wall time goes")
    ax2.set_ylim(top=max(r["wall_s"] for r in runs) * 1.3)
    ax2.legend(fontsize=7, ncol=2, loc="upper center")
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=110)
    plt.close(fig)
    files.append("stages.png")

    rows = [p for p in summary["projection_300m_24h"] if p["available"]]
    if rows:
        instances = list(dict.fromkeys(p["instance"] for p in rows))
        fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(instances)), 4))
        for offset, market, colour in ((-width / 2, "on_demand", "tab:blue"), (width / 2, "spot", "tab:green")):
            values = [
                next((p["cost_per_million_usd"] for p in rows if p["instance"] == i and p["market"] == market), 0)
                for i in instances
            ]
            ax.bar([i + offset for i in range(len(instances))], values, width, label=market.replace("_", "-"), color=colour)
            for i, v in enumerate(values):
                ax.text(i + offset, v, f"${v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(instances)), instances)
        ax.set_ylabel("USD per 1M images (EC2 + EMR)")
        ax.set_title(f"Cost per million images, {summary['best_profile']}'s steady per-core rate")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "cost.png", dpi=110)
        plt.close(fig)
        files.append("cost.png")
    files += plot_progress(runs, out, plt)
    files += findings.plot_timeline(pick(bench)["best"], out, plt)
    return files


def progress_rates(points: list[dict]) -> list[tuple[float, float]]:
    """(t_s, images/s between a progress point and the one before it) of a run's time series."""
    return [(b["t_s"], (b["images_done"] - a["images_done"]) / (b["t_s"] - a["t_s"]))
            for a, b in pairwise(points) if b["t_s"] > a["t_s"]]


def plot_progress(runs: list[dict], out: Path, plt) -> list[str]:
    """progress.png: images done and images/s over time from each run's progress lines (records without: left out)."""
    runs = [r for r in runs if len(r.get("progress") or []) >= 2]
    if not runs:
        return []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        points = run["progress"]
        ax1.plot([p["t_s"] for p in points], [p["images_done"] for p in points], marker=".", color=colour,
                 label=run["name"])
        rates = progress_rates(points)
        ax2.step([t for t, _ in rates], [v for _, v in rates], where="pre", color=colour, label=run["name"])
        ready = (run.get("startup") or {}).get("first_model_ready_s")
        if ready is not None:  # start-up: JVM start to the first model ready
            for ax in (ax1, ax2):
                ax.axvline(ready, color=colour, linestyle=":", linewidth=1)
    ax1.set_ylabel("images done (finished tasks)")
    ax1.set_title("Images done; dotted: first model ready")
    ax2.set_ylabel("images/s between progress lines")
    ax2.set_title("Throughput over the run")
    for ax in (ax1, ax2):
        ax.set_xlabel("seconds since the JVM started")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "progress.png", dpi=110)
    plt.close(fig)
    return ["progress.png"]


def render_markdown(bench: dict, summary: dict, prices: cost.PriceTable, plots: list[str]) -> str:
    index = bench["index"]
    chosen = pick(bench)
    best, ref, baseline = chosen["best"], chosen["reference"], chosen["baseline"]
    ceiling = ceiling_for(best, bench["ceilings"])
    ds = index["dataset"]
    m = index["machine"]
    lines = [
        f"# Benchmark report: {index['bench_id']}",
        "",
        f"Commit `{index['git_commit']}`, {index['images']} images, Spark `{index['master']}` on {m['cpus']} CPUs "
        f"({m['cpu_model']}, {m['memory_gb']:.0f} GB). Load average at start: "
        f"{', '.join(f'{v:.2f}' for v in index['load_avg_at_start'])} (the machine may be shared: a high load "
        "means noisy numbers).",
        "",
        f"Data set: {ds['files']} seeded JPEGs (Fashion-MNIST product photos + real photos from scikit-image, "
        f"{ds['photo_share']:.0%} photos), 600-1000 px on the long side, {ds['bytes_min'] / 1000:.0f}-"
        f"{ds['bytes_max'] / 1000:.0f} KB (median {ds['bytes_median'] / 1000:.0f} KB), `{index['manifest']}`.",
        "",
        "## Targets",
        "",
        "| target | result | numbers |",
        "|---|---|---|",
    ]
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {'PASS' if t['passed'] else '**FAIL**'} | {t['detail']} |")
    lines += ["", "## Runs", ""]
    lines += [
        "| run | images/s end to end | steady images/s | speed-up | start-up s | model load s (max) | wall s | "
        "peak MB RSS (PSS) | ok / error / rows | $ per 1M | load avg before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in bench["runs"]:
        p = summary["profiles"][run["name"]]
        if run["status"] != "ok":
            lines.append(f"| {run['name']} | FAILED | | | | | | {run['peak_memory_mb']:.0f} | | | |")
            continue
        label = " (best)" if best and run["name"] == best["name"] else " (reference)" if run["kind"] == KIND_REFERENCE else ""
        label += " (gates failed: not adopted)" if run["name"] in findings.not_adopted(index) else ""
        lines.append(
            f"| {run['name']}{label} | {run['images_per_s']:.1f} | "
            f"{run['steady_images_per_s']:.1f} | {_fmt(p['speedup_vs_baseline'], '.2f')}x | {run['startup_s']:.1f} | "
            f"{_fmt(run['startup'].get('model_load_s_max'))} | {run['wall_s']:.1f} | {run['peak_memory_mb']:.0f} "
            f"({_fmt(run.get('peak_pss_mb'), '.0f')}) | "
            f"{run['ok']} / {run['error']} / {run['rows_in']} | {_fmt(p['cost_per_million_usd'], '.3f')} | "
            f"{_fmt(run.get('load_avg_before'), '.1f')} |"
        )
    lines += [
        "",
        "End to end = rows / (JVM start to the end of the driver); steady = images / (first model ready to the last "
        "task's end); start-up = JVM start to the first worker's model ready. Peak memory: summed RSS of spark-submit's "
        "JVM, the Python driver and every Python worker, sampled every 0.2 s (an upper bound: forked workers' shared "
        f"pages count once per process). $ per 1M: {summary['cost_basis']['cost_per_million_usd']}.",
        "",
    ]
    if ceiling:
        c = ceiling
        lines += [
            "## Single-process ceiling",
            "",
            f"Same files, same code (`jobs.decode.prepare`, `{c.get('predictor', 'jobs.infer')}`), model `{c['model_uri']}`, "
            f"batch {c['batch_size']}, pinned to {c['cores']} cores:",
            "",
            f"- fetch + decode + preprocess, one thread per core, {c['cores']} processes side by side: "
            f"**{c['decode']['images_per_s_per_core']:.1f} images/s per core**",
            f"- inference, one process with {c['cores']} threads: **{c['infer']['all_cores']['images_per_s']:.1f} images/s**; "
            f"{c['cores']} one-thread processes side by side: {c['infer']['one_thread']['images_per_s']:.1f} images/s each "
            f"({c['infer']['one_thread'].get('aggregate_images_per_s', c['infer']['one_thread']['images_per_s']):.1f} together)",
            f"- combined ceiling for {c['cores']} cores: **{c['ceiling_images_per_s']:.1f} images/s** (plan "
            f"`{c['combined']['plan']}`: shared {c['combined']['shared_images_per_s']:.1f}, per core "
            f"{c['combined']['per_core_images_per_s']:.1f}; ideal overlap, no overheads)",
        ]
        if c.get("pipeline"):
            lines.append(
                f"- for comparison, one real Python process decoding on {c['pipeline']['decode_threads']} threads while "
                f"inferring: {c['pipeline']['images_per_s']:.1f} images/s"
            )
        lines.append("")
    lines += ["## Iterations: what helped and what did not", ""]
    for note in iteration_notes(bench["runs"]):
        lines += [f"- {note}", ""]
    sweep = REPO / "reports" / "sweep.md"
    if sweep.is_file():  # `make sweep`: the measurement behind 03's Spark parameters
        lines += [sweep.read_text().strip(), ""]
    if ref and baseline:
        lines += [
            f"- **{ref['name']}** - Spark's own `predict_batch_udf` written the straightforward way, with "
            f"{Path(ref.get('profile_path', '')).name}'s settings: {ref['images_per_s']:.1f} images/s end to end, "
            f"{ref['steady_images_per_s']:.1f} steady, start-up {ref['startup_s']:.1f} s, peak {ref['peak_memory_mb']:.0f} MB "
            f"(baseline: {baseline['images_per_s']:.1f}, best {best['name']}: {best['images_per_s']:.1f} = "
            f"{best['images_per_s'] / ref['images_per_s']:.2f}x the reference).",
            "",
        ]
    if best:
        s = best["stages"]
        lines += [
            f"### Stage breakdown of the best run ({best['name']})",
            "",
            "| stage | seconds | ms per image |",
            "|---|---|---|",
        ]
        for key in STAGES:
            lines.append(f"| {key[:-2]} | {_fmt(s.get(key), '.2f')} | {_fmt(per_image_ms(best, key), '.2f')} |")
        lines += [
            "",
            "fetch and decode are summed over the fetch threads and tasks (CPU-seconds-like); infer, spark_io and "
            "model_load are summed over tasks; read_manifest and write are the driver's.",
            "",
        ]
        lines += findings.startup_lines(best)
    lines += findings.int8_lines(summary["int8"])
    lines += findings.scaling_lines(summary["scaling"])
    lines += findings.sizes_lines(summary["sizes"], STEADY_TARGET)
    lines += plot_lines(plots)
    lines += cost_section(summary, prices, best)
    records = bench["dir"].relative_to(REPO) if bench["dir"].is_relative_to(REPO) else bench["dir"]
    lines += ["## Reproduce", "", f"`make bench IMAGES={index['images']} && make report`; records: `{records}`.", ""]
    return "\n".join(lines)


def plot_lines(plots: list[str]) -> list[str]:
    titles = {
        "throughput.png": "Images/s per run, with the single-process ceiling",
        "speedup.png": "Speed-up over the baseline",
        "stages.png": "Stage breakdown and wall time",
        "cost.png": "Cost per million images",
        "progress.png": "Images done and images/s over each run, from its progress lines",
        "timeline.png": "Per-task timeline of the best run (a tail shows as idle workers at the end)",
    }
    lines = ["## Plots", ""]
    for name in plots:
        lines += [f"![{titles.get(name, name)}]({name})", ""]
    return lines


def cost_section(summary: dict, prices: cost.PriceTable, best: dict | None) -> list[str]:
    if not best:
        return []
    per_core = cost.per_core_rate(best["steady_images_per_s"], cores_of(best))
    master = prices.instances[prices.master]
    lines = [
        "## Cost on EMR",
        "",
        f"Projection from the **steady per-core throughput measured here**: {best['name']} ran "
        f"{best['steady_images_per_s']:.1f} images/s steady on {cores_of(best)} cores = **{per_core:.2f} images/s per core**. "
        "One instance = that rate x its vCPUs ("
        + (f"measured here: {summary['scaling']['cores']} cores give {summary['scaling']['linearity']:.0%} of linear "
           "scaling from 1, already inside this per-core rate; linear from there to the instance's vCPUs is assumed, "
           if summary.get("scaling") else "assumes throughput linear in cores, ")
        + "and an EMR vCPU as fast as one here; "
        "YARN and OS overhead, S3 latency, EBS and data transfer not included). The 300-million-image run uses the "
        f"nodes needed to finish in 24 hours plus one on-demand {prices.master} master "
        f"(${master.on_demand_usd_h:.3f} + ${master.emr_usd_h:.3f} EMR per hour).",
        "",
        f"Prices: {prices.region}, {prices.currency}, as of {prices.as_of}, written {prices.compiled_on}"
        f"{'' if prices.verified else ', **not verified: re-check before quoting**'}; sources: "
        + "; ".join(prices.sources)
        + ". Table: `conf/prices.yaml`.",
        "",
        "| instance | vCPUs | market | EC2 $/h | EMR $/h | images/s per node | $ per 1M images | nodes for 300M in 24 h | "
        "run hours | total $ for 300M |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in summary["projection_300m_24h"]:
        inst = prices.instances[p["instance"]]
        if not p["available"]:
            lines.append(
                f"| {p['instance']} | {p['vcpus']} | {p['market'].replace('_', '-')} | {inst.usd_h(p['market']):.3f} | "
                f"{inst.emr_usd_h:.3f} | n/a ({p['reason']}) | n/a | n/a | n/a | n/a |"
            )
            continue
        lines.append(
            f"| {p['instance']}{' (arm64)' if p['arch'] == 'arm64' else ''} | {p['vcpus']} | {p['market'].replace('_', '-')} | "
            f"{inst.usd_h(p['market']):.3f} | {inst.emr_usd_h:.3f} | {p['images_per_s_per_node']:.1f} | "
            f"{p['cost_per_million_usd']:.3f} | {p['nodes']} | {p['run_hours']:.1f} | {p['total_usd']:,.0f} |"
        )
    notes = [f"- {name}: {inst.note}" for name, inst in prices.instances.items() if inst.note]
    lines += ["", *notes, ""] if notes else [""]
    return lines


def write_report(bench: dict, prices: cost.PriceTable, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    summary = build_summary(bench, prices)
    plots = make_plots(bench, summary, out)
    (out / "README.md").write_text(render_markdown(bench, summary, prices, plots), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "reports" / "runs")
    parser.add_argument("--bench-id", help="default: the newest bench run")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "latest")
    parser.add_argument("--prices", type=Path, default=REPO / "conf" / "prices.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target does not hold")
    args = parser.parse_args(argv)
    bench_dir = args.runs_dir / args.bench_id if args.bench_id else latest_bench(args.runs_dir)
    try:
        prices = cost.load_prices(args.prices)
    except (cost.PriceError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write_report(load_bench(bench_dir), prices, args.out)
    for t in summary["targets"]:
        print(f"target {'PASS' if t['passed'] else 'FAIL'}: {t['target']}: {t['detail']}")
    print(f"report: {args.out / 'README.md'} (from {bench_dir})")
    return 0 if summary["targets_met"] or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
