"""Build the Python environment of the cluster nodes once, at deploy: a wheelhouse for their platform.

The profile's model formats pick the runtime (model.json "format" of every model the resolved
profile names): only "tflite" -> LiteRT, no TensorFlow (requirements-node-litert.txt); any "keras"
-> TensorFlow too (requirements-node-keras.txt), with CUDA when the profile asks executors for a
GPU (requirements-node-gpu.txt). The wheels are downloaded for the nodes' platform (Amazon Linux
2023: glibc 2.34, CPython 3.11), not this machine's, with the versions of requirements.lock.

The wheelhouse is content-addressed: ``node-env.json`` holds the runtime, the SHA-256 of the
wheels and the key prefix ``code/wheelhouse-<hash>/`` Terraform uploads it under; the bootstrap
action installs from that prefix with ``pip --no-index``, so no node reaches PyPI. A rebuild with
unchanged inputs (requirements, lock, runtime, platform) reuses the folder.

    python infra/scripts/node_env.py --resolved dist/profile-emr.json [--artifacts-root .] [--out dist/node-env]
    python infra/scripts/node_env.py --resolved dist/profile-emr.json --pack dist/node-env.tar.gz  # + packed venv

``--pack`` also writes a packed virtual environment (the layout venv-pack writes: bin/python ->
the nodes' python3.11, lib/python3.11/site-packages, and the job's code) for ``spark.archives``:
EMR Serverless has no bootstrap actions.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("node_env")

REPO = Path(__file__).resolve().parents[2]
LOCK = "requirements.lock"
REQUIREMENTS = {
    "litert": "requirements-node-litert.txt",
    "keras": "requirements-node-keras.txt",
    "gpu": "requirements-node-gpu.txt",
}
# What pip needs beside the runtime to install the project itself (setup.py) with --no-index.
BUILD_TOOLS = ("pip", "setuptools", "wheel")
# The nodes: Amazon Linux 2023 (EMR 7.x, EMR Serverless) has glibc 2.34 and python3.11. pip does not
# widen a manylinux --platform to older glibc versions itself, so every compatible tag is listed.
NODE_GLIBC_MINOR = 34
NODE_PYTHON = "3.11"
MANIFEST = "node-env.json"
NODE_REQUIREMENTS = "requirements-node.txt"


class NodeEnvError(RuntimeError):
    """The profile's models or the requirements do not give a node environment."""


def platforms(arch: str = "x86_64", glibc_minor: int = NODE_GLIBC_MINOR) -> list[str]:
    """Every manylinux tag a node with glibc 2.<glibc_minor> accepts, newest first."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def model_formats(resolved: Mapping[str, Any], artifacts_root: Path) -> dict[str, str]:
    """Model URI -> its artifact's format (model.json), for every model of the resolved profile."""
    model = resolved["model"]
    formats = {}
    for uri in dict.fromkeys([model["uri"], *(head["uri"] for head in model["heads"])]):
        manifest = (artifacts_root / uri / "model.json") if not uri.startswith("/") else Path(uri, "model.json")
        if not manifest.is_file():
            raise NodeEnvError(f"model {uri}: no {manifest} (make model builds the artifacts)")
        formats[uri] = json.loads(manifest.read_text(encoding="utf-8"))["format"]
    return formats


def wants_gpu(resolved: Mapping[str, Any]) -> bool:
    """Whether the profile gives executors a GPU (Spark's resource scheduling, as conf/gpu.yaml does)."""
    amount = resolved["spark"]["conf"].get("spark.executor.resource.gpu.amount", "0")
    return float(amount) > 0


def runtime_for(formats: Iterable[str], *, gpu: bool = False) -> str:
    """litert when every model is a tflite artifact; keras (or gpu) as soon as one needs TensorFlow."""
    formats = set(formats)
    unknown = formats - {"tflite", "keras"}
    if unknown:
        raise NodeEnvError(f"no node runtime for model format(s) {sorted(unknown)}")
    if "keras" not in formats:
        return "litert"
    return "gpu" if gpu else "keras"


def inputs_digest(runtime: str, root: Path = REPO, arch: str = "x86_64") -> str:
    """What decides the wheels: the requirement files this runtime reads, the lock, the platform."""
    digest = hashlib.sha256(f"{runtime} {arch} {NODE_PYTHON} 2.{NODE_GLIBC_MINOR}".encode())
    for name in sorted({REQUIREMENTS[runtime], REQUIREMENTS["litert"], "requirements.txt", LOCK}):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    return digest.hexdigest()


def wheels_digest(folder: Path) -> str:
    """SHA-256 over the wheels' names and bytes: the name of the environment in the bucket."""
    digest = hashlib.sha256()
    for wheel in sorted(folder.glob("*.whl")):
        digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()


def pinned_wheels(folder: Path, skip: Iterable[str] = BUILD_TOOLS) -> list[str]:
    """``name==version`` of every wheel in the folder (what a node installs), build tools left out."""
    skip = {name.replace("-", "_").lower() for name in skip}
    pins = []
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if name.lower() not in skip:
            pins.append(f"{name}=={version}")
    return pins


