"""Fixtures of the infrastructure tests (Terraform + EMR against a local emulator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.scripts import rehearse_emr
from tests.infra.emulator import running_emulator


@pytest.fixture(scope="session")
def emulator_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a patched moto server on 127.0.0.1, alive for the session."""
    log = tmp_path_factory.mktemp("emulator") / "moto.log"
    with running_emulator(log_path=log) as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(emulator_endpoint: str, tmp_path: Path) -> dict[str, str]:
    """Environment that sends every AWS SDK call (boto3, Terraform) to the emulator only: the rehearsal's."""
    return rehearse_emr.aws_env(emulator_endpoint, tmp_path)
