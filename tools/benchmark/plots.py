"""Bench plots: the PNGs of reports/latest/ (throughput, speed-up, stages, cost, progress, task timeline)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from tools.benchmark.analysis import STAGES, STEADY_TARGET, ceiling_for, pick
from tools.benchmark.records import KIND_REFERENCE


def save(fig, plt, path: Path) -> str:
    """Write one figure as a PNG and free it; returns its file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


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
    best_ceiling = ceiling_for(pick(bench)["best"], bench["ceilings"])  # the target's: same model, same cores
    for ceiling in bench["ceilings"]:
        c, model = ceiling["ceiling_images_per_s"], Path(ceiling["model_uri"].rstrip("/")).name
        colour = "tab:red" if ceiling is best_ceiling else "tab:purple"
        ax.axhline(c, color=colour, linestyle="--", label=f"single-process ceiling, {model}, {ceiling['cores']} core(s): {c:.1f}")
        if ceiling is best_ceiling:
            ax.axhline(STEADY_TARGET * c, color=colour, linestyle=":", label=f"{STEADY_TARGET:.0%} of it (target)")
    tops = [r["steady_images_per_s"] for r in runs] + [c["ceiling_images_per_s"] for c in bench["ceilings"]]
    ax.set_ylim(top=max(tops) * 1.45)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("images/s")
    ax.set_title(f"Throughput, Spark {bench['index']['master']}, {bench['index']['images']} images")
    ax.legend(fontsize=7, loc="upper left")
    files.append(save(fig, plt, out / "throughput.png"))

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
    files.append(save(fig, plt, out / "speedup.png"))

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
    files.append(save(fig, plt, out / "stages.png"))

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
        files.append(save(fig, plt, out / "cost.png"))
    files += plot_progress(runs, out, plt)
    files += plot_timeline(pick(bench)["best"], out, plt)
    return files


def progress_rates(points: list[dict]) -> list[tuple[float, float]]:
    """(t_s, images/s between a progress point and the one before it) of a run's time series."""
    return [
        (b["t_s"], (b["images_done"] - a["images_done"]) / (b["t_s"] - a["t_s"]))
        for a, b in pairwise(points)
        if b["t_s"] > a["t_s"]
    ]


def plot_progress(runs: list[dict], out: Path, plt) -> list[str]:
    """progress.png: images done and images/s over time from each run's progress lines (records without: left out)."""
    runs = [r for r in runs if len(r.get("progress") or []) >= 2]
    if not runs:
        return []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        points = run["progress"]
        ax1.plot([p["t_s"] for p in points], [p["images_done"] for p in points], marker=".", color=colour, label=run["name"])
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
    return [save(fig, plt, out / "progress.png")]


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
    return [save(fig, plt, out / "timeline.png")]
