"""Bench analysis: load a bench run's records, pick the baseline, best and reference, judge the targets,
build summary.json. Pure functions of the records; plots.py and markdown.py render what this computes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from jobs import metrics as M
from tools.benchmark import cost, findings
from tools.benchmark.records import (
    KIND_JOB,
    KIND_REFERENCE,
    KIND_SCALING,
    cores_of,
    ok_runs,
    read_records,
    same_ceiling,
)

REPO = Path(__file__).resolve().parents[2]


STEADY_TARGET = 0.9  # best steady images/s >= 90% of the single-process ceiling


REFERENCE_TARGET = 1.5  # best end-to-end images/s >= 1.5x the predict_batch_udf reference


MEMORY_TARGET_MB = 4096  # peak RSS of the whole local run < 4 GB


CHANGE_NOISE = 0.03  # |change| under 3% is reported as no clear change


STAGES = (M.READ_MANIFEST_S, M.FETCH_S, M.DECODE_S, M.INFER_S, M.SPARK_IO_S, M.WRITE_S, M.MODEL_LOAD_S)


PER_IMAGE_STAGES = (M.FETCH_S, M.DECODE_S, M.INFER_S, M.SPARK_IO_S)  # grow with the images


ONE_OFF_STAGES = (M.READ_MANIFEST_S, M.WRITE_S, M.MODEL_LOAD_S)  # once per run or per worker


# The stage table adds two that overlap the stages above (so the stacked plot leaves them out).
TABLE_STAGES = (*STAGES, "load_wait_s", "task_s")


def latest_bench(runs_dir: Path) -> Path:
    """The newest complete bench run (its bench.json has ended_at) that is not a labelled side bench (make bench-large)."""
    benches = sorted(
        p.parent
        for p in runs_dir.glob("*/bench.json")
        if (index := json.loads(p.read_text())).get("ended_at") and not index.get("label")
    )
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


def pick(bench: dict) -> dict:
    """baseline (first job profile), best (highest end-to-end images/s of the profiles that may ship:
    not an int8 iteration whose quality gates failed), reference."""
    jobs = ok_runs(bench["runs"], KIND_JOB)
    refs = ok_runs(bench["runs"], KIND_REFERENCE)
    return {
        "baseline": jobs[0] if jobs else None,
        "best": findings.best_run(bench["runs"], bench["index"]),
        "reference": refs[0] if refs else None,
    }


def ceiling_for(run: dict | None, ceilings: list[dict]) -> dict | None:
    """The ceiling measured with the same model artifact and the same number of cores as run."""
    if not ceilings:
        return None
    same = same_ceiling(run, ceilings) if run is not None else None
    return same or (ceilings[0] if len(ceilings) == 1 else None)


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


def build_summary(bench: dict, prices: cost.PriceTable) -> dict:
    """reports/latest/summary.json."""
    chosen = pick(bench)
    baseline, best = chosen["baseline"], chosen["best"]
    ceiling = ceiling_for(best, bench["ceilings"])
    profiles = {}
    for run in bench["runs"]:
        ok = run["status"] == "ok"
        comparable = ok and baseline and run["kind"] != KIND_SCALING  # a 1-core run is not an iteration: no speed-up, no cost
        profiles[run["name"]] = {
            "kind": run["kind"],
            "status": run["status"],
            "images_per_s": run["images_per_s"] if ok else None,
            "steady_images_per_s": run["steady_images_per_s"] if ok else None,
            "startup_s": run["startup_s"] if ok else None,
            "speedup_vs_baseline": run["images_per_s"] / baseline["images_per_s"] if comparable else None,
            "steady_speedup_vs_baseline": (run["steady_images_per_s"] / baseline["steady_images_per_s"] if comparable else None),
            "cost_per_million_usd": run_cost(run, prices) if run["kind"] != KIND_SCALING else None,
            "peak_memory_mb": run["peak_memory_mb"],
            "wall_s": run["wall_s"] if ok else None,
            "bench_wall_s": run["bench_wall_s"],
            "rows_in": run.get("rows_in"),
            "ok": run.get("ok"),
            "error": run.get("error"),
        }
    targets = evaluate_targets(bench)
    projection, serverless = [], []
    if best:
        per_core = cost.per_core_rate(best["steady_images_per_s"], cores_of(best))
        projection = cost.projections(prices, per_core, gpu_images_per_s=gpu_rate(bench["runs"]))
        serverless = cost.serverless_projections(prices, per_core, cluster_profiles_spark_conf())
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
        # The cluster profiles' executors as EMR Serverless workers, at the same per-core rate.
        "serverless_per_million": serverless,
        "int8": findings.int8_block(bench["index"].get("int8"), bench["runs"]),
        "scaling": findings.scaling_block(bench["runs"], bench["ceilings"]),
        "startup_breakdown": (best or {}).get("startup", {}).get("breakdown"),
        "timeline": findings.timeline_summary(best),
        "sizes": bench_sizes(bench),
    }


CLUSTER_PROFILES = ("emr", "gpu")  # conf/<name>.yaml: the profiles a cluster or Serverless runs


def cluster_profiles_spark_conf() -> dict[str, dict]:
    """Each cluster profile's resolved spark.conf (its executor size is the Serverless worker's)."""
    from jobs.config import resolve

    return {name: resolve(REPO / "conf" / f"{name}.yaml")["spark"]["conf"] for name in CLUSTER_PROFILES}


def bench_sizes(bench: dict) -> list[dict]:
    """This bench's best run against its ceiling, and the newest bench of every other IMAGES beside it."""
    others = [load_bench(d) for images, d in findings.latest_by_size(bench["dir"].parent).items()
              if images != bench["index"]["images"]]  # fmt: skip
    rows = [findings.size_row(b["index"], b["runs"], b["ceilings"]) for b in (bench, *others)]
    return [row for row in rows if row]
