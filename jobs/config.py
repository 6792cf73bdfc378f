"""The job's settings: one typed, validated object built from a conf/ profile plus overrides.

A profile is YAML (see conf/local.yaml). `--set dotted.key=value` overrides any key, the
value parsed as YAML. Validation runs before any Spark work and names the offending key.
`python -m jobs.config --resolve PROFILE [--set ...]` prints the resolved settings as JSON
(what infra/ reads: Terraform and infra/scripts/emr_ctl.py never read a profile themselves).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.schema import output_fields

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"
# The defaults below are the only ones: a profile names only what it changes (conf/local.yaml
# sets Spark's own settings for one machine and nothing else). tests/test_config.py holds
# every job profile in conf/ and docs/profile.md's table of keys to them.


class ConfigError(ValueError):
    """A profile or an override is invalid; the message names the key."""


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _check(predicate, message):
    return {"check": predicate, "message": message}


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "image-tagger"
    partitions: int = field(default=4, metadata=_check(_non_negative, "must be >= 0"))
    # True: accounting counts are observed during the tagging pass and the dedup reuses the
    # repartition shuffle. False: the straightforward way, separate count actions and shuffles.
    single_pass: bool = True
    # True: while the driver reads the manifest and plans, one task per core starts the Python
    # workers and builds their models (with spark.python.worker.reuse the tagging tasks reuse them).
    warm_up: bool = True
    conf: dict = field(default_factory=dict)  # spark-defaults: name -> string value


@dataclass(frozen=True)
class ModelSettings:
    # The backbone (ImageNet tags + embedding): the TFLite twin that iteration 05 measured fastest.
    uri: str = "model/artifacts/efficientnet_lite0_tflite"
    top_k: int = field(default=5, metadata=_check(lambda v: 1 <= v <= 100, "must be between 1 and 100"))
    embedding: bool = True  # add the L2-normalised embedding column (visual search)
    # Classifiers on the backbone's embedding, run in the same pass: [{name: category, uri: ...}].
    # Each adds columns <name> and <name>_score; min_score (optional) leaves the label null below it.
    heads: list = field(default_factory=lambda: [{"name": "category", "uri": "model/artifacts/product_category_tflite"}])


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int = field(default=32, metadata=_check(lambda v: 1 <= v <= 4096, "must be between 1 and 4096"))
    threads: int = field(default=1, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class FetchSettings:
    threads: int = field(default=2, metadata=_check(lambda v: 1 <= v <= 256, "must be between 1 and 256"))
    connect_timeout_s: float = field(default=5.0, metadata=_check(_positive, "must be > 0"))
    read_timeout_s: float = field(default=20.0, metadata=_check(_positive, "must be > 0"))
    max_attempts: int = field(default=3, metadata=_check(lambda v: 1 <= v <= 20, "must be between 1 and 20"))
    backoff_initial_s: float = field(default=0.2, metadata=_check(_non_negative, "must be >= 0"))
    backoff_max_s: float = field(default=5.0, metadata=_check(_non_negative, "must be >= 0"))
    max_bytes: int = field(default=50 * 1024 * 1024, metadata=_check(_positive, "must be > 0"))
    # Batches whose downloads + decodes run ahead while the model works on the current one.
    prefetch_batches: int = field(default=1, metadata=_check(lambda v: 0 <= v <= 8, "must be between 0 and 8"))
    allowed_networks: list = field(default_factory=list)  # CIDRs open to http(s) despite the guard


@dataclass(frozen=True)
class DecodeSettings:
    image_size: int = field(default=224, metadata=_check(lambda v: 8 <= v <= 2048, "must be between 8 and 2048"))
    resize_shorter: int = field(default=256, metadata=_check(lambda v: 8 <= v <= 4096, "must be between 8 and 4096"))
    max_pixels: int = field(default=64_000_000, metadata=_check(_positive, "must be > 0"))
    draft: bool = True  # JPEG DCT-domain downscaling while decoding (much faster, same tags)


@dataclass(frozen=True)
class OutputSettings:
    # Units of commit: a killed run resumes at the first unfinished chunk. 1 = one pass, no staging.
    chunks: int = field(default=1, metadata=_check(lambda v: 1 <= v <= 10_000, "must be between 1 and 10000"))
    # One run writes an output at a time (jobs.lease): a lease not renewed for this long (its run was
    # killed, its cluster lost) is taken over by the next run. Renewed every lease_timeout_s / 4.
    lease_timeout_s: float = field(default=300.0, metadata=_check(lambda v: 2 <= v <= 86_400, "must be between 2 and 86400"))


@dataclass(frozen=True)
class ProgressSettings:
    # Seconds between the driver's progress lines (done/total, ok/error, images/s, ETA); chunk commits add one each.
    interval_s: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))


@dataclass(frozen=True)
class SimilarSettings:
    """jobs/similar_images.py: nearest neighbours and near-duplicates from the stored embeddings (docs/similar.md)."""

    k: int = field(default=10, metadata=_check(lambda v: 1 <= v <= 1000, "must be between 1 and 1000"))
    # Cosine at or above which two images are copies of one photo. With the hash rule below: the rule of
    # best recall that kept at most 1% of groups joining different photos on tools/duplicate_set.py's
    # set (docs/similar.md; 0.92 was cosine alone's choice).
    duplicate_threshold: float = field(default=0.93, metadata=_check(lambda v: 0 < v <= 1, "must be > 0 and <= 1"))
    # A second way to be copies (jobs.phash.copy_pair): perceptual hashes (the `phash` column) at most this
    # many bits apart (mirror-blind, of 63) and cosine >= phash_min_cosine. Catches heavy JPEG re-saves,
    # which the cosine misses; chosen with duplicate_threshold on the same set. phash_min_cosine >=
    # duplicate_threshold turns it off; rows without a phash are compared by cosine alone.
    phash_distance: int = field(default=5, metadata=_check(lambda v: 0 <= v <= 63, "must be between 0 and 63"))
    phash_min_cosine: float = field(default=0.64, metadata=_check(lambda v: 0 < v <= 1, "must be > 0 and <= 1"))
    # Inverted-file cells (k-means centroids); 0: about sqrt(images searched), see docs/similar.md.
    cells: int = field(default=0, metadata=_check(lambda v: 0 <= v <= 1_000_000, "must be between 0 and 1000000"))
    # Cells each image is searched in (its nearest first); nprobe >= cells is exact search.
    nprobe: int = field(default=8, metadata=_check(lambda v: 1 <= v <= 1_000_000, "must be between 1 and 1000000"))
    # A column of the tags output (e.g. category): neighbours only among equal values. '': the whole catalogue.
    within: str = field(
        default="",
        metadata=_check(lambda v: re.fullmatch(r"([a-z_][a-z0-9_]{0,63})?", v) is not None, "must be '' or a column name"),
    )
    # Vectors the driver collects to learn the centroids on (1280 floats each: 20000 is about 100 MB).
    sample_size: int = field(default=20_000, metadata=_check(lambda v: 100 <= v <= 1_000_000, "must be between 100 and 1000000"))
    kmeans_iterations: int = field(default=10, metadata=_check(lambda v: 1 <= v <= 100, "must be between 1 and 100"))
    # Queries per matrix product inside a cell: bounds a task's memory (block x cell size scores).
    block_size: int = field(default=1024, metadata=_check(lambda v: 1 <= v <= 65_536, "must be between 1 and 65536"))
    seed: int = 0  # the sample and the k-means start: the same seed, the same cells


@dataclass(frozen=True)
class CurrentSettings:
    """python -m jobs.current: the ledger read down to one row per image."""

    # Ledger rows per shuffle partition of the view's aggregation (never fewer partitions than
    # spark.sql.shuffle.partitions): each task then sorts about this many rows of ~5 KB (the embedding
    # in memory), so a task's memory and spill stay the same as the catalogue grows. 300M rows: 3,000.
    rows_per_partition: int = field(default=100_000, metadata=_check(_positive, "must be > 0"))


IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"]


@dataclass(frozen=True)
class ManifestSettings:
    # Keys / files a listed manifest keeps (s3:// prefix, S3 Inventory, local folder); case-insensitive.
    extensions: list = field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),
        metadata=_check(
            lambda v: bool(v) and all(isinstance(e, str) and re.fullmatch(r"\.[A-Za-z0-9]{1,10}", e) for e in v),
            "must be a non-empty list of extensions like .jpg",
        ),
    )
    # A local manifest file (CSV, text, Parquet) up to this size is read on the driver with pyarrow:
    # no Spark job before the tagging, its row count and duplicates known (16 MiB: ~200k CSV rows of
    # URLs). Larger ones, directories and s3:// are read by Spark. 0: always Spark (jobs/manifest.py).
    driver_read_max_bytes: int = field(default=16 * 1024 * 1024, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class Settings:
    spark: SparkSettings = field(default_factory=SparkSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    manifest: ManifestSettings = field(default_factory=ManifestSettings)
    progress: ProgressSettings = field(default_factory=ProgressSettings)
    similar: SimilarSettings = field(default_factory=SimilarSettings)
    current: CurrentSettings = field(default_factory=CurrentSettings)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Maps whose keys are free-form (Spark property names contain dots themselves).
FREE_FORM_MAPS = {("spark", "conf")}


def _coerce(value: Any, expected: type, key: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'profile'}: expected a mapping, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    types = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        names = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"unknown profile key {names}; known keys here: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        f, key = known[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(types[name]):
            values[name] = _build(types[name], value, f"{key}.")
            continue
        value = _coerce(value, types[name], key)
        check = f.metadata.get("check")
        if check and not check(value):
            raise ConfigError(f"{key}={value!r}: {f.metadata['message']}")
        values[name] = value
    return cls(**values)


def _spark_value(name: str, value: Any) -> str:
    # Spark and EMR both take property values as strings; YAML may have parsed 64 or true.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError(f"spark.conf.{name}: expected a scalar, got {value!r}")


# Names a head may not take: the output's own columns, whatever the profile (jobs/schema.py).
RESERVED_COLUMNS = frozenset(field.name for field in output_fields([], embedding=True))


def _validate_heads(heads: list) -> None:
    seen = set()
    for i, head in enumerate(heads):
        key = f"model.heads[{i}]"
        if not isinstance(head, dict) or not {"name", "uri"} <= set(head) <= {"name", "uri", "min_score"}:
            raise ConfigError(f"{key}: expected a mapping with the keys name and uri (and optionally min_score), got {head!r}")
        name, uri = head["name"], head["uri"]
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
            raise ConfigError(f"{key}.name={name!r}: use lower-case letters, digits and _ (it names output columns)")
        if name in RESERVED_COLUMNS or name in seen or name.endswith("_score"):
            raise ConfigError(f"{key}.name={name!r}: clashes with another output column")
        if not isinstance(uri, str) or not uri:
            raise ConfigError(f"{key}.uri: expected a path or s3:// URI")
        floor = head.get("min_score")
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1):
            raise ConfigError(f"{key}.min_score={floor!r}: must be a probability between 0 and 1")
        seen.add(name)


def _validate_cross_fields(settings: Settings) -> None:
    _validate_heads(settings.model.heads)
    if settings.decode.resize_shorter < settings.decode.image_size:
        raise ConfigError(
            f"decode.resize_shorter={settings.decode.resize_shorter} must be >= decode.image_size={settings.decode.image_size}"
        )
    if settings.fetch.backoff_max_s < settings.fetch.backoff_initial_s:
        raise ConfigError("fetch.backoff_max_s must be >= fetch.backoff_initial_s")
    for cidr in settings.fetch.allowed_networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"fetch.allowed_networks: {cidr!r} is not a CIDR ({exc})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], parsed value). The value is YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    """Set data[path] = value in place; free-form maps take the rest of the path as one key."""
    node = data
    for depth, part in enumerate(path[:-1]):
        if tuple(path[: depth + 1]) in FREE_FORM_MAPS:
            node.setdefault(part, {})[".".join(path[depth + 1 :])] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: depth + 1])} is not a mapping")
        node = child
    node[path[-1]] = value


def add_overrides_argument(parser, help: str = "override a profile key by dotted path; VALUE is YAML (repeatable)") -> None:
    """The --set KEY=VALUE option every command that reads a profile takes (load_settings' overrides)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_profile_arguments(parser, profile_help: str, *, log_level: str = "WARNING") -> None:
    """--profile, --set and --log-level: the options of every command that runs with a profile."""
    parser.add_argument("--profile", help=profile_help)
    add_overrides_argument(parser)
    parser.add_argument("--log-level", default=log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def load_settings(profile: str | Path | None = None, overrides: list[str] = ()) -> Settings:
    """Read a profile (YAML file), apply `key=value` overrides, validate, return Settings."""
    path = Path(profile) if profile else DEFAULT_PROFILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {path} is not valid YAML: {exc}") from None
    for text in overrides:
        apply_override(data, *parse_override(text))
    settings = _build(Settings, data, "")
    _validate_cross_fields(settings)
    conf = {name: _spark_value(name, value) for name, value in settings.spark.conf.items()}
    return dataclasses.replace(settings, spark=dataclasses.replace(settings.spark, conf=conf))


def resolve(profile: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """A profile as the infrastructure reads it: every setting resolved (defaults filled, validated) as plain data.

    Adds what Terraform derives from the settings: ``profile`` (the file's name without .yaml) and
    ``output_columns`` (the Glue table's columns: [{name, type}] in Hive types, in the order the job
    writes them) and ``similar_columns`` (jobs/similar_images.py's two datasets' Glue columns, by
    dataset). infra/scripts/emr_ctl.py calls this and Terraform reads its JSON (`python -m
    jobs.config --resolve PROFILE`), so neither reads the YAML nor restates a default.
    """
    from jobs.schema import DUPLICATES_SCHEMA, NEIGHBOURS_SCHEMA, hive_columns, output_columns

    settings = load_settings(profile, overrides)
    heads = [head["name"] for head in settings.model.heads]
    return {
        **settings.as_dict(),
        "profile": (Path(profile) if profile else DEFAULT_PROFILE).stem,
        "output_columns": [
            {"name": name, "type": hive_type} for name, hive_type in output_columns(heads, settings.model.embedding)
        ],
        "similar_columns": {
            dataset: [{"name": name, "type": hive_type} for name, hive_type in hive_columns(schema)]
            for dataset, schema in (("neighbours", NEIGHBOURS_SCHEMA), ("duplicates", DUPLICATES_SCHEMA))
        },
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.config --resolve PROFILE [--set k=v ...]`: print the resolved profile as JSON; exit 2 when invalid."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Print a profile's resolved settings (defaults filled, validated) as JSON.")
    parser.add_argument("--resolve", required=True, metavar="PROFILE", help="profile file, e.g. conf/emr.yaml")
    add_overrides_argument(parser)
    args = parser.parse_args(argv)
    from jobs.exits import EXIT_BAD_INPUT, exit_status

    def print_resolved() -> int:
        print(json.dumps(resolve(args.resolve, args.overrides), indent=2))
        return 0

    return exit_status(print_resolved, {ConfigError: EXIT_BAD_INPUT})


if __name__ == "__main__":
    raise SystemExit(main())
