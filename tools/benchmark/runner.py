"""`make bench`: data set, single-process ceiling, one Spark run per profile, the reference.

    python -m tools.benchmark.runner --images 2000 [--profiles "conf/01-baseline.yaml ..."]

1. Builds (once, cached) the seeded benchmark images: data/bench/<images>-s<seed>/.
2. Measures the single-process ceiling (tools/benchmark/ceiling.py) for each model artifact
   the profiles use, with the settings of the last profile that uses it.
3. spark-submits the real job (jobs/tag_images.py) once per profile - conf/[0-9][0-9]-*.yaml
   sorted, or the ones given - on local[<cores>], then the predict_batch_udf reference with
   the first profile's settings. While each runs, the RSS of the whole process tree
   (spark-submit's JVM, the Python driver, the Python workers) is sampled every 0.2 s.
4. Writes reports/runs/<bench_id>/<name>.json: the job's own --metrics-out record plus
   what is measured from outside (peak memory, wall time around spark-submit, git commit,
   profile name), and bench.json describing the bench run (machine, load, data set).

Records of forked Python workers count shared pages once per process (RSS, not PSS): the
peak memory is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from jobs.config import load_settings
from jobs.spark_args import job_command
from tools.benchmark.ceiling import cpus_for
from tools.benchmark.dataset import dataset_stats, make_bench_dataset
from tools.benchmark.findings import best_run
from tools.benchmark.records import KIND_JOB, KIND_REFERENCE, KIND_SCALING, RECORD_VERSION, write_record
from tools.benchmark.reference_predict_batch import REFERENCE_NAME

REPO = Path(__file__).resolve().parents[2]
SPARK_SUBMIT = Path(sys.executable).absolute().parent / "spark-submit"  # the one beside this Python (.venv's pyspark)
PROFILE_GLOB = "[0-9][0-9]-*.yaml"
PSS_EVERY = 10
SAMPLE_EVERY_S = 0.2


def discover_profiles(conf_dir: Path, given: list[str] | None = None) -> list[Path]:
    """The profiles to run: the given ones (in order), else conf/NN-*.yaml sorted."""
    if given:
        paths = [Path(p) for text in given for p in text.split()]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"error: profile not found: {', '.join(missing)}")
        return paths
    paths = sorted(relative(p) for p in conf_dir.glob(PROFILE_GLOB))
    if not paths:
        raise SystemExit(f"error: no profiles match {conf_dir}/{PROFILE_GLOB}; give PROFILES='conf/a.yaml conf/b.yaml'")
    return paths


def relative(path: Path) -> Path:
    """path relative to the repository when it lies inside it (records stay readable)."""
    path = path.resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def profile_name(path: Path) -> str:
    return path.stem


def git_commit(repo: Path = REPO) -> str:
    """HEAD's commit, with '-dirty' when the working tree has changes (read-only git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.strip() + ("-dirty" if dirty.strip() else "")


