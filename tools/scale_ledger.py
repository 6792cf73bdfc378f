"""Synthetic ledgers and manifests at catalogue scale (millions of rows), for `make bench-scale`.

    python -m tools.scale_ledger --rows 1000000 --out /work/scale-data/1000000 [--runs 3]

Writes, with pyarrow, vectorised, row group by row group (no Spark, no images):
- `ledger/`: the job's output as `--incremental` finds it after `runs` full runs over the same
  `rows` images, each run later than the one before. Its columns are jobs/schema.py's output
  columns for `heads` with the embedding, so the schema follows the job's (a column this module
  has no rule for is written as nulls of its type). Every row is ok for the profile's backbone and
  head versions (read from the artifacts, so the job sees them as done); the last head is missing
  (null) on every `missing_every`-th image: the images tagged before that head was added.
- `manifest/`: (image_id, url) of the catalogue's images; `manifest-new/`: the same plus
  `new_every`-th as many new images whose file:// URLs point at files that do not exist (their
  fetch fails at once, so a run with them measures planning, not fetching).

The embedding (1280 float32; a real one takes ~1.9 KB a row on disk, reports/heads-only.json) is
one of a few distinct unit vectors, stored zstd-compressed without a dictionary: ~0.2 KB a row, so
10M rows fit on a shared disk and write in minutes. Its values are never looked at by what this
measures: the planning reads must prune the column, and a scan that reads it decodes every value
either way (bytes on disk differ from a real ledger's; values decoded per row do not).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.schema import PATH_FULL, output_schema
from jobs.similar import unit_rows

EMBEDDING = "embedding"
EMBEDDING_DIM = 1280
DISTINCT_EMBEDDINGS = 8
ROW_GROUP_ROWS = 100_000
FILE_ROWS = 500_000
TAGS = (("espresso", 0.6), ("cup", 0.2), ("consomme", 0.1), ("eggnog", 0.05), ("coffee mug", 0.02))
HEAD_LABEL, HEAD_SCORE = "Bag", 0.9
RUN_START_US = 1_796_000_000 * 10**6  # 2026-12: processed_at of the first run's first row


@dataclass(frozen=True)
class Models:
    """The versions the rows carry: the backbone's and each head's (output column, artifact name, version)."""

    backbone_name: str
    backbone_version: str
    heads: tuple[tuple[str, str, str, float | None], ...]  # column, artifact name, version, min_score

    @classmethod
    def from_bundle(cls, bundle) -> Models:
        """From a jobs.infer.ModelBundle: the versions --incremental compares the ledger with."""
        heads = tuple((column, head.name, head.version, bundle.min_score(i)) for i, (column, head) in enumerate(bundle.heads))
        return cls(bundle.backbone.name, bundle.backbone.version, heads)


def profile_models(heads: list[dict], profile: str | None = None) -> Models:
    """The versions a profile's backbone and these heads have now."""
    from jobs.config import load_settings
    from jobs.infer import load_bundle

    return Models.from_bundle(load_bundle(load_settings(profile).model.uri, heads))


def image_ids(start: int, n: int) -> pa.Array:
    return pa.array([f"scale-{i:010d}" for i in range(start, start + n)], pa.string())


def missing_urls(start: int, n: int, root: str = "/nonexistent/scale") -> pa.Array:
    """file:// URLs that do not exist: the fetch fails at once (a permanent error, tried once)."""
    return pa.array([f"file://{root}/{i:010d}.jpg" for i in range(start, start + n)], pa.string())


def repeated_list(values: pa.Array, n: int, list_type: pa.DataType) -> pa.Array:
    """n lists, each `values` (one row's list repeated n times)."""
    width = len(values)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    flat = values.take(pa.array(np.tile(np.arange(width), n)))
    return pa.ListArray.from_arrays(offsets, flat, type=list_type)


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return unit_rows(np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32))


