"""The current tags of every image: the ledger read down to one row per image_id.

    python -m jobs.current --output URI --to URI [--profile P] [--set key=value ...]

The output dataset is a ledger that only grows (`--incremental` appends, error rows stay, heads
added later add columns, head-only rows carry a head computed later from the stored embedding).
This reads it once (Spark, mergeSchema) and writes, overwriting `--to`, one row per image_id
for the profile's models, in one fixed schema (`view_schema`) that Spark, pyarrow and DuckDB
read directly. No model runs: the profile only says which versions are current.

Per image_id, with the profile's backbone version vB and heads {column: (artifact, version)};
"latest" = greatest (processed_at, run_id):
- url, run_id and the columns a full row computes (tags, embedding, embedding_norm; any output
  column without a rule here): the latest ok row with model_version == vB and tags not null (a full
  row). Found -> status "ok".
- each head's `<column>`, `<column>_score`: the latest ok row with model_version == vB,
  models[artifact] == that head's version and `<column>_score` not null (a full or a head-only
  row). Not found -> null (the image's ok row predates the head, or the head was retrained).
- ok rows: models = the current versions of what was found (backbone + heads found),
  processed_at = the latest contributing row's.
- no full row for vB: the image's latest row decides. An error -> status "error" with its
  error; an ok row of another backbone -> status "outdated" (tagged, but not by the current
  backbone: rerun the job with --incremental). Results are null; url, error, model_name,
  model_version, models, processed_at and run_id are that row's.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import ConfigError, add_profile_arguments, load_settings
from jobs.exits import EXIT_BAD_INPUT, exit_status, output_busy
from jobs.schema import PATH_FIELD, PROVENANCE_FIELDS, head_columns, nullable, output_fields
from jobs.session import session_conf
from model.artifact import ArtifactError

if TYPE_CHECKING:
    from jobs.infer import ModelBundle

log = logging.getLogger("image_tagger.current")
STATUSES = ("ok", "error", "outdated")
REQUIRED_COLUMNS = ("image_id", "status", "model_version", "processed_at")
# The view's columns with a rule of their own besides each head's pair (see above); every other column
# is the latest full row's.
OWN_RULES = ("image_id", "url", "status", "error", *(field.name for field in PROVENANCE_FIELDS))


class CurrentViewError(ValueError):
    """A bad --output or --to: the message names the argument."""


class MissingColumnError(CurrentViewError):
    """The dataset lacks a column every output of the job has."""


@dataclass(frozen=True)
class CurrentModels:
    """What counts as current: the backbone's version, each head's (column, artifact name, version)."""

    backbone_name: str
    backbone_version: str
    heads: tuple[tuple[str, str, str], ...] = ()  # profile order
    embedding: bool = True

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, *, embedding: bool) -> CurrentModels:
        heads = tuple((column, head.name, head.version) for column, head in bundle.heads)
        return cls(bundle.backbone.name, bundle.backbone.version, heads, embedding)

    def describe(self) -> str:
        heads = ", ".join(f"{column}={name} {version}" for column, name, version in self.heads) or "none"
        return f"{self.backbone_name} {self.backbone_version}, heads: {heads}, embedding: {'on' if self.embedding else 'off'}"


def view_schema(models: CurrentModels) -> T.StructType:
    """The view's one schema: the output's columns (jobs/schema.py) for the current heads and embedding,
    less `path` (one row of the view may join a full row and head-only rows); nulls allowed, as in the ledger."""
    fields = output_fields([column for column, _name, _version in models.heads], models.embedding)
    return T.StructType([T.StructField(f.name, nullable(f.dataType)) for f in fields if f.name != PATH_FIELD.name])


def _from_full_row(models: CurrentModels) -> list[str]:
    """The view's columns that are the latest full row's as they are: tags, the embedding."""
    heads = {name for column, _name, _version in models.heads for name in head_columns(column)}
    return [f.name for f in view_schema(models).fields if f.name not in (*OWN_RULES, *heads)]


def _column_or_null(ledger: DataFrame, name: str, dtype: T.DataType) -> Column:
    """A ledger column, or a typed null where no file of the ledger has it yet."""
    return F.col(name) if name in ledger.columns else F.lit(None).cast(dtype).alias(name)


def _greatest(columns: list[Column]) -> Column:
    return columns[0] if len(columns) == 1 else F.greatest(*columns)  # greatest skips nulls


def current_view(ledger: DataFrame, models: CurrentModels) -> DataFrame:
    """Ledger rows (any mix of runs and schemas) -> one row per image_id, schema `view_schema(models)`.

    One aggregation over the ledger (one scan, one shuffle): per image_id, `max_by` picks the
    latest qualifying row's fields for the tags, for each head, and for the image as a whole.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in ledger.columns]
    if missing:
        raise MissingColumnError(f"not an image-tagger output: no column {', '.join(missing)}")
    columns = _view_columns(models)
    grouped = ledger.groupBy("image_id").agg(*_latest_rows(ledger, models))
    return grouped.select(*(columns[f.name].cast(f.dataType).alias(f.name) for f in view_schema(models).fields))


