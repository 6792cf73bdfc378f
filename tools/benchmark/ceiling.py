"""The single-process ceiling: what this machine can do without Spark, with the job's own code.

Measured on the benchmark's files, each part in a fresh Python process pinned to the cores
the Spark runs get (TensorFlow fixes its thread pools once per process):

- decode: fetch + decode + preprocess (`jobs.fetch.fetch`, `jobs.decode.prepare_with`), one
  thread per process, C processes side by side, each pinned to its own core (as C Spark
  tasks run): images/s per core.
- infer: the model's predict (`model.runtime.build_predictor`) on already-prepared images, after
  one warm-up batch: one process with C threads (all the cores), and C one-thread processes
  side by side (per process).
- combined: the best of two ideal plans for C cores, no overheads at all:
    shared   decode spread over C cores, then inference on all C cores:
             1 / (1 / (C * decode_per_core) + 1 / infer_all_cores)
    per_core each core decodes and infers its own images with one inference thread:
             C / (1 / decode_per_core + 1 / infer_one_thread)
  `ceiling_images_per_s` is that best plan: an upper bound for the Spark job on C cores.
- pipeline: for reference, one real process doing both at once (C decode threads feeding
  inference on all cores); what a plain single-process script achieves.

    python -m tools.benchmark.ceiling --manifest data/bench/.../manifest.csv --profile conf/05-....yaml --out c.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jobs.config import Settings, load_settings
from jobs.decode import prepare_with
from jobs.fetch import fetch
from tools.benchmark.records import KIND_CEILING, RECORD_VERSION, write_record


def read_urls(manifest: Path) -> list[str]:
    with manifest.open(newline="") as f:
        return [row["url"] for row in csv.DictReader(f)]


def load_one(url: str, settings: Settings) -> np.ndarray:
    """The job's fetch + decode + preprocess of one image."""
    return prepare_with(fetch(url, settings.fetch).data, settings.decode)  # draft included, as the job decodes


