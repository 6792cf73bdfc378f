"""Bench report text: reports/latest/README.md from the records and the summary (analysis.py)."""

from __future__ import annotations

from pathlib import Path

from tools.benchmark import cost, findings, scale, similar, startup_ab
from tools.benchmark.analysis import (
    ONE_OFF_STAGES,
    PER_IMAGE_STAGES,
    REPO,
    STEADY_TARGET,
    TABLE_STAGES,
    ceiling_for,
    pct,
    per_image_ms,
    pick,
    profile_comment,
    verdict,
)
from tools.benchmark.findings import INSIDE_SEGMENTS, OVERLAPPING_SEGMENTS, STARTUP_SEGMENTS, STARTUP_TARGET_S
from tools.benchmark.records import KIND_JOB, KIND_REFERENCE, cores_of


def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def iteration_notes(runs: list[dict], not_adopted: set[str] = frozenset()) -> list[str]:
    """One paragraph per iteration: what it changed (its comment) and what that did, in numbers.

    Each is compared with the iteration before it, skipping one that was not adopted (the next one
    builds on the iteration before that)."""
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
        if run["name"] not in not_adopted:
            previous = run
    return notes


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
        f"({m['cpu_model']}{cpu_isa_text(m)}, {m['memory_gb']:.0f} GB). Load average at start: "
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
            f"Same files, same code (`jobs.decode.prepare_with`, `{c.get('predictor', 'model.runtime')}`), "
            f"model `{c['model_uri']}`, "
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
    for note in iteration_notes(bench["runs"], findings.not_adopted(index)):
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
        for key in TABLE_STAGES:
            lines.append(f"| {key[:-2]} | {_fmt(s.get(key), '.2f')} | {_fmt(per_image_ms(best, key), '.2f')} |")
        lines += [
            "",
            "fetch and decode are summed over the fetch threads and tasks (CPU-seconds-like); infer, spark_io and "
            "model_load are summed over tasks; read_manifest and write are the driver's; load_wait is the model idle "
            "waiting for a batch's images (inside the tasks' time), task the tagging UDF's whole time in its tasks.",
            "",
        ]
        lines += startup_lines(best)
    lines += int8_lines(summary["int8"])
    lines += scaling_lines(summary["scaling"])
    lines += sizes_lines(summary["sizes"], STEADY_TARGET)
    lines += plot_lines(plots)
    lines += cost_section(summary, prices, best, m)
    lines += similar.report_lines(prices, REPO / "reports" / "similar.json")
    lines += scale.report_lines(prices, REPO / "reports" / "scale.json")
    lines += startup_ab.report_lines(REPO / "reports" / "startup-ab.json")
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


def cpu_isa_text(machine: dict) -> str:
    """'; avx2, avx512_vnni, ...' for the header: the instruction sets int8 and float speed depend on."""
    isa = machine.get("cpu_isa")
    if isa is None:  # a bench recorded before the instruction sets were
        return "; instruction sets not recorded"
    return "; " + (", ".join(isa) if isa else "none of avx2/avx512f/VNNI/AMX/asimddp/i8mm")


def cost_section(summary: dict, prices: cost.PriceTable, best: dict | None, machine: dict | None = None) -> list[str]:
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
        + (
            f"measured here: {summary['scaling']['cores']} cores give {summary['scaling']['linearity']:.0%} of linear "
            "scaling from 1, already inside this per-core rate; linear from there to the instance's vCPUs is assumed, "
            if summary.get("scaling")
            else "assumes throughput linear in cores, "
        )
        + "and an EMR vCPU as fast as one here; "
        "YARN and OS overhead, S3 latency, EBS and data transfer not included). The 300-million-image run uses the "
        f"nodes needed to finish in 24 hours plus one on-demand {prices.master} master "
        f"(${master.on_demand_usd_h:.3f} + ${master.emr_usd_h:.3f} EMR per hour).",
        "",
        (f"**The CPU it was measured on:** {machine.get('cpu_model') or 'unknown'}{cpu_isa_text(machine)}. " if machine else "")
        + "The per-core rate is this CPU's, and another CPU can be far off: int8 most of all, which needs VNNI or AMX "
        "(c6i/c7i/m7i have AVX-512 VNNI, c7i/m7i also AMX; Graviton 3 has dot-product and i8mm). int8 measured 1.1x "
        "float per core on an AVX2-only EPYC and 2.2-2.5x on CPUs with VNNI, and Keras iteration 01 ran at half the "
        "speed on one 2-core machine that it did on another: read a projection to another CPU as within about 2x.",
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
    return lines + serverless_lines(summary.get("serverless_per_million") or [], prices)


def serverless_lines(rows: list[dict], prices: cost.PriceTable) -> list[str]:
    """EMR Serverless beside EC2: each cluster profile's executor as a worker, at the same per-core rate."""
    if not rows or prices.serverless is None:
        return []
    price = prices.serverless
    lines = [
        "### EMR Serverless",
        "",
        f"${price.vcpu_usd_h} per vCPU-hour and ${price.gb_usd_h} per GB-hour ({price.as_of}); no EMR uplift, no spot, "
        "billed per second while a worker runs. A worker is the profile's executor (cores, memory + overhead), tagging "
        "at the per-core rate above:",
        "",
        "| profile | worker vCPUs | worker GB | images/s per worker | $ per 1M images |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if not row["available"]:
            lines.append(f"| {row['profile']} | {row['vcpus']} | {row['memory_gb']:g} | n/a ({row['reason']}) | n/a |")
            continue
        lines.append(
            f"| {row['profile']} | {row['vcpus']} | {row['memory_gb']:g} | {row['images_per_s_per_worker']:.1f} | "
            f"{row['cost_per_million_usd']:.3f} |"
        )
    return [*lines, ""]


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
        "The 1-core run is pinned to one CPU (process tree), as its ceiling is; local[1] alone would only "
        "bound Spark's task slots. "
        f"{n} cores give **{block['speedup']:.2f}x** the rate of 1: {block['linearity']:.0%} of linear. The cost "
        f"projection below uses the per-core rate measured with all {n} cores busy, so this shortfall is already in it; "
        f"beyond {n} cores (up to an instance's vCPUs) linearity is assumed, not measured.",
        "",
    ]


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
    for label, segments in (("inside", INSIDE_SEGMENTS), ("overlapping", OVERLAPPING_SEGMENTS)):
        for key, what in segments.items():
            if breakdown.get(key) is not None:
                lines.append(f"| ({label}) {key[:-2]} | {breakdown[key]:.2f} | {what} |")
    lines.append("")
    return lines


def sizes_lines(rows: list[dict], target: float) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Bench sizes: the best steady run of the newest bench at each IMAGES",
        "",
        "| images | bench (commit) | best run | steady images/s | ceiling | of ceiling | end-to-end images/s | start-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["images"]):
        share = r["of_ceiling"]
        mark = "" if share is None else " (pass)" if share >= target else " (**below target**)"
        lines.append(
            f"| {r['images']} | {r['bench_id']} ({r.get('git_commit') or '?'}) | {r['profile']} | "
            f"{r['steady_images_per_s']:.1f} | "
            f"{_num(r['ceiling_images_per_s'])} | {_share(r['steady_images_per_s'], r['ceiling_images_per_s'])}{mark} | "
            f"{r['images_per_s']:.1f} | {r['startup_s']:.1f} |"
        )
    lines += ["", f"Target: steady >= {target:.0%} of the same run's ceiling for the same model and cores.", ""]
    return lines


def _num(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _share(value: float, of: float | None) -> str:
    return "-" if not of else f"{value / of:.0%}"