def pip_download(requirements: Path, dest: Path, *, root: Path = REPO, arch: str = "x86_64") -> None:
    """The requirements and their dependencies as wheels for the nodes' platform, lock versions only."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    for tag in platforms(arch):
        command += ["--platform", tag]
    command += ["--python-version", NODE_PYTHON, "--implementation", "cp", "--dest", str(dest)]
    command += ["-r", str(requirements), "-c", str(root / LOCK), *BUILD_TOOLS]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeEnvError(f"pip download of {requirements.name} failed:\n{proc.stderr[-3000:]}")


def build(resolved: Mapping[str, Any], artifacts_root: Path, out: Path, *, root: Path = REPO) -> dict[str, Any]:
    """The wheelhouse of the profile's runtime in ``out`` (reused when its inputs are unchanged); its manifest."""
    runtime = runtime_for(model_formats(resolved, artifacts_root).values(), gpu=wants_gpu(resolved))
    inputs = inputs_digest(runtime, root)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("inputs") == inputs:
            log.info("node environment %s (%s) is up to date in %s", manifest["hash"][:12], runtime, out)
            return manifest
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".node-env-", dir=out.parent))  # beside out: the rename below stays on one disk
    try:
        pip_download(root / REQUIREMENTS[runtime], staging, root=root)
        (staging / NODE_REQUIREMENTS).write_text("\n".join(pinned_wheels(staging)) + "\n")
        digest = wheels_digest(staging)
        manifest = {
            "runtime": runtime,
            "requirements": REQUIREMENTS[runtime],
            "hash": digest,
            "prefix": f"code/wheelhouse-{digest[:16]}",
            "python": NODE_PYTHON,
            "platform": platforms()[0],
            "bytes": sum(path.stat().st_size for path in staging.iterdir()),
            "inputs": inputs,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("node environment %s: %s, %d MB in %s", digest[:12], runtime, manifest["bytes"] // 2**20, out)
    return manifest


def _code_files(code_root: Path) -> list[tuple[str, Path]]:
    """(path in the archive, file) of the job's code and profiles: jobs/ and model/ (no artifacts) into
    site-packages, conf/ at the top."""
    site = f"lib/python{NODE_PYTHON}/site-packages"
    files = []
    for top, dest in (("jobs", f"{site}/jobs"), ("model", f"{site}/model"), ("conf", "conf")):
        for path in sorted((code_root / top).rglob("*")):
            rel = path.relative_to(code_root / top)
            if path.is_file() and "__pycache__" not in rel.parts and rel.parts[0] != "artifacts" and path.suffix != ".pyc":
                files.append((f"{dest}/{rel.as_posix()}", path))
    return files


def _pack_digest(wheelhouse: Path, code_root: Path) -> str:
    digest = hashlib.sha256(json.loads((wheelhouse / MANIFEST).read_text())["hash"].encode())
    for name, path in _code_files(code_root):
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def pack(wheelhouse: Path, code_root: Path, output: Path, *, python: str = f"/usr/bin/python{NODE_PYTHON}") -> Path:
    """A packed virtual environment for ``spark.archives`` (``#environment``), built from the wheelhouse.

    The layout venv-pack writes: ``bin/python`` a link to the nodes' interpreter, ``pyvenv.cfg``,
    the wheels installed (for the nodes' platform, so it needs no Amazon Linux machine) into
    ``lib/python3.11/site-packages`` with the job's ``jobs/`` and ``model/``, and ``conf/`` (the
    profiles) at the top. Reproducible (sorted, fixed times); rebuilt only when the wheels or the
    code changed (the digest beside it, ``<output>.json``).
    """
    digest = _pack_digest(wheelhouse, code_root)
    stamp = output.with_name(output.name + ".json")
    if output.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("inputs") == digest:
        log.info("packed environment %s is up to date", output)
        return output
    with tempfile.TemporaryDirectory(prefix="node-pack-") as tmp:
        site = Path(tmp) / "site-packages"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index"]
        command += ["--find-links", str(wheelhouse), "--only-binary=:all:", "--target", str(site)]
        for tag in platforms():
            command += ["--platform", tag]
        command += ["--python-version", NODE_PYTHON, "--implementation", "cp", "-r", str(wheelhouse / NODE_REQUIREMENTS)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NodeEnvError(f"installing {wheelhouse} into the packed environment failed:\n{proc.stderr[-3000:]}")
        members = [(f"lib/python{NODE_PYTHON}/site-packages/{p.relative_to(site).as_posix()}", p) for p in site.rglob("*")]
        members = sorted(m for m in members if m[1].is_file() and "__pycache__" not in m[1].parts) + _code_files(code_root)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".tmp")
        # gzip level 1: a third of the time of level 6 for a few percent more bytes on a 480 MB tree.
        with open(partial, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=1) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                cfg = f"home = {Path(python).parent}\ninclude-system-site-packages = false\nversion = {NODE_PYTHON}\n"
                _add_file(tar, "pyvenv.cfg", cfg.encode())
                for name in ("python", "python3", f"python{NODE_PYTHON}"):
                    link = tarfile.TarInfo(f"bin/{name}")
                    link.type, link.linkname, link.mode = tarfile.SYMTYPE, python, 0o777
                    tar.addfile(link)
                for name, path in members:
                    _add_file(tar, name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
        partial.replace(output)
    stamp.write_text(json.dumps({"inputs": digest, "bytes": output.stat().st_size}) + "\n")
    log.info("packed environment %s: %d MB", output, output.stat().st_size // 2**20)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolved", type=Path, required=True, help="the resolved profile (python -m jobs.config --resolve)")
    parser.add_argument("--artifacts-root", type=Path, default=REPO, help="what the profile's model URIs resolve against")
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "node-env", help="the wheelhouse folder")
    parser.add_argument("--pack", type=Path, help="also write the packed environment (spark.archives) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        resolved = json.loads(args.resolved.read_text(encoding="utf-8"))
        manifest = build(resolved, args.artifacts_root.resolve(), args.out.resolve())
        if args.pack:
            pack(args.out.resolve(), REPO, args.pack)
    except (NodeEnvError, OSError) as exc:
        log.error("%s", exc)
        return 1
    print(f"{manifest['runtime']} {manifest['prefix']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