def cpus_for(cores: int, offset: int = 0) -> set[int] | None:
    """`cores` of the CPUs this process may use, from the offset-th on (wrapping); None when that is all of them."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = {allowed[(offset + i) % len(allowed)] for i in range(cores)}
    return chosen if len(chosen) < len(allowed) else None


def pin_to_cores(cores: int, offset: int = 0) -> list[int]:
    """Restrict this process to `cores` of the CPUs it may use, from the offset-th on (wrapping)."""
    chosen = cpus_for(cores, offset)
    if chosen:
        os.sched_setaffinity(0, chosen)
    return sorted(chosen or os.sched_getaffinity(0))


def make_predictor(settings: Settings, threads: int):
    """(predict, model_load_s, artifact) with the job's own predictor for the profile's model."""
    from model.artifact import load_artifact
    from model.runtime import build_predictor

    started = time.perf_counter()
    artifact = load_artifact(settings.model.uri)
    predict = build_predictor(artifact, settings.inference.batch_size, threads)
    return predict, time.perf_counter() - started, artifact


def part_decode(urls: list[str], settings: Settings) -> dict:
    started = time.perf_counter()
    for url in urls:
        load_one(url, settings)
    seconds = time.perf_counter() - started
    return {"images": len(urls), "seconds": seconds, "images_per_s_per_core": len(urls) / seconds}


def part_infer(urls: list[str], settings: Settings, threads: int) -> dict:
    batch_size = settings.inference.batch_size
    predict, load_s, artifact = make_predictor(settings, threads)
    inputs = np.stack([load_one(url, settings) for url in urls])
    if len(inputs) >= batch_size:  # whole batches only: a padded last batch would understate the rate
        inputs = inputs[: len(inputs) // batch_size * batch_size]
    predict(inputs[:batch_size])  # warm-up: tracing / allocation, not throughput
    started = time.perf_counter()
    for start in range(0, len(inputs), batch_size):
        np.asarray(predict(inputs[start : start + batch_size]))
    seconds = time.perf_counter() - started
    return {
        "threads": threads,
        "images": len(inputs),
        "seconds": seconds,
        "images_per_s": len(inputs) / seconds,
        "model_load_s": load_s,
        "predictor": f"model.runtime.build_predictor ({artifact.meta['format']})",
        "model_name": artifact.name,
        "model_version": artifact.version,
    }


def part_pipeline(urls: list[str], settings: Settings, cores: int) -> dict:
    batch_size = settings.inference.batch_size
    predict, _, _ = make_predictor(settings, cores)
    predict(np.stack([load_one(u, settings) for u in urls[:batch_size]]))  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        batch = []
        for image in pool.map(lambda url: load_one(url, settings), urls):
            batch.append(image)
            if len(batch) == batch_size:
                np.asarray(predict(np.stack(batch)))
                batch = []
        if batch:
            np.asarray(predict(np.stack(batch)))
    seconds = time.perf_counter() - started
    return {"images": len(urls), "seconds": seconds, "images_per_s": len(urls) / seconds, "decode_threads": cores}


def combine(decode_per_core: float, infer_all: float, infer_one: float, cores: int) -> dict:
    """The two ideal plans and the better of them (see the module docstring)."""
    shared = 1.0 / (1.0 / (cores * decode_per_core) + 1.0 / infer_all)
    per_core = cores / (1.0 / decode_per_core + 1.0 / infer_one)
    plan = "shared" if shared >= per_core else "per_core"
    return {"shared_images_per_s": shared, "per_core_images_per_s": per_core, "plan": plan, "images_per_s": max(shared, per_core)}


def _part_command(part: str, args: argparse.Namespace, threads: int, cpu: int | None) -> list[str]:
    limit = args.infer_images if part == "infer" else args.pipeline_images if part == "pipeline" else 0
    return [
        sys.executable, "-m", "tools.benchmark.ceiling", "--part", part, "--manifest", str(args.manifest),
        "--profile", str(args.profile), "--cores", str(args.cores), "--threads", str(threads), "--limit", str(limit),
        *(["--cpu", str(cpu)] if cpu is not None else []),
        *[arg for text in args.overrides for arg in ("--set", text)],
    ]  # fmt: skip


def _run_parts(part: str, args: argparse.Namespace, threads: int, copies: int) -> list[dict]:
    """Run `copies` measurements at once, each in a fresh interpreter (pinned to its own core
    when copies > 1); each prints its result as JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    procs = [
        subprocess.Popen(
            _part_command(part, args, threads, i if copies > 1 else None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(copies)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ceiling part {part} failed ({proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def per_core_result(results: list[dict], key: str) -> dict:
    """C copies that ran side by side, one per core: the aggregate rate and the rate per core."""
    aggregate = sum(r[key] for r in results)
    return {**results[0], key: aggregate / len(results), "aggregate_images_per_s": aggregate, "processes": len(results)}


def measure(args: argparse.Namespace) -> dict:
    settings = load_settings(args.profile, args.overrides)
    started = time.perf_counter()
    # Decode and one-thread inference run as C processes side by side (one per core), as the
    # C Spark tasks do: what one core delivers while its neighbours are busy too.
    decode = per_core_result(_run_parts("decode", args, 1, args.cores), "images_per_s_per_core")
    infer_all = _run_parts("infer", args, args.cores, 1)[0]
    infer_one = per_core_result(_run_parts("infer", args, 1, args.cores), "images_per_s")
    pipeline = _run_parts("pipeline", args, args.cores, 1)[0] if args.pipeline_images else None
    combined = combine(decode["images_per_s_per_core"], infer_all["images_per_s"], infer_one["images_per_s"], args.cores)
    return {
        "record_version": RECORD_VERSION,
        "bench_id": args.bench_id,
        "kind": KIND_CEILING,
        "name": args.name or f"ceiling-{Path(settings.model.uri.rstrip('/')).name}",
        "model_uri": settings.model.uri,
        "model_name": infer_all["model_name"],
        "model_version": infer_all["model_version"],
        "predictor": infer_all["predictor"],
        "settings_from": str(args.profile),
        "batch_size": settings.inference.batch_size,
        "decode_settings": {
            "resize_shorter": settings.decode.resize_shorter,
            "image_size": settings.decode.image_size,
        },
        "cores": args.cores,
        "images": len(read_urls(args.manifest)),
        "manifest": str(args.manifest),
        "decode": decode,
        "infer": {"all_cores": infer_all, "one_thread": infer_one},
        "combined": combined,
        "pipeline": pipeline,
        "ceiling_images_per_s": combined["images_per_s"],
        "measure_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--profile", type=Path, required=True, help="model.uri, batch size and decode sizes come from it")
    parser.add_argument("--out", type=Path, help="write the ceiling record here (else print it)")
    parser.add_argument("--bench-id", default="adhoc")
    parser.add_argument("--name", help="record name (default: ceiling-<model directory>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="profile override (repeatable)")
    parser.add_argument("--cores", type=int, default=2, help="cores the Spark runs use (local[N])")
    parser.add_argument("--infer-images", type=int, default=512, help="distinct images for the inference timing")
    parser.add_argument("--pipeline-images", type=int, default=1000, help="0 skips the one-process pipeline")
    parser.add_argument("--part", choices=["decode", "infer", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        pin_to_cores(args.cores if args.cpu is None else 1, offset=args.cpu or 0)
        settings = load_settings(args.profile, args.overrides)
        urls = read_urls(args.manifest)
        urls = urls[: args.limit] if args.limit else urls
        if args.part == "decode":
            result = part_decode(urls, settings)
        elif args.part == "infer":
            result = part_infer(urls, settings, args.threads)
        else:
            result = part_pipeline(urls, settings, args.cores)
        print(json.dumps(result))
        return 0
    record = measure(args)
    if args.out:
        write_record(args.out, record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