def embeddings(start: int, n: int, list_type: pa.DataType) -> pa.Array:
    picks = unit_vectors(DISTINCT_EMBEDDINGS, EMBEDDING_DIM)[np.arange(start, start + n) % DISTINCT_EMBEDDINGS]
    offsets = pa.array(np.arange(0, n * EMBEDDING_DIM + 1, EMBEDDING_DIM, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(picks.reshape(-1)), type=list_type)


def ledger_batch(schema: pa.Schema, models: Models, start: int, n: int, run: int, missing_every: int) -> pa.Table:
    """Rows [start, start + n) of one run: every column of `schema`, nulls where no rule says otherwise."""
    index = np.arange(start, start + n)
    columns: dict[str, pa.Array] = {
        "image_id": image_ids(start, n),
        "url": missing_urls(start, n),
        "status": pa.array(np.full(n, "ok", dtype=object), pa.string()),
        "embedding_norm": pa.array(np.full(n, 20.0, dtype=np.float32)),
        "path": pa.array(np.full(n, PATH_FULL, dtype=object), pa.string()),
        "model_name": pa.array(np.full(n, models.backbone_name, dtype=object), pa.string()),
        "model_version": pa.array(np.full(n, models.backbone_version, dtype=object), pa.string()),
        "processed_at": pa.array(RUN_START_US + run * 10**9 + index, pa.timestamp("us", tz="UTC")),
        "run_id": pa.array(np.full(n, f"synthetic-{run + 1}", dtype=object), pa.string()),
    }
    tag_type = schema.field("tags").type
    tags = pa.StructArray.from_arrays(
        [pa.array([label for label, _ in TAGS]), pa.array([score for _, score in TAGS], pa.float32())],
        fields=list(tag_type.value_type),
    )
    columns["tags"] = repeated_list(tags, n, tag_type)
    columns[EMBEDDING] = embeddings(start, n, schema.field(EMBEDDING).type)
    entries = {models.backbone_name: models.backbone_version} | {name: version for _, name, version, _ in models.heads}
    map_type = schema.field("models").type
    columns["models"] = pa.MapArray.from_arrays(
        pa.array(np.arange(0, n * len(entries) + 1, len(entries), dtype=np.int32)),
        pa.array(np.tile(list(entries), n), pa.string()),
        pa.array(np.tile(list(entries.values()), n), pa.string()),
        type=map_type,
    )
    last = len(models.heads) - 1
    for i, (column, _name, _version, min_score) in enumerate(models.heads):
        held = np.ones(n, dtype=bool) if i < last or not missing_every else index % missing_every != 0
        labelled = held & (HEAD_SCORE >= (min_score or 0.0))  # the label is present exactly when the score reaches the floor
        columns[column] = pa.array(np.where(labelled, HEAD_LABEL, None), pa.string())
        columns[f"{column}_score"] = pa.array(np.where(held, HEAD_SCORE, np.nan), pa.float32(), mask=~held)
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_files(folder: Path, rows: int, batch, prefix: str = "part") -> int:
    """Write rows through `batch(start, n) -> Table` as files of FILE_ROWS in row groups; bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for file_no, file_start in enumerate(range(0, rows, FILE_ROWS)):
        path = folder / f"{prefix}-{file_no:05d}.parquet"
        writer = None
        for start in range(file_start, min(rows, file_start + FILE_ROWS), ROW_GROUP_ROWS):
            table = batch(start, min(ROW_GROUP_ROWS, rows - start))
            if writer is None:
                # zstd, and the embedding without a dictionary: its few distinct vectors then compress.
                leaves = [n for n in _leaf_paths(table.schema) if not n.startswith(f"{EMBEDDING}.")]
                writer = pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=leaves)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
        written += path.stat().st_size
    return written


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's dotted column paths of every leaf (what per-column writer options name)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [parquet.column(i).path for i in range(len(parquet))]


def write_ledger(folder: Path, rows: int, models: Models, *, runs: int = 1, missing_every: int = 100) -> int:
    schema = _arrow_schema([column for column, *_ in models.heads])
    total = 0
    for run in range(runs):
        batch = lambda start, n, run=run: ledger_batch(schema, models, start, n, run, missing_every)  # noqa: E731
        total += write_files(folder, rows, batch, prefix=f"run{run + 1}")
    return total


def _arrow_schema(heads: list[str]) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(output_schema(heads, embedding=True))


def write_manifest(folder: Path, rows: int, *, first: int = 0) -> int:
    def batch(start: int, n: int) -> pa.Table:
        return pa.table({"image_id": image_ids(first + start, n), "url": missing_urls(first + start, n)})

    return write_files(folder, rows, batch, prefix=f"from{first:010d}")


def write_manifests(root: Path, rows: int, new_every: int = 100) -> None:
    """manifest/ (the catalogue) and manifest-new/ (hard links to it plus rows // new_every new images)."""
    write_manifest(root / "manifest", rows)
    new = root / "manifest-new"
    new.mkdir(parents=True, exist_ok=True)
    for path in (root / "manifest").glob("*.parquet"):
        (new / path.name).hardlink_to(path)
    write_manifest(new, max(1, rows // new_every), first=rows)


def generate(root: Path, rows: int, models: Models, *, runs: int = 1, missing_every: int = 100) -> dict:
    """Ledger and manifests under root (replaced); what was written and how long it took."""
    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    ledger_bytes = write_ledger(root / "ledger", rows, models, runs=runs, missing_every=missing_every)
    write_manifests(root, rows)
    return {"rows": rows, "runs": runs, "ledger_bytes": ledger_bytes, "generate_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, required=True, help="images in the catalogue")
    parser.add_argument("--out", type=Path, required=True, help="folder for ledger/, manifest/, manifest-new/ (replaced)")
    parser.add_argument("--runs", type=int, default=1, help="full runs over the same images the ledger holds")
    parser.add_argument("--heads", default="category,category_again", help="the heads' columns (the default head's artifact)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.runs < 1:
        parser.error("--rows and --runs must be >= 1")
    models = profile_models(heads_for(args.heads.split(",")))
    print(generate(args.out, args.rows, models, runs=args.runs))
    return 0


def heads_for(columns: list[str]) -> list[dict]:
    """The profile's heads list for these columns, each the default head's artifact (jobs/config.py)."""
    from jobs.config import ModelSettings

    artifact = ModelSettings().heads[0]["uri"]
    return [{"name": column, "uri": artifact} for column in columns]


if __name__ == "__main__":
    sys.exit(main())
