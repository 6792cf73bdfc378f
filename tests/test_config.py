import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.config import DEFAULT_PROFILE, ConfigError, Settings, apply_override, load_settings, parse_override
from jobs.config import main as config_main
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


# The job profiles. conf/0N-*.yaml are left out on purpose: each records a benchmark iteration and pins
# the knobs the iterations vary, even where a value equals today's default, so that the recorded
# measurement still describes the profile after a default moves.
JOB_PROFILES = [p for p in PROFILES if not re.match(r"\d\d-", p.name)]


@pytest.mark.parametrize("profile", JOB_PROFILES, ids=lambda p: p.name)
def test_profile_restates_no_default(profile):
    """One source of defaults: jobs/config.py. A profile names only what it changes."""
    defaults = _flatten(Settings().as_dict())
    written = _flatten(yaml.safe_load(profile.read_text()) or {})
    restated = sorted(key for key, value in written.items() if key in defaults and value == defaults[key])
    assert restated == [], f"{profile.name} restates the defaults of jobs/config.py for {restated}: drop them"


def test_conf_local_yaml_sets_only_spark_conf():
    """The local profile is the defaults on one machine: it sets only Spark's own settings."""
    assert set(_flatten(yaml.safe_load(DEFAULT_PROFILE.read_text()))) == {"spark.conf"}
    local = load_settings()
    assert local == dataclasses.replace(Settings(), spark=dataclasses.replace(Settings().spark, conf=local.spark.conf))


EMR = REPO / "conf" / "emr.yaml"


def test_resolve_prints_every_setting_with_the_defaults_filled_in(capsys):
    assert config_main(["--resolve", str(EMR)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    glue = {"profile", "output_columns", "similar_columns.neighbours", "similar_columns.duplicates"}
    assert set(_flatten(resolved)) == set(_flatten(Settings().as_dict())) | glue
    assert resolved["profile"] == "emr"
    assert resolved["spark"]["master"] == "yarn"  # the profile's own value
    # conf/emr.yaml names its backbone (int8) but no head, batch size or timeout: the defaults stand in.
    assert resolved["model"] == {**Settings().as_dict()["model"], "uri": "model/artifacts/efficientnet_lite0_int8"}
    assert resolved["fetch"]["connect_timeout_s"] == Settings().fetch.connect_timeout_s
    # What Terraform reads takes nothing from elsewhere: the settings are load_settings' own.
    settings = {k: v for k, v in resolved.items() if k not in ("profile", "output_columns", "similar_columns")}
    assert settings == load_settings(EMR).as_dict()


def test_resolve_applies_overrides_and_lists_the_columns_they_make(capsys):
    heads = "model.heads=[{name: style, uri: model/artifacts/style_tflite}, {name: colour, uri: c}]"
    assert config_main(["--resolve", str(EMR), "--set", "fetch.threads=3", "--set", heads, "--set", "model.embedding=false"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["fetch"]["threads"] == 3
    columns = {c["name"]: c["type"] for c in resolved["output_columns"]}
    assert columns["style"] == "string" and columns["colour_score"] == "float"
    assert "category" not in columns and "embedding" not in columns
    assert list(columns).index("style") < list(columns).index("colour")  # the heads' order


def test_resolve_exits_2_naming_the_bad_key(tmp_path, capsys):
    assert config_main(["--resolve", str(EMR), "--set", "fetch.threads=0"]) == 2
    assert "fetch.threads=0: must be between 1 and 256" in capsys.readouterr().err
    assert config_main(["--resolve", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("fetch: {thread: 4}\n")
    assert config_main(["--resolve", str(tmp_path / "typo.yaml")]) == 2
    assert "unknown profile key fetch.thread" in capsys.readouterr().err


def test_resolve_runs_as_a_module():
    """`python -m jobs.config --resolve`: how make deploy-cluster writes what Terraform reads."""
    ok = subprocess.run(
        [sys.executable, "-m", "jobs.config", "--resolve", "conf/emr.yaml"], cwd=REPO, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["profile"] == "emr"
    bad = subprocess.run(
        [sys.executable, "-m", "jobs.config", "--resolve", "conf/emr.yaml", "--set", "model.top_k=0"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stdout) == (2, "") and "model.top_k=0" in bad.stderr


def test_profile_reference_table_of_keys_shows_the_real_defaults():
    import re

    import yaml

    from jobs.config import Settings

    defaults = _flatten(Settings().as_dict())
    page = (REPO / "docs" / "profile.md").read_text()  # the profile reference, linked from README
    rows = re.findall(r"^\| ((?:`[a-z_.]+`(?:, )?)+) \| ((?:`[^`]*`(?:, )?)+) \|", page, re.MULTILINE)
    checked = set()
    for keys_cell, values_cell in rows:
        keys = re.findall(r"`([^`]+)`", keys_cell)
        if not all(k in defaults for k in keys):
            continue  # another table (arguments, columns)
        values = re.findall(r"`([^`]*)`", values_cell)
        for key, shown in zip(keys, values, strict=True):
            assert yaml.safe_load(shown) == defaults[key], f"docs/profile.md: {key} = {shown}; jobs/config.py: {defaults[key]!r}"
            checked.add(key)
    assert checked == set(defaults), f"docs/profile.md's table lacks {sorted(set(defaults) - checked)}"
