"""Shared helpers of the infrastructure tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


def terraform_binary() -> str:
    """Terraform to use (env TERRAFORM or PATH); fails the test with a clear message when absent."""
    name = os.environ.get("TERRAFORM", "terraform")
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"terraform not found (TERRAFORM={name!r}): install Terraform >= 1.5 to run the infra tests",
            pytrace=False,
        )
    return found


def provider_mirror() -> Path:
    """Local provider mirror (env TF_PLUGIN_DIR, default /opt/tf-plugins); fails clearly when absent."""
    mirror = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
    if not (mirror / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.fail(
            f"no hashicorp/aws provider mirror at {mirror} (set TF_PLUGIN_DIR to a directory holding "
            "registry.terraform.io/hashicorp/aws/<version>/<os_arch>/): the infra tests run offline",
            pytrace=False,
        )
    return mirror


def expected_step_args(
    *,
    manifest: str,
    output: str,
    profile: str,
    backbone: str,
    heads: Sequence[tuple[str, str]] = (),
    overrides: Sequence[str] = (),
    install_dir: str = "/opt/image-tagger",
) -> list[str]:
    """The command-runner.jar arguments ``make submit`` must add: the one written-out expectation.

    ``backbone`` is the uploaded s3:// prefix of model.uri, ``heads`` the
    (name, uploaded prefix) of each model.heads entry; the unit and the
    emulator tests both compare against this.
    """
    sets = [f"model.uri={backbone}"]
    if heads:
        sets.append("model.heads=[" + ", ".join(f"{{name: {name}, uri: '{uri}'}}" for name, uri in heads) + "]")
    args = [
        "spark-submit",
        "--master",
        "yarn",
        "--deploy-mode",
        "client",
        f"{install_dir}/jobs/tag_images.py",
        "--manifest",
        manifest,
        "--output",
        output,
        "--profile",
        f"{install_dir}/conf/{profile}.yaml",
    ]
    for item in [*sets, *overrides]:
        args += ["--set", item]
    return args
