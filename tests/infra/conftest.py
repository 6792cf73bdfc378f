"""Fixtures of the infrastructure tests (Terraform + EMR against a local emulator)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.emulator import running_emulator
from tests.infra.infra_support import REGION


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "infra: Terraform apply/submit/destroy cycle against a local AWS emulator (needs terraform and a provider mirror)",
    )


@pytest.fixture(scope="session")
def emulator_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a patched moto server on 127.0.0.1, alive for the session."""
    log = tmp_path_factory.mktemp("emulator") / "moto.log"
    with running_emulator(log_path=log) as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(emulator_endpoint: str, tmp_path: Path) -> dict[str, str]:
    """Environment that sends every AWS SDK call (boto3, Terraform) to the emulator only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text("")
    env.update(
        AWS_ENDPOINT_URL=emulator_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="2",  # an action the emulator lacks fails fast instead of retrying for minutes
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
    )
    return env