def _latest_rows(ledger: DataFrame, models: CurrentModels) -> list[Column]:
    """Aggregates per image_id: structs `full` (tags row), `head<i>` (each head's row), `last` (any row)."""

    types = {f.name: f.dataType for f in view_schema(models).fields}

    def col(name: str) -> Column:
        return _column_or_null(ledger, name, types[name])

    latest_first = F.struct(F.col("processed_at"), col("run_id"))

    def latest(value: Column, where: Column) -> Column:
        return F.max_by(value, F.when(where, latest_first))  # rows where `where` is not true are skipped

    current_ok = (F.col("status") == "ok") & (F.col("model_version") == models.backbone_version)
    full = [col("url"), F.col("processed_at"), col("run_id"), *(col(name) for name in _from_full_row(models))]
    aggregates = [latest(F.struct(*full), current_ok & col("tags").isNotNull()).alias("full")]
    for i, (column, artifact, version) in enumerate(models.heads):
        label, score = (col(name) for name in head_columns(column))
        this_head = current_ok & (col("models")[artifact] == version) & score.isNotNull()
        head = F.struct(label.alias("label"), score.alias("score"), F.col("processed_at"))
        aggregates.append(latest(head, this_head).alias(f"head{i}"))
    last = F.struct(
        col("url"),
        F.col("status"),
        col("error"),
        col("model_name"),
        F.col("model_version"),
        col("models"),
        F.col("processed_at"),
        col("run_id"),
    )
    aggregates.append(latest(last, F.lit(True)).alias("last"))
    return aggregates


def _view_columns(models: CurrentModels) -> dict[str, Column]:
    """The view's columns from `_latest_rows`' structs: ok from `full` and heads, else from `last`."""
    found = F.col("full").isNotNull()

    def ok_else_last(if_ok: Column, field: str) -> Column:
        return F.when(found, if_ok).otherwise(F.col(f"last.{field}"))

    heads = [f"head{i}" for i in range(len(models.heads))]
    entries = [F.struct(F.lit(models.backbone_name), F.lit(models.backbone_version))]  # models: what was found
    for head, (_column, artifact, version) in zip(heads, models.heads, strict=True):
        entries.append(F.when(F.col(head).isNotNull(), F.struct(F.lit(artifact), F.lit(version))))
    columns = {
        "image_id": F.col("image_id"),
        "url": ok_else_last(F.col("full.url"), "url"),
        "status": F.when(found, "ok").when(F.col("last.status") == "error", "error").otherwise("outdated"),
        "error": F.when(~found & (F.col("last.status") == "error"), F.col("last.error")),
        **{name: F.col(f"full.{name}") for name in _from_full_row(models)},
    }
    for head, (column, _artifact, _version) in zip(heads, models.heads, strict=True):
        label, score = head_columns(column)
        columns[label] = F.when(found, F.col(f"{head}.label"))
        columns[score] = F.when(found, F.col(f"{head}.score"))
    contributing = [F.col("full.processed_at")] + [F.col(f"{head}.processed_at") for head in heads]
    return columns | {
        "model_name": ok_else_last(F.lit(models.backbone_name), "model_name"),
        "model_version": ok_else_last(F.lit(models.backbone_version), "model_version"),
        "models": ok_else_last(F.map_from_entries(F.array_compact(F.array(*entries))), "models"),
        "processed_at": ok_else_last(_greatest(contributing), "processed_at"),
        "run_id": ok_else_last(F.col("full.run_id"), "run_id"),
    }


def read_ledger(spark: SparkSession, uri: str) -> DataFrame:
    """Every file of the output dataset, columns merged across runs (a later head adds columns)."""
    from pyspark.errors import AnalysisException

    from jobs.ledger import OutputStore

    if not OutputStore(spark, uri).has_data():
        raise CurrentViewError(f"--output {uri}: no output dataset there (run the tagging job first)")
    try:
        return spark.read.option("mergeSchema", "true").parquet(uri)
    except AnalysisException as exc:
        raise CurrentViewError(f"--output {uri}: cannot read it as Parquet: {exc}") from None


