from pathlib import Path

import pytest

from jobs.config import DEFAULT_PROFILE, ConfigError, apply_override, load_settings, parse_override
from jobs.spark_args import spark_submit_args

REPO = Path(__file__).resolve().parent.parent


def test_default_profile_loads_with_its_values():
    settings = load_settings()
    assert DEFAULT_PROFILE == REPO / "conf" / "local.yaml"
    assert settings.spark.master == "local[*]"
    assert settings.spark.conf["spark.python.worker.reuse"] == "true"
    assert settings.inference.batch_size == 32
    assert settings.fetch.allowed_networks == []


PROFILES = sorted(p for p in (REPO / "conf").glob("*.yaml") if p.name != "prices.yaml")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_is_valid(profile):
    load_settings(profile)


def test_overrides_parse_values_as_yaml():
    settings = load_settings(
        overrides=[
            "fetch.threads=16",
            "fetch.read_timeout_s=2.5",
            "fetch.allowed_networks=[127.0.0.0/8, '::1/128']",
            "spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch=128",
            "spark.conf.spark.python.worker.reuse=false",
            "model.uri=s3://bucket/models/x",
        ]
    )
    assert settings.fetch.threads == 16
    assert settings.fetch.read_timeout_s == 2.5
    assert settings.fetch.allowed_networks == ["127.0.0.0/8", "::1/128"]
    # Spark property names contain dots: the rest of the path is one key; values become strings.
    assert settings.spark.conf["spark.sql.execution.arrow.maxRecordsPerBatch"] == "128"
    assert settings.spark.conf["spark.python.worker.reuse"] == "false"
    assert settings.model.uri == "s3://bucket/models/x"


def test_integer_accepted_where_float_expected():
    assert load_settings(overrides=["fetch.connect_timeout_s=3"]).fetch.connect_timeout_s == 3.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("fetch.thread=4", "unknown profile key fetch.thread"),
        ("nonsense.key=1", "unknown profile key nonsense"),
        ("fetch.threads=0", "fetch.threads=0: must be between 1 and 256"),
        ("fetch.threads=many", "fetch.threads: expected int, got str"),
        ("fetch.threads=true", "fetch.threads: expected a number"),
        ("decode.draft=maybe", "decode.draft: expected bool"),
        ("fetch.prefetch_batches=9", "fetch.prefetch_batches=9"),
        ("inference.batch_size=-1", "inference.batch_size=-1"),
        ("model.top_k=0", "model.top_k=0"),
        ("model=3", "model: expected a mapping"),
        ("decode.resize_shorter=100", "decode.resize_shorter=100 must be >= decode.image_size=224"),
        ("fetch.allowed_networks=[not-a-cidr]", "fetch.allowed_networks: 'not-a-cidr' is not a CIDR"),
        ("fetch.backoff_max_s=0.01", "fetch.backoff_max_s must be >= fetch.backoff_initial_s"),
        ("spark.conf.spark.foo=[1, 2]", "spark.conf.spark.foo: expected a scalar"),
        ("novalue", "expected dotted.key=value"),
    ],
)
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(overrides=[override])


def test_unreadable_or_invalid_profile(tmp_path):
    with pytest.raises(ConfigError, match="cannot read profile"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_apply_override_creates_nested_keys():
    data: dict = {}
    apply_override(data, *parse_override("spark.conf.spark.executor.memory=4g"))
    apply_override(data, *parse_override("fetch.threads=3"))
    assert data == {"spark": {"conf": {"spark.executor.memory": "4g"}}, "fetch": {"threads": 3}}


def test_spark_submit_args_come_from_the_profile():
    args = spark_submit_args(load_settings(overrides=["spark.master=local[2]"]))
    assert args[:4] == ["--master", "local[2]", "--name", "image-tagger"]
    assert "spark.python.worker.reuse=true" in args
    assert args.count("--conf") == len(load_settings().spark.conf)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "conf":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_conf_local_yaml_restates_no_default():
    """One source of defaults: jobs/config.py. The local profile sets only Spark's own settings."""
    import dataclasses

    import yaml

    from jobs.config import Settings

    assert set(_flatten(yaml.safe_load(DEFAULT_PROFILE.read_text()))) == {"spark.conf"}
    local = load_settings()
    assert local == dataclasses.replace(Settings(), spark=dataclasses.replace(Settings().spark, conf=local.spark.conf))


def test_readme_table_of_profile_keys_shows_the_real_defaults():
    import re

    import yaml

    from jobs.config import Settings

    defaults = _flatten(Settings().as_dict())
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| ((?:`[a-z_.]+`(?:, )?)+) \| ((?:`[^`]*`(?:, )?)+) \|", readme, re.MULTILINE)
    checked = set()
    for keys_cell, values_cell in rows:
        keys = re.findall(r"`([^`]+)`", keys_cell)
        if not all(k in defaults for k in keys):
            continue  # another table (arguments, columns)
        values = re.findall(r"`([^`]*)`", values_cell)
        for key, shown in zip(keys, values, strict=True):
            assert yaml.safe_load(shown) == defaults[key], f"README: {key} defaults to {shown}; jobs/config.py: {defaults[key]!r}"
            checked.add(key)
    assert checked == set(defaults), f"README's table lacks {sorted(set(defaults) - checked)}"
