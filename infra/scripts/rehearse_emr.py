"""Rehearse the EMR run on this machine: `make deploy-cluster` against the AWS emulator, a real
Spark standalone cluster set up node by node with our bootstrap action, the step `make submit`
adds, and two drills: a spot node lost mid-run, and a driver lost mid-run then re-submitted.

    python infra/scripts/rehearse_emr.py [--images 400] [--workdir DIR] [--keep]

What is real: Terraform and the AWS provider (against moto on 127.0.0.1); the bootstrap script
and its arguments as EMR holds them, run on every node (aws s3 cp from the emulator, a fresh
venv, pip --no-index from the wheelhouse `make deploy-cluster` uploaded to the emulated S3, as on a
cluster node: nothing leaves the machine); the pinned Spark's master and
two workers, each in its own JVM with one core; the spark-defaults and spark-env EMR was given,
with sizes scaled down to this machine; the step's spark-submit arguments as EMR holds them,
only `--master yarn` pointed at the standalone master; the models read from the emulated
artifacts bucket; the images fetched from the emulated data bucket.

A node is a mount namespace in which the install dir (/opt/image-tagger) is that node's own
directory, so each node bootstraps into "its" /opt/image-tagger as on EMR, and the paths that
spark-env and the step name are the EMR ones. That needs root (unshare + mount --bind).
Losing a spot node is SIGKILL of the worker's process group: worker JVM, executor JVM and its
Python workers. Prints one summary line; exits non-zero when a drill loses or duplicates a row.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.infra.emulator import free_port, running_emulator  # noqa: E402

REGION = "eu-west-1"
NAME = "rehearsal"
INSTALL_DIR = "/opt/image-tagger"  # infra/terraform's default install_dir: the paths EMR's spark-env and step name
AWS_CLI_VENV = REPO / ".venv-aws"
NODE_ENV = REPO / "dist" / "node-env"  # infra.mk's NODE_ENV: make install builds it, deploy-cluster uploads it
# The EMR profile's Spark settings sized for this machine: 1-core workers, a few GB of memory.
# Dynamic allocation needs YARN's external shuffle service, which a standalone cluster lacks.
SCALED_DOWN = {
    "spark.executor.cores": "1",
    "spark.executor.memory": "1g",
    "spark.executor.memoryOverhead": "512m",
    "spark.dynamicAllocation.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
}
WORKER_MEMORY = "2g"
SPOT_PARTITIONS = 4  # tasks of the spot drill's step: two per worker, long enough to be caught mid-task
DRIVER_CHUNKS = 4  # commit units of the driver drill's step
DRIVER_LEASE_TIMEOUT_S = 15  # the killed driver's lease: the re-submitted step takes it over after this


class RehearsalError(RuntimeError):
    """A prerequisite is missing or a drill failed; the message says which."""


@dataclass
class Node:
    """One EMR node: its own disk (install dir) and, once started, its process group."""

    name: str
    root: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def install_root(self) -> Path:
        return self.root / "opt-image-tagger"

    def argv(self, command: list[str]) -> list[str]:
        """command, run on this node: a mount namespace where INSTALL_DIR is the node's own directory."""
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            self.name,
            str(self.install_root),
            INSTALL_DIR,
            *command,
        ]

    def kill(self) -> None:
        """Lose the node: SIGKILL its whole process group, JVMs and Python workers alike."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def check_prerequisites() -> None:
    problems = []
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        problems.append("root and unshare (util-linux): each node is a mount namespace with its own " + INSTALL_DIR)
    if not (AWS_CLI_VENV / "bin" / "aws").exists():
        problems.append(f"the AWS CLI in {AWS_CLI_VENV} (the bootstrap runs aws s3 cp): run make install")
    if not (NODE_ENV / "node-env.json").exists():
        problems.append(f"the node environment {NODE_ENV} deploy-cluster uploads (built ahead, offline after): run make install")
    if problems:
        raise RehearsalError("rehearse-emr needs " + "; ".join(problems))


def aws_env(endpoint: str, scratch: Path) -> dict[str, str]:
    """Every AWS SDK call (boto3, awscli, Terraform) goes to the emulator, nowhere else (the infra tests use it too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_", "PIP_"))}
    (scratch / "terraformrc").write_text("")
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="2",  # an action the emulator lacks fails fast instead of retrying for minutes
        AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"),
        TF_CLI_CONFIG_FILE=str(scratch / "terraformrc"),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
        SPARK_LOCAL_IP="127.0.0.1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def make(target: str, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    cmd = ["make", "--no-print-directory", "-f", "infra/infra.mk", target, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RehearsalError(f"make {target} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def scale_down(spark_defaults: dict[str, str]) -> list[str]:
    """`--set` overrides fitting the cluster's executor sizes to 1-core workers on this machine.

    The job applies its profile's spark.conf when it builds its session, so a smaller size must
    reach it as an override of the profile, not only through spark-defaults.conf.
    """
    return [f"spark.conf.{key}={value}" for key, value in SCALED_DOWN.items() if key in spark_defaults]


def step_command(step_args: list[str], spark_home: Path, master_url: str) -> list[str]:
    """The EMR step's command-runner arguments, run by this Spark against the standalone master.

    Only the cluster manager changes: `--master yarn` becomes the standalone master's URL.
    """
    if step_args[0] != "spark-submit" or step_args[1:3] != ["--master", "yarn"]:
        raise RehearsalError(f"unexpected step arguments (expected spark-submit --master yarn ...): {step_args[:4]}")
    return [str(spark_home / "bin" / "spark-submit"), "--master", master_url, *step_args[3:]]


def write_spark_conf(conf_dir: Path, spark_defaults: dict[str, str], spark_env: dict[str, str]) -> None:
    """spark-defaults.conf and spark-env.sh as EMR writes them from the cluster's configurations."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in sorted(spark_defaults.items())))
    (conf_dir / "spark-env.sh").write_text("".join(f"export {k}={v}\n" for k, v in sorted(spark_env.items())))
    shutil.copy(REPO / "conf" / "spark" / "log4j2.properties", conf_dir / "log4j2.properties")


def wait_for(predicate, what: str, timeout_s: float, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise RehearsalError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


def active_tasks_on(node: Node, driver_ui_port: int) -> int:
    """Tasks the node's executor runs right now, from the driver's REST API.

    A standalone worker creates each executor's directory (spark-work/<app>/<executor id>) on its
    own disk, which says which executor ids are the node's.
    """
    ids = {path.name for path in (node.root / "spark-work").glob("app-*/*")}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{driver_ui_port}/api/v1/applications", timeout=2) as response:
            (app,) = json.load(response)
        url = f"http://127.0.0.1:{driver_ui_port}/api/v1/applications/{app['id']}/executors"
        with urllib.request.urlopen(url, timeout=2) as response:
            executors = json.load(response)
    except (OSError, ValueError):
        return 0  # the driver is not up yet
    return sum(executor["activeTasks"] for executor in executors if executor["id"] in ids)


def runs_python(node: Node) -> bool:
    """Whether the node runs pyspark Python workers: only the tagging stage (the pandas UDF) starts them."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(proc.info["pid"]) == node.process.pid and "pyspark.daemon" in " ".join(proc.info["cmdline"] or []):
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def node_install(bootstrap_log: Path) -> dict:
    """What the bootstrap says it installed: the runtime, seconds and venv size (its 'installed in' line)."""
    text = bootstrap_log.read_text(errors="replace")
    runtime = re.search(r"installing the (\w+) runtime from the wheelhouse", text)
    installed = re.search(r"installed in (\d+)s, (\S+) on disk", text)
    if not (runtime and installed):
        raise RehearsalError(f"{bootstrap_log}: no wheelhouse install logged:\n{text[-2000:]}")
    return {"runtime": runtime.group(1), "install_s": int(installed.group(1)), "venv_size": installed.group(2)}


def read_output(output: Path) -> list[dict]:
    import pyarrow.dataset as ds

    table = ds.dataset(str(output), format="parquet").to_table(columns=["image_id", "status", "run_id", "processed_at"])
    return table.to_pylist()


def summary_counts(stdout: str) -> dict[str, int]:
    """rows in / ok / error / skipped from the job's printed summary."""
    counts = {}
    for key in ("rows in", "ok", "error", "skipped"):
        match = re.search(rf"^{key}\s+(\d+)", stdout, re.MULTILINE)
        if not match:
            raise RehearsalError(f"the job's summary lacks '{key}':\n{stdout[-2000:]}")
        counts[key.replace(" ", "_")] = int(match.group(1))
    rate = re.search(r"([\d.]+) images/s end to end", stdout)
    counts["images_per_s"] = float(rate.group(1)) if rate else 0.0
    return counts


def check_exactly_once(output: Path, manifest_ids: set[str], counts: dict) -> int:
    rows = read_output(output)
    ids = [row["image_id"] for row in rows]
    duplicates = len(ids) - len(set(ids))
    if duplicates or set(ids) != manifest_ids:
        raise RehearsalError(
            f"{output}: {len(rows)} rows for {len(manifest_ids)} inputs, {duplicates} duplicated, "
            f"{len(manifest_ids - set(ids))} missing"
        )
    if counts["ok"] + counts["error"] + counts["skipped"] != counts["rows_in"] or counts["rows_in"] != len(manifest_ids):
        raise RehearsalError(f"accounting: {counts}")
    return duplicates


class Rehearsal:
    def __init__(self, work: Path, images: int):
        self.work, self.images = work, images
        self.spark_home = Path(__import__("pyspark").__file__).parent
        self.nodes = [Node(name, work / "nodes" / name) for name in ("master", "core-1", "core-2")]
        self.master_proc: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}
        self.scaled: list[str] = []
        self.steps: list[subprocess.Popen] = []  # every step started, killed with the cluster
        self.node_installs: dict[str, dict] = {}  # node -> runtime, install seconds, venv size (bootstrap.log)

    # -- deploy ---------------------------------------------------------------------------
    def deploy(self, env: dict[str, str]) -> dict:
        tf_dir = self.work / "terraform"
        tf_dir.mkdir(parents=True)
        for tf_file in (REPO / "infra" / "terraform").glob("*.tf"):
            shutil.copy(tf_file, tf_dir)
        self.make_vars = [
            f"TF_DIR={tf_dir}",
            f"TF_PLUGIN_DIR={os.environ.get('TF_PLUGIN_DIR', '/opt/tf-plugins')}",
            f"PY={sys.executable}",
            f"CODE_PACKAGE={self.work / 'dist' / 'code.tar.gz'}",
            f"REGION={REGION}",
            "PROFILE=emr",
            f"TF_ARGS=-var name={NAME}",
            "POLL=1",
            "FALLBACK_TIMEOUT=10",
        ]
        make("deploy-cluster", env, *self.make_vars, timeout=400)
        outputs = subprocess.run(
            ["terraform", f"-chdir={tf_dir}", "output", "-json"], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout
        return {name: item["value"] for name, item in json.loads(outputs).items()}

    # -- nodes ----------------------------------------------------------------------------
    def bootstrap(self, env: dict[str, str], emr, cluster_id: str) -> None:
        """Every node runs the bootstrap action EMR holds: script from S3, same arguments."""
        (action,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
        # No pip configuration of this machine (its indexes, find-links): only what the bootstrap fetched.
        node_env = {
            **env,
            "PATH": f"{AWS_CLI_VENV / 'bin'}:{env['PATH']}",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        Path(INSTALL_DIR).mkdir(parents=True, exist_ok=True)  # the mount point each node binds its own dir to
        script = 'aws s3 cp --only-show-errors "$0" /tmp/bootstrap-$$.sh && exec bash /tmp/bootstrap-$$.sh "$@"'

        def run(node: Node) -> None:
            node.install_root.mkdir(parents=True)
            with open(node.root / "bootstrap.log", "wb") as log:
                command = node.argv(["sh", "-c", script, action["ScriptPath"], *action["Args"]])
                code = subprocess.run(command, env=node_env, stdout=log, stderr=subprocess.STDOUT, timeout=600).returncode
            if code != 0:
                tail = (node.root / "bootstrap.log").read_text(errors="replace")[-3000:]
                raise RehearsalError(f"bootstrap on {node.name} exited {code}:\n{tail}")

        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(run, self.nodes))
        self.node_installs = {node.name: node_install(node.root / "bootstrap.log") for node in self.nodes}

    def start_cluster(self, env: dict[str, str], conf_dir: Path) -> str:
        port, ui_port = free_port(), free_port()
        spark_class = str(self.spark_home / "bin" / "spark-class")
        self.cluster_env = {**env, "SPARK_CONF_DIR": str(conf_dir), "SPARK_HOME": str(self.spark_home)}
        master = self.nodes[0]
        with open(master.root / "spark-master.log", "wb") as log:
            self.master_proc = subprocess.Popen(
                master.argv(
                    [
                        spark_class,
                        "org.apache.spark.deploy.master.Master",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--webui-port",
                        str(ui_port),
                    ]
                ),
                env=self.cluster_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.master_url, self.ui_port = f"spark://127.0.0.1:{port}", ui_port
        for node in self.nodes[1:]:
            self.start_worker(node)
        wait_for(lambda: alive_workers(ui_port) == 2, "2 workers registered with the master", 90)
        return self.master_url

    def start_worker(self, node: Node) -> None:
        spark_class = str(self.spark_home / "bin" / "spark-class")
        work_dir = node.root / "spark-work"
        work_dir.mkdir(exist_ok=True)
        with open(node.root / "spark-worker.log", "ab") as log:
            node.process = subprocess.Popen(
                node.argv(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        self.master_url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        WORKER_MEMORY,
                        "--work-dir",
                        str(work_dir),
                        "--webui-port",
                        "0",
                    ]
                ),
                env=self.cluster_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop_cluster(self) -> None:
        """Kill every step still running (a failed drill leaves one), the workers and the master."""
        for proc in self.steps:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        for node in self.nodes:
            node.kill()
        if self.master_proc and self.master_proc.poll() is None:
            os.killpg(self.master_proc.pid, signal.SIGKILL)
            self.master_proc.wait(30)

    # -- steps ----------------------------------------------------------------------------
    def submit(self, env: dict[str, str], emr, cluster_id: str, manifest: Path, output: Path, sets: list[str]) -> list[str]:
        """`make submit` adds the step to the (emulated) cluster; return its arguments as EMR holds them."""
        sets = [*sets, *self.scaled]
        make("submit", env, *self.make_vars, f"MANIFEST={manifest}", f"OUTPUT={output}", f"SET={' '.join(sets)}", "WAIT=0")
        steps = emr.list_steps(ClusterId=cluster_id)["Steps"]  # newest first
        return steps[0]["Config"]["Args"]

    def start_step(self, step_args: list[str], log_name: str) -> subprocess.Popen:
        """Run the step on the master node, as command-runner.jar would."""
        command = self.nodes[0].argv(step_command(step_args, self.spark_home, self.master_url))
        log = open(self.work / log_name, "wb")
        return subprocess.Popen(
            command, env=self.cluster_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.work
        )

    def finish_step(self, proc: subprocess.Popen, log_name: str, timeout_s: float = 400) -> str:
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RehearsalError(f"step still running after {timeout_s:.0f}s (log {self.work / log_name})") from None
        text = (self.work / log_name).read_text(errors="replace")
        if code != 0:
            raise RehearsalError(f"step exited {code}:\n{text[-4000:]}")
        return text


def write_manifest(work: Path, images: int, s3, bucket: str) -> tuple[Path, set[str]]:
    """Seeded product photos in the emulated data bucket, plus two bad rows; a local CSV manifest."""
    from tools.sample_data import make_dataset

    local = make_dataset(work / "images", images, seed=11)
    with local.open() as f:
        rows = [(r["image_id"], Path(r["url"].removeprefix("file://"))) for r in csv.DictReader(f)]

    def upload(row):
        s3.upload_file(str(row[1]), bucket, f"images/{row[1].name}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, rows))
    s3.put_object(Bucket=bucket, Key="images/notes.jpg", Body=b"not an image")
    lines = [(image_id, f"s3://{bucket}/images/{path.name}") for image_id, path in rows]
    lines += [("bad-missing", f"s3://{bucket}/images/missing.jpg"), ("bad-not-an-image", f"s3://{bucket}/images/notes.jpg")]
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "url"])
        writer.writerows(lines)
    return manifest, {image_id for image_id, _ in lines}


def spot_drill(rehearsal: Rehearsal, step_args: list[str], output: Path, manifest_ids: set[str], ui_port: int) -> dict:
    """Lose core-2 while its executor is tagging; the step must still finish with every row once."""
    victim = rehearsal.nodes[2]
    started = time.monotonic()
    proc = rehearsal.start_step(step_args, "step-spot.log")

    python_seen = []

    def tagging_on_victim() -> int:
        if proc.poll() is not None:
            raise RehearsalError("the step ended before core-2 tagged anything (too few images?)")
        # Tasks of earlier stages (manifest read, dedup) are short; a task that runs once the
        # node has Python workers (they stay, spark.python.worker.reuse) is a tagging task.
        if not python_seen and runs_python(victim):
            python_seen.append(True)
        return python_seen and active_tasks_on(victim, ui_port)

    in_flight = wait_for(tagging_on_victim, "core-2's executor to tag images", 240, poll_s=0.1)
    killed_at = time.monotonic() - started
    victim.kill()
    text = rehearsal.finish_step(proc, "step-spot.log")
    counts = summary_counts(text)
    check_exactly_once(output, manifest_ids, counts)
    return {
        "killed": victim.name,
        "killed_at_s": round(killed_at, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "tasks_in_flight": in_flight,
        **counts,
        "executor_lost_logged": bool(re.search(r"Lost executor \S+ on .*worker lost", text)),
    }


def driver_drill(rehearsal: Rehearsal, submit, output: Path, manifest_ids: set[str], chunks: int) -> dict:
    """Kill the driver after its first chunk commits; once its lease expired, the re-submitted step
    takes it over and resumes the run."""
    step_args = submit()
    started = time.monotonic()
    proc = rehearsal.start_step(step_args, "step-driver.log")

    def first_chunk_committed():
        states = list((output / "_image_tagger").glob("run-*.json"))
        if proc.poll() is not None:
            log = (rehearsal.work / "step-driver.log").read_text()
            raise RehearsalError(f"the step ended before it could be killed:\n{log[-3000:]}")
        if not states:
            return None
        try:
            state = json.loads(states[0].read_text())
        except json.JSONDecodeError:
            return None
        return state if state["status"] == "running" and state["done_chunks"] else None

    state = wait_for(first_chunk_committed, "the first chunk to commit", 300)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver JVM and its Python driver: the master node's step dies
    proc.wait(30)
    committed = {row["image_id"]: row["processed_at"] for row in read_output(output)}
    killed_at = time.monotonic() - started
    leases = sorted((output / "_image_tagger" / "lease").glob("*.json"))
    lease = json.loads(leases[-1].read_text())
    time.sleep(max(0.0, lease["heartbeat_at"] + lease["timeout_s"] - time.time()))  # a retry before that is refused
    resumed_args = submit()  # the user re-submits the same step
    if resumed_args != step_args:
        raise RehearsalError("the re-submitted step differs from the first")
    text = rehearsal.finish_step(rehearsal.start_step(resumed_args, "step-resume.log"), "step-resume.log")
    if "(resumed)" not in text or f"took over the lease of run {state['run_id']}" not in text:
        raise RehearsalError(f"the re-submitted step did not take the lease over and resume the run:\n{text[-3000:]}")
    counts = summary_counts(text)
    check_exactly_once(output, manifest_ids, counts)
    rows = read_output(output)
    if len({row["run_id"] for row in rows}) != 1:
        raise RehearsalError("the resumed run wrote under more than one run id")
    redone = [row for row in rows if committed.get(row["image_id"], row["processed_at"]) != row["processed_at"]]
    if redone:
        raise RehearsalError(f"the resumed run redid {len(redone)} rows committed before the kill")
    return {
        "killed_at_s": round(killed_at, 1),
        "chunks_done_at_kill": len(state["done_chunks"]),
        "chunks": chunks,
        "rows_committed_at_kill": len(committed),
        "wall_s": round(time.monotonic() - started, 1),
        **counts,
    }


def rehearse(work: Path, images: int) -> dict:
    import boto3

    check_prerequisites()
    rehearsal = Rehearsal(work, images)
    started = time.monotonic()
    with running_emulator(work / "moto.log") as endpoint:
        env = aws_env(endpoint, work)
        clock = time.monotonic()
        outputs = rehearsal.deploy(env)
        rehearsal.timings["deploy_s"] = round(time.monotonic() - clock, 1)
        cluster_id, data_bucket = outputs["cluster_id"], outputs["bucket_names"]["data"]
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        emr, s3 = (session.client(name, endpoint_url=endpoint) for name in ("emr", "s3"))

        clock = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            upload = pool.submit(write_manifest, work, images, s3, data_bucket)
            rehearsal.bootstrap(env, emr, cluster_id)
            manifest, manifest_ids = upload.result()
        rehearsal.timings["bootstrap_s"] = round(time.monotonic() - clock, 1)

        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        by_class = {c["Classification"]: c for c in cluster["Configurations"]}
        spark_defaults = by_class["spark-defaults"]["Properties"]
        rehearsal.scaled = scale_down(spark_defaults)
        spark_env = by_class["spark-env"]["Configurations"][0]["Properties"]
        write_spark_conf(work / "spark-conf", spark_defaults, spark_env)
        try:
            rehearsal.start_cluster(env, work / "spark-conf")
            spot_output, ui_port = work / "out-spot", free_port()
            # The driver's UI port is fixed so that the drill can see which tasks run where.
            sets = [f"spark.partitions={SPOT_PARTITIONS}", "output.chunks=1", f"spark.conf.spark.ui.port={ui_port}"]
            spot_args = rehearsal.submit(env, emr, cluster_id, manifest, spot_output, sets)
            spot = spot_drill(rehearsal, spot_args, spot_output, manifest_ids, ui_port)

            rehearsal.start_worker(rehearsal.nodes[2])  # EMR replaces the lost spot node
            wait_for(lambda: alive_workers(rehearsal.ui_port) == 2, "the replacement worker", 90)
            driver_output, chunks = work / "out-driver", DRIVER_CHUNKS

            def submit_driver_step():
                sets = ["spark.partitions=2", f"output.chunks={chunks}", f"output.lease_timeout_s={DRIVER_LEASE_TIMEOUT_S}"]
                return rehearsal.submit(env, emr, cluster_id, manifest, driver_output, sets)

            driver = driver_drill(rehearsal, submit_driver_step, driver_output, manifest_ids, chunks)
        finally:
            rehearsal.stop_cluster()
    import pyspark

    return {
        "spark": pyspark.__version__,
        "workers": 2,
        "cores_per_worker": 1,
        "images": len(manifest_ids),
        "spark_defaults": spark_defaults,
        "scaled_down": rehearsal.scaled,
        "step_args": spot_args,
        "spot": spot,
        "driver": driver,
        "node_installs": rehearsal.node_installs,
        "timings": {**rehearsal.timings, "total_s": round(time.monotonic() - started, 1)},
    }


def install_summary(installs: dict[str, dict]) -> str:
    """e.g. 'litert from the uploaded wheelhouse (--no-index), 14-16s, 480M each'."""
    runtimes = sorted({item["runtime"] for item in installs.values()})
    seconds = sorted(item["install_s"] for item in installs.values())
    sizes = sorted({item["venv_size"] for item in installs.values()})
    return f"{'/'.join(runtimes)} from the uploaded wheelhouse (--no-index), {seconds[0]}-{seconds[-1]}s, {'/'.join(sizes)} each"


def summary_line(record: dict) -> str:
    spot, driver = record["spot"], record["driver"]
    return (
        f"rehearse-emr: Spark {record['spark']}, 2 workers x 1 core, {record['images']} rows | "
        f"spot drill: killed {spot['killed']} at {spot['killed_at_s']}s with {spot['tasks_in_flight']} task(s) in flight "
        f"(~{record['images'] // SPOT_PARTITIONS} rows each), re-run on core-1; {spot['rows_in']} rows in = "
        f"{spot['ok']} ok + {spot['error']} error + {spot['skipped']} skipped, "
        f"0 duplicates, {spot['images_per_s']:.1f} images/s end to end | "
        f"driver drill: killed the driver at {driver['killed_at_s']}s after {driver['chunks_done_at_kill']}/{driver['chunks']} "
        f"chunks ({driver['rows_committed_at_kill']} rows committed); the re-submitted step resumed: {driver['rows_in']} rows, "
        f"0 duplicates, committed rows not redone | nodes: {install_summary(record['node_installs'])} | "
        f"total {record['timings']['total_s']}s: PASSED"
    )


@contextlib.contextmanager
def workdir(path: Path | None, keep: bool) -> Iterator[Path]:
    if path:
        path.mkdir(parents=True, exist_ok=False)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="rehearse-emr-"))
    try:
        yield tmp
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="product photos to tag (plus two bad rows)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (must not exist); default a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node installs, logs, outputs)")
    parser.add_argument("--record", type=Path, help="also write the rehearsal's record here (JSON)")
    args = parser.parse_args(argv)
    try:
        with workdir(args.workdir, args.keep) as work:
            record = rehearse(work, args.images)
            (work / "rehearsal.json").write_text(json.dumps(record, indent=2) + "\n")
            if args.record:
                args.record.write_text(json.dumps(record, indent=2) + "\n")
    except RehearsalError as exc:
        print(f"rehearse-emr: FAILED: {exc}", file=sys.stderr)
        return 1
    print(summary_line(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
