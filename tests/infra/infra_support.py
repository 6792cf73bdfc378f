"""Shared helpers of the infrastructure tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from infra.scripts.rehearse_emr import REGION  # noqa: F401  (the emulator's region, for the infra tests)

REPO = Path(__file__).resolve().parents[2]


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
    incremental: bool = True,
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
        *(["--incremental"] if incremental else []),
    ]
    for item in [*sets, *overrides]:
        args += ["--set", item]
    return args


def job_output_columns(profile_path: Path) -> list[tuple[str, str]]:
    """(name, Hive type) of every column, in order, that the job must write for this profile.

    From the profile's heads and model.embedding through jobs/schema.py, the one list of the output's
    columns: the test compares the Parquet files the real job wrote (run_job_locally) and the Glue
    table's columns with it.
    """
    from jobs.config import load_settings
    from jobs.schema import output_columns

    settings = load_settings(profile_path)
    return output_columns([head["name"] for head in settings.model.heads], settings.model.embedding)


def arrow_hive_type(data_type: Any) -> str:
    """The Hive type of a Parquet column as pyarrow reads it (list, map, struct, string, numbers, timestamp)."""
    import pyarrow as pa

    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"array<{arrow_hive_type(data_type.value_type)}>"
    if pa.types.is_map(data_type):
        return f"map<{arrow_hive_type(data_type.key_type)},{arrow_hive_type(data_type.item_type)}>"
    if pa.types.is_struct(data_type):
        return "struct<" + ",".join(f"{f.name}:{arrow_hive_type(f.type)}" for f in data_type) + ">"
    if pa.types.is_timestamp(data_type):
        return "timestamp"  # Spark writes INT96 or INT64 timestamps; both are Hive timestamp
    simple = {pa.string(): "string", pa.large_string(): "string", pa.float32(): "float", pa.float64(): "double"}
    simple |= {pa.int32(): "int", pa.int64(): "bigint", pa.bool_(): "boolean"}
    if data_type in simple:
        return simple[data_type]
    raise AssertionError(f"no Hive type for {data_type} in this helper: extend it")


def run_job_locally(profile_path: Path, photos: Sequence[Path], output: Path, timeout_s: float = 300) -> list[tuple[str, str]]:
    """Run jobs/tag_images.py with spark-submit (local[2]) on ``photos``; return the output's (name, Hive type).

    The profile's models, embedding and head settings stay as they are; only
    Spark's master, the partitioning and the model URIs (to the local
    artifact directories) are overridden, so the output has the profile's columns.
    """
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.config import load_settings
    from jobs.spark_args import job_command

    def local(uri: str) -> str:
        return uri if "://" in uri or uri.startswith("/") else str(REPO / uri)

    model = load_settings(profile_path).model
    heads = [{**head, "uri": local(head["uri"])} for head in model.heads]
    overrides = [
        "spark.master=local[2]",
        "spark.partitions=2",
        "output.chunks=1",
        f"model.uri={local(model.uri)}",
        f"model.heads={json.dumps(heads)}",
    ]
    manifest = output.parent / f"{output.name}-manifest.parquet"
    pq.write_table(pa.table({"image_id": [p.stem for p in photos], "url": [p.resolve().as_uri() for p in photos]}), manifest)
    settings = load_settings(profile_path, overrides)
    command = job_command(
        settings, manifest=manifest, output=output, overrides=overrides, extra=["--profile", str(profile_path)],
        spark_submit=Path(sys.executable).parent / "spark-submit",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    schema = pq.read_schema(next(iter(sorted(output.glob("*.parquet")))))
    rows = pq.read_table(output).num_rows
    assert rows == len(photos), f"{rows} rows for {len(photos)} photos"
    return [(f.name, arrow_hive_type(f.type)) for f in schema]