def view_partitions(ledger_rows: int, rows_per_partition: int, configured: int) -> int:
    """Shuffle partitions for the view's aggregation: one per rows_per_partition ledger rows, at least `configured`."""
    return max(configured, -(-ledger_rows // rows_per_partition))


def write_current(
    spark: SparkSession,
    output: str,
    to: str,
    models: CurrentModels,
    *,
    lease_timeout_s: float | None = None,
    rows_per_partition: int | None = None,
) -> dict[str, int]:
    """Read the ledger at `output`, write the current view to `to` (replacing it); counts by status.

    Like the tagging job, it holds `to`'s lease while it writes (jobs.lease: a second writer of `to` is
    refused) and writes through a private folder, so no other job's commit shares its _temporary.
    The aggregation gets a shuffle partition per `rows_per_partition` ledger rows (current.rows_per_partition).
    """
    from jobs.config import CurrentSettings, OutputSettings
    from jobs.lease import Lease, holding, lease_store
    from jobs.ledger import OutputStore

    ledger = read_ledger(spark, output)
    ledger_rows = ledger.count()  # Parquet row-group footers: no column is read
    configured = int(spark.conf.get("spark.sql.shuffle.partitions"))
    partitions = view_partitions(ledger_rows, rows_per_partition or CurrentSettings().rows_per_partition, configured)
    log.info("current view: %d ledger rows, %d shuffle partitions", ledger_rows, partitions)
    view = current_view(ledger, models)
    store = OutputStore(spark, to)
    timeout_s = lease_timeout_s or OutputSettings().lease_timeout_s
    lease = Lease(lease_store(to, store.lease_files), output=to, timeout_s=timeout_s, manifest=output)
    with holding(lease, on_lost=spark.sparkContext.cancelAllJobs) as held:
        run_id = time.strftime("current-%Y%m%dT%H%M%SZ", time.gmtime())
        held.name_run(run_id)
        private = store.write_dir(run_id, "view")
        # Timestamps as Parquet's TIMESTAMP(MICROS, UTC), not Spark's legacy INT96: pyarrow and DuckDB
        # then read processed_at as a UTC timestamp.
        with (
            session_conf(spark, "spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"),
            session_conf(spark, "spark.sql.shuffle.partitions", str(partitions)),
        ):
            view.write.mode("overwrite").parquet(private)
        held.check()
        store.replace_data(private)
    written = spark.read.parquet(to).groupBy("status").count().collect()
    counts = dict.fromkeys(STATUSES, 0) | {row["status"]: row["count"] for row in written}
    return {"images": sum(counts.values()), **counts}


def _normalised(uri: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        scheme, rest = uri.split("://", 1)
        return f"{scheme.lower()}://{posixpath.normpath(rest)}"
    return str(Path(uri.removeprefix("file://")).resolve())


def overlaps(read: str, written: str) -> bool:
    """True when a location written whole is the one read, inside it, or contains it."""
    a, b = _normalised(read), _normalised(written)
    return a == b or b.startswith(a + "/") or a.startswith(b + "/")


def require_separate(read: tuple[str, str], written: tuple[str, str], error: type[Exception]) -> None:
    """A location written whole (flag, uri) must be neither the one read, nor inside it, nor contain it."""
    if overlaps(read[1], written[1]):
        raise error(f"{written[0]} {written[1]} overlaps {read[0]} {read[1]}: it is rewritten, so it must be a separate location")


def check_targets(output: str, to: str) -> None:
    """--to is overwritten: it must be neither the ledger nor inside it, nor contain it."""
    require_separate(("--output", output), ("--to", to), CurrentViewError)


def read_write_parser(prog: str, description: str, read: tuple[str, str], written: tuple[str, str], profile_help: str):
    """The parser of a command that reads one dataset and rewrites another: (flag, help) of each, the profile options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for flag, help in (read, written):
        parser.add_argument(flag, required=True, help=help)
    add_profile_arguments(parser, profile_help)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = read_write_parser(
        "python -m jobs.current",
        "Write the current tags of every image (one row per image_id, the profile's models) "
        "from the job's output dataset to a Parquet dataset.",
        ("--output", "the tagging job's output dataset (the ledger) to read"),
        ("--to", "Parquet dataset to write the current view to (overwritten)"),
        "profile YAML naming the current models (default: conf/local.yaml)",
    )
    return parser.parse_args(argv)


def render(counts: dict[str, int], models: CurrentModels, to: str) -> str:
    by_status = ", ".join(f"{status} {counts[status]}" for status in STATUSES)
    return f"current view for {models.describe()}\n{counts['images']} images ({by_status}) -> {to}"


def main(argv: list[str] | None = None, *, spark: SparkSession | None = None) -> int:
    """The command line; `spark`: use this session (and leave it running) instead of the profile's."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bad_input = dict.fromkeys((ConfigError, ArtifactError, CurrentViewError), EXIT_BAD_INPUT)
    return exit_status(lambda: write_view(args, spark), {**bad_input, **output_busy()})


def write_view(args: argparse.Namespace, spark: SparkSession | None) -> int:
    from jobs.infer import load_bundle
    from jobs.session import build_spark, require_filesystems

    settings = load_settings(args.profile, args.overrides)
    models = CurrentModels.from_bundle(load_bundle(settings.model.uri, settings.model.heads), embedding=settings.model.embedding)
    check_targets(args.output, args.to)
    session = spark or build_spark(settings)
    try:
        require_filesystems(session, {"--output": args.output, "--to": args.to})
        counts = write_current(
            session,
            args.output,
            args.to,
            models,
            lease_timeout_s=settings.output.lease_timeout_s,
            rows_per_partition=settings.current.rows_per_partition,
        )
    finally:
        if spark is None:
            session.stop()
    print(render(counts, models, args.to), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