def spark_env() -> dict:
    """The environment every spark-submit gets (same as the Makefile's run-local)."""
    python = str(Path(sys.executable).absolute())
    return {
        **os.environ,
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(REPO / "conf" / "spark"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def process_role(proc: psutil.Process) -> str:
    """jvm, python_worker (pyspark.daemon and its forks), python_driver or other (the launcher)."""
    try:
        name = proc.name()
        cmdline = proc.cmdline()
    except psutil.Error:
        return "other"
    if name == "java" or name.startswith("java"):
        return "jvm"
    if name.startswith("python"):
        return "python_worker" if any(arg.startswith("pyspark.") for arg in cmdline) else "python_driver"
    return "other"


class TreeMemory(threading.Thread):
    """Samples the memory of a process and all its descendants until stopped.

    peak_bytes: the highest summed RSS (what the target is checked on; counts pages shared
    between processes - TensorFlow's libraries in every worker - once per process, so it is
    an upper bound). peak_pss_bytes: the highest summed PSS (shared pages split between
    their users), closer to what the machine really had to provide.
    """

    def __init__(self, pid: int, every_s: float = SAMPLE_EVERY_S):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.samples = 0
        self.peak_processes = 0
        self.peak_breakdown: dict[str, float] = {}
        self._roles: dict[tuple, str] = {}
        self._stop_event = threading.Event()

    def sample(self) -> int:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = pss = 0
        by_role: dict[str, float] = {}
        # PSS reads /proc/PID/smaps, costly for a JVM: every PSS_EVERY-th sample only, so the
        # sampler itself does not steal a noticeable share of the two cores it measures.
        full = self.samples % PSS_EVERY == 0
        for proc in procs:
            try:
                info = proc.memory_full_info() if full else proc.memory_info()
            except psutil.AccessDenied:
                try:
                    info = proc.memory_info()
                except psutil.Error:
                    continue
            except psutil.Error:
                continue  # exited between listing and reading
            total += info.rss
            pss += getattr(info, "pss", info.rss)
            try:
                key = (proc.pid, proc.name())  # spark-submit's shell execs into java: same pid, new name
            except psutil.Error:
                continue
            if key not in self._roles:
                self._roles[key] = process_role(proc)
            role = self._roles[key]
            by_role[role] = by_role.get(role, 0.0) + info.rss / 2**20
            by_role[f"{role}_count"] = by_role.get(f"{role}_count", 0) + 1
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes, self.peak_breakdown = total, len(procs), by_role
        if full:
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        self.samples += 1
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_monitored(
    cmd: list[str], env: dict, log_path: Path, timeout_s: float, cpus: set[int] | None = None, cwd: Path = REPO
) -> dict:
    """Run cmd in `cwd` in its own process group, sampling tree memory; kill the group on timeout.

    cpus: pin the whole process tree to these CPUs (local[1] bounds Spark's task slots, not the
    threads of its JVM and Python workers: without a pin a "1-core" run still uses every core).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin
        )
        memory = TreeMemory(proc.pid)
        memory.start()
        timed_out = False
        try:
            exit_code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)  # the group this run started, nothing else
            try:
                exit_code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                exit_code = proc.wait()
        finally:
            memory.stop()
    return {
        "exit_code": exit_code,
        "timed_out": timed_out,
        "wall_s": time.perf_counter() - started,
        "peak_memory_mb": memory.peak_bytes / 2**20,
        "peak_pss_mb": memory.peak_pss_bytes / 2**20,
        "peak_breakdown_mb": memory.peak_breakdown,
        "peak_processes": memory.peak_processes,
        "memory_samples": memory.samples,
    }


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def last_error(path: Path) -> str:
    """The last 'SomethingError: message' line of a log, or ''."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    found = re.findall(r"^\s*(?:[\w.]+(?:Error|Exception)|error): .*$", text, flags=re.MULTILINE)
    return found[-1].strip()[:300] if found else ""


class Bench:
    """One `make bench`: shared paths and settings of every run in it."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.bench_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.runs_dir = args.runs_dir / self.bench_id
        self.commit = git_commit()
        self.master = f"local[{args.cores}]"
        # Progress every 2 s: runs of a minute or two give the report's images/s-over-time plot enough points.
        self.run_overrides = ["progress.interval_s=2", *args.overrides]  # every Spark run's, beside its master
        self.overrides = [f"spark.master={self.master}", *self.run_overrides]
        self.env = spark_env()
        self.spark_submit = str(SPARK_SUBMIT)

    def submit(self, name: str, kind: str, script: str, profile: Path, manifest: Path, cores: int | None = None) -> dict:
        cores = cores or self.args.cores
        overrides = [f"spark.master=local[{cores}]", *self.run_overrides]
        settings = load_settings(profile, overrides)
        output = self.args.out_dir / name
        metrics = self.args.out_dir / f"{name}.metrics.json"
        metrics.unlink(missing_ok=True)
        cmd = job_command(
            settings, manifest=manifest, output=output, overrides=overrides, spark_submit=self.spark_submit, script=script,
            extra=["--profile", str(profile), "--metrics-out", str(metrics)],
        )  # fmt: skip
        print(f"[bench] {name}: {shlex.join(cmd[1:])}", flush=True)
        load_before = os.getloadavg()
        log_path = self.args.out_dir / "logs" / f"{self.bench_id}-{name}.log"
        pinned = cpus_for(cores)
        outcome = run_monitored(cmd, self.env, log_path, self.args.timeout, cpus=pinned)
        record = {
            "record_version": RECORD_VERSION,
            "bench_id": self.bench_id,
            "name": name,
            "kind": kind,
            "profile_path": str(profile),
            "git_commit": self.commit,
            "peak_memory_mb": outcome["peak_memory_mb"],
            "peak_pss_mb": outcome["peak_pss_mb"],
            "peak_breakdown_mb": outcome["peak_breakdown_mb"],
            "peak_processes": outcome["peak_processes"],
            "memory_samples": outcome["memory_samples"],
            "bench_wall_s": outcome["wall_s"],
            "exit_code": outcome["exit_code"],
            "local_cores": cores,
            "pinned_cpus": sorted(pinned or []),  # [] = not pinned (every CPU)
            "master": f"local[{cores}]",
            "accelerator": os.environ.get("BENCH_ACCELERATOR", "cpu"),
            "load_avg_before": load_before[0],
            "command": cmd,
        }
        if outcome["exit_code"] == 0 and metrics.is_file():
            record = {**json.loads(metrics.read_text()), **record, "status": "ok"}
        else:
            why = "timed out" if outcome["timed_out"] else f"exit code {outcome['exit_code']}"
            if outcome["exit_code"] == 0:
                why = f"no metrics record at {metrics}"
            log = self.args.out_dir / "logs" / f"{self.bench_id}-{name}.log"
            error = last_error(log)
            record.update(status="failed", failure=f"{why}{': ' + error if error else ''}; log {log}\n{log_tail(log)}")
        write_record(self.runs_dir / f"{name}.json", record)
        print(f"[bench] {name}: {summary_line(record)}", flush=True)
        return record

    def ceiling(self, profile: Path, manifest: Path, cores: int | None = None) -> dict:
        cores = cores or self.args.cores
        settings = load_settings(profile, self.overrides)
        name = f"ceiling-{Path(settings.model.uri.rstrip('/')).name}" + (f"-{cores}core" if cores != self.args.cores else "")
        print(f"[bench] {name}: single-process ceiling with {profile}'s model and settings", flush=True)
        cmd = [
            sys.executable, "-m", "tools.benchmark.ceiling", "--manifest", str(manifest), "--profile", str(profile),
            "--out", str(self.runs_dir / f"{name}.json"), "--bench-id", self.bench_id, "--cores", str(cores),
            "--infer-images", str(min(self.args.images, 512)), "--pipeline-images", str(min(self.args.images, 1000)),
            "--name", name, *[arg for text in self.args.overrides for arg in ("--set", text)],
        ]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, env=self.env, check=True, stdout=subprocess.DEVNULL)
        record = json.loads((self.runs_dir / f"{name}.json").read_text())
        print(
            f"[bench] {name}: decode {record['decode']['images_per_s_per_core']:.1f}/s per core, "
            f"infer {record['infer']['all_cores']['images_per_s']:.1f}/s on {cores} core(s) "
            f"({record['infer']['one_thread']['images_per_s']:.1f}/s per one-thread process), "
            f"ceiling {record['ceiling_images_per_s']:.1f} images/s ({record['combined']['plan']})",
            flush=True,
        )
        return record


def int8_quality(profiles: list[Path], overrides: list[str]) -> dict | None:
    """The quality gates recorded in the model.json of the first profile whose backbone is int8."""
    for profile in profiles:
        meta_path = Path(load_settings(profile, overrides).model.uri) / "model.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if "quality" in meta:
                return {"profile": profile_name(profile), "model_version": meta["version"], **meta["quality"]}
    return None


def summary_line(record: dict) -> str:
    if record["status"] != "ok":
        return "FAILED " + record["failure"].splitlines()[0]
    return (
        f"{record['rows_in']} rows ({record['ok']} ok, {record['error']} error), {record['images_per_s']:.1f} images/s "
        f"end to end, {record['steady_images_per_s']:.1f} steady, start-up {record['startup_s']:.1f} s, "
        f"peak {record['peak_memory_mb']:.0f} MB"
    )


# The instruction sets that decide how fast the backbone runs, int8 above all: VNNI and AMX on
# x86 (c6i/c7i/m7i have AVX-512 VNNI, c7i/m7i AMX), dot-product and i8mm on arm64.
DECISIVE_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_facts(cpuinfo: str) -> tuple[str, list[str]]:
    """(CPU model, the DECISIVE_ISA it has) from /proc/cpuinfo's text (x86 `flags`, arm64 `Features`)."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [isa for isa in DECISIVE_ISA if isa in flags]


def machine_info() -> dict:
    try:
        model, isa = cpu_facts(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, isa = "", []
    return {
        "cpu_model": model,
        "cpu_isa": isa,
        "cpus": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--profiles", nargs="*", help="profile paths (default: conf/NN-*.yaml sorted)")
    parser.add_argument(
        "--reference-profile",
        type=Path,
        help="settings of the predict_batch_udf run (default: the baseline, the first conf/NN-*.yaml, whatever --profiles)",
    )
    parser.add_argument("--label", help="mark a side bench (e.g. large): make report then takes the newest unlabelled one")
    parser.add_argument("--no-scaling", action="store_true", help="skip the best profile's 1-core run and 1-core ceiling")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--cores", type=int, default=2, help="Spark runs use local[N]; the ceiling is pinned to N cores")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per Spark run")
    parser.add_argument("--conf-dir", type=Path, default=REPO / "conf")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "reports" / "runs")
    parser.add_argument("--out-dir", type=Path, default=REPO / "out" / "bench")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be >= 1")
    profiles = discover_profiles(args.conf_dir, args.profiles)
    # The reference runs the baseline's settings and model, whichever subset of profiles runs.
    reference_profile = args.reference_profile or discover_profiles(args.conf_dir)[0]
    bench = Bench(args)
    started = time.time()
    print(f"[bench] {bench.bench_id}: {args.images} images, profiles {', '.join(map(profile_name, profiles))}", flush=True)

    t0 = time.perf_counter()
    manifest = make_bench_dataset(args.data_dir / f"{args.images}-s{args.seed}", args.images, seed=args.seed)
    stats = dataset_stats(manifest)
    print(
        f"[bench] data set {manifest.parent} ({time.perf_counter() - t0:.0f} s): {stats['files']} JPEGs, "
        f"{stats['bytes_min'] // 1000}-{stats['bytes_max'] // 1000} KB, median {stats['bytes_median'] // 1000} KB",
        flush=True,
    )
    bench.runs_dir.mkdir(parents=True, exist_ok=True)
    index = {
        "bench_id": bench.bench_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "images": args.images,
        "seed": args.seed,
        "manifest": str(manifest),
        "dataset": stats,
        "profiles": [str(p) for p in profiles],
        "label": args.label,
        "reference_profile": None if args.no_reference else str(reference_profile),
        "int8": int8_quality(profiles, bench.overrides),
        "cores": args.cores,
        "master": bench.master,
        "overrides": bench.overrides,
        "git_commit": bench.commit,
        "machine": machine_info(),
        "load_avg_at_start": os.getloadavg(),
    }
    (bench.runs_dir / "bench.json").write_text(json.dumps(index, indent=2) + "\n")

    if not args.no_ceiling:
        by_model: dict[str, Path] = {}
        for profile in profiles:  # the last profile naming a model gives the ceiling's settings
            by_model[load_settings(profile, bench.overrides).model.uri] = profile
        for profile in by_model.values():
            bench.ceiling(profile, manifest)
    records = [bench.submit(profile_name(p), KIND_JOB, "jobs/tag_images.py", p, manifest) for p in profiles]
    best = best_run(records, index)
    if best and args.cores > 1 and not args.no_scaling:
        # The cost model multiplies a per-core rate by an instance's cores: measure 1 core against args.cores.
        best_profile = Path(best["profile_path"])
        bench.submit(f"{best['name']}-1core", KIND_SCALING, "jobs/tag_images.py", best_profile, manifest, cores=1)
        if not args.no_ceiling:
            bench.ceiling(best_profile, manifest, cores=1)
    if not args.no_reference:
        bench.submit(REFERENCE_NAME, KIND_REFERENCE, "tools/benchmark/reference_predict_batch.py", reference_profile, manifest)

    index.update(ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), bench_s=time.time() - started)
    (bench.runs_dir / "bench.json").write_text(json.dumps(index, indent=2) + "\n")
    from tools.benchmark.analysis import print_targets

    print_targets(bench.runs_dir)
    print(f"[bench] records in {bench.runs_dir}; `make report` writes reports/latest/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
