"""The nodes' Python environment (infra/scripts/node_env.py): which runtime a profile gets, for which
platform, and that the bootstrap action installs it from the uploaded wheelhouse with no index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.scripts import node_env
from jobs.config import resolve

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_profiles_get_the_runtime_of_their_model_formats() -> None:
    emr, gpu = resolve(REPO / "conf" / "emr.yaml"), resolve(REPO / "conf" / "gpu.yaml")
    emr_formats = node_env.model_formats(emr, REPO)
    assert set(emr_formats.values()) == {"tflite"}
    assert node_env.runtime_for(emr_formats.values(), gpu=node_env.wants_gpu(emr)) == "litert"
    assert node_env.wants_gpu(gpu)
    assert node_env.runtime_for(node_env.model_formats(gpu, REPO).values(), gpu=True) == "gpu"


def test_one_keras_model_brings_tensorflow() -> None:
    assert node_env.runtime_for(["tflite", "keras"]) == "keras"
    assert node_env.runtime_for(["tflite"], gpu=True) == "litert"  # LiteRT needs no CUDA build
    with pytest.raises(node_env.NodeEnvError, match="onnx"):
        node_env.runtime_for(["onnx"])


def test_a_missing_artifact_names_it(tmp_path: Path) -> None:
    resolved = {"model": {"uri": "model/artifacts/nowhere", "heads": []}}
    with pytest.raises(node_env.NodeEnvError, match="model/artifacts/nowhere"):
        node_env.model_formats(resolved, tmp_path)


def test_the_litert_requirements_hold_no_tensorflow_and_share_the_pins() -> None:
    litert = (REPO / node_env.REQUIREMENTS["litert"]).read_text()
    names = {line.strip() for line in litert.splitlines() if line.strip() and not line.startswith(("#", "-"))}
    assert names == {"ai-edge-litert", "numpy", "pandas", "pyarrow", "pillow", "boto3", "pyyaml"}
    assert "-c requirements.txt" in litert  # the versions: requirements.txt's pins, in one place
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    gpu = (REPO / node_env.REQUIREMENTS["gpu"]).read_text()
    assert f"tensorflow[and-cuda]=={pins['tensorflow-cpu']}" in gpu
    assert "tensorflow-cpu" in (REPO / node_env.REQUIREMENTS["keras"]).read_text()


def test_the_platform_tags_cover_every_glibc_up_to_the_nodes() -> None:
    tags = node_env.platforms()
    assert tags[0] == "manylinux_2_34_x86_64" and "manylinux_2_28_x86_64" in tags and tags[-1] == "manylinux2014_x86_64"
    assert node_env.platforms("aarch64")[0] == "manylinux_2_34_aarch64"


def test_the_wheelhouse_is_named_by_its_content(tmp_path: Path) -> None:
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"one")
    (tmp_path / "pip-26.3-py3-none-any.whl").write_bytes(b"pip")
    first = node_env.wheels_digest(tmp_path)
    assert node_env.pinned_wheels(tmp_path) == ["a==1.0"]  # the build tools are installed apart
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"changed")
    assert node_env.wheels_digest(tmp_path) != first
    assert node_env.inputs_digest("litert") != node_env.inputs_digest("keras")


FAKE_AWS = """#!/bin/bash
# `aws s3 cp [--recursive] s3://BUCKET/KEY DEST` served from $FAKE_S3/BUCKET/KEY; every call logged.
echo "$*" >> "$FAKE_S3/calls.log"
args=(); recursive=0
for a in "$@"; do case "$a" in s3|cp|--only-show-errors) ;; --recursive) recursive=1 ;; *) args+=("$a") ;; esac; done
src="$FAKE_S3/${args[0]#s3://}"
if [ $recursive = 1 ]; then mkdir -p "${args[1]}" && cp -r "${src%/}/." "${args[1]}/"; else cp "$src" "${args[1]}"; fi
"""


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="the bootstrap creates its venv with python3.11")
@pytest.mark.infra  # runs bootstrap.sh: a virtualenv and a pip install, like a node
def test_the_bootstrap_installs_only_from_the_uploaded_wheelhouse(tmp_path: Path) -> None:
    from infra.scripts import package

    s3 = tmp_path / "s3" / "artifacts"
    wheels = s3 / "code" / "wheelhouse-abc"
    wheels.mkdir(parents=True)
    # A small runtime: the build tools the project install needs and one wheel, with the manifest.
    download = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(wheels), "pyyaml==6.0.3"]
    if subprocess.run([*download, *node_env.BUILD_TOOLS], capture_output=True, check=False).returncode != 0:
        pytest.skip("pip download is not available here")
    (wheels / node_env.NODE_REQUIREMENTS).write_text("\n".join(node_env.pinned_wheels(wheels)) + "\n")
    (wheels / node_env.MANIFEST).write_text(json.dumps({"runtime": "litert"}))
    package.build(REPO, s3 / "code" / "code.tar.gz")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(FAKE_AWS)
    (bin_dir / "aws").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_S3": str(tmp_path / "s3"),
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's indexes or find-links
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # an index would fail: the install must not need one
    }
    install_dir = tmp_path / "opt"
    command = ["bash", str(REPO / "infra" / "scripts" / "bootstrap.sh"), "--code", "s3://artifacts/code/code.tar.gz"]
    command += ["--wheelhouse", "s3://artifacts/code/wheelhouse-abc/", "--install-dir", str(install_dir)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "installing the litert runtime from the wheelhouse" in proc.stdout
    python = install_dir / "venv" / "bin" / "python"
    check = "import importlib.util, yaml; print(yaml.__version__, importlib.util.find_spec('jobs.tag_images') is not None)"
    assert subprocess.run([python, "-c", check], capture_output=True, text=True, check=False).stdout.split() == ["6.0.3", "True"]
    assert not (install_dir / "wheelhouse").exists(), "the wheels are removed once installed"


def test_the_bootstrap_refuses_to_run_without_a_wheelhouse(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "infra" / "scripts" / "bootstrap.sh"), "--code", "s3://b/code.tar.gz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--wheelhouse" in proc.stderr
