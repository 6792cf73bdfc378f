"""Read stage: a manifest of image URLs -> (image_id, url).

Spark reads Parquet, CSV with a header, or text. A small local manifest file (at most
manifest.driver_read_max_bytes) is read on the driver with pyarrow instead: no Spark job, and the
driver knows its row count and whether its image_ids are unique (the planning then skips the dedup
shuffle, the progress lines have a total). The driver reads only what both readers read alike:
anything else (quotes in a CSV, ragged rows, non-UTF-8 text, directories, compressed files) goes to
Spark. A manifest can also be listed from where the images are (jobs/listing.py): an s3:// prefix,
an S3 Inventory report's manifest.json, or a local folder; those keep only image extensions
(manifest.extensions) and never touch Hadoop.

Every input row becomes exactly one output row, so nothing here filters rows except blank
lines and '#' comments in text manifests (they are not rows). A row without a URL stays
and is reported as an error by the fetch stage.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.listing import ManifestError, list_urls  # listings raise ManifestError too: imports go one way

FORMATS = ("auto", "parquet", "csv", "text", "s3-prefix", "s3-inventory", "folder")
SPARK_FORMATS = ("parquet", "csv", "text")  # read by Spark itself (through Hadoop's filesystems)
IMAGE_ID_HEX_CHARS = 32
# Spark decompresses by these names (Hadoop's codecs); the driver reads only plain files.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst", ".zstd")
MANIFEST_COLUMNS = "image_id string, url string"  # as with_image_ids gives them on Spark's path


@dataclass(frozen=True)
class Manifest:
    """An opened manifest: its (image_id, url) rows, and what the driver knows of them without a Spark job."""

    rows: DataFrame
    listing: object = None  # a listed manifest's ListingStats: what the listing saw and skipped
    rows_in: int | None = None  # the rows, when the driver read the manifest itself
    unique_ids: int | None = None  # the distinct image_ids, likewise

    @property
    def ids_unique(self) -> bool:
        """True when the driver counted every image_id once: no dedup needed."""
        return self.rows_in is not None and self.unique_ids == self.rows_in


def stable_image_id(url: str) -> str:
    """The default image_id: the first 128 bits of sha256(url), hex. Same as `image_id_column`."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:IMAGE_ID_HEX_CHARS]


def image_id_column(url: Column) -> Column:
    return F.substring(F.sha2(F.coalesce(url, F.lit("")), 256), 1, IMAGE_ID_HEX_CHARS)


def image_id_of(given: str | None, url: str | None) -> str:
    """with_image_ids on one row: the given id trimmed of spaces (Spark's trim: ' ' only), else the URL's hash."""
    return (given or "").strip(" ") or stable_image_id(url or "")


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    return None if "://" in uri else Path(uri)


def _is_parquet_dataset(path: Path) -> bool:
    try:
        return any(p.name == "_SUCCESS" or p.suffix == ".parquet" for p in path.iterdir())
    except OSError:
        return False


def detect_format(uri: str) -> str:
    """The format `auto` means for a URI: from its name, its trailing slash, or (local) what it is.

    - ...manifest.json: an S3 Inventory report;
    - s3://bucket/prefix/ (trailing slash): list the prefix (a Parquet dataset's own name,
      *.parquet/, stays parquet);
    - a local folder (file:// or path) holding no Parquet files: list the folder;
    - *.csv(.gz): csv; *.txt(.gz), *.lst, *.urls: text; anything else: Parquet.
    """
    path = uri.rstrip("/").lower()
    if path.endswith("manifest.json"):
        return "s3-inventory"
    if path.endswith((".csv", ".csv.gz")):
        return "csv"
    if path.endswith((".txt", ".txt.gz", ".lst", ".urls")):
        return "text"
    if path.endswith(".parquet"):
        return "parquet"
    if uri.lower().startswith("s3://") and uri.endswith("/"):
        return "s3-prefix"
    local = _local_path(uri)
    if local is not None and local.is_dir() and not _is_parquet_dataset(local):
        return "folder"
    return "parquet"  # .parquet files and dataset directories alike


def resolve_format(uri: str, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise ManifestError(f"manifest format {fmt!r} is not one of {', '.join(FORMATS)}")
    return detect_format(uri) if fmt == "auto" else fmt


def spark_reads(uri: str, fmt: str = "auto") -> bool:
    """True when Spark reads the manifest through Hadoop (so Spark needs a filesystem for its scheme)."""
    return resolve_format(uri, fmt) in SPARK_FORMATS


def read_manifest(spark: SparkSession, uri: str, fmt: str = "auto", settings=None) -> DataFrame:
    """Return a DataFrame with string columns image_id and url, one row per manifest row.

    settings: the profile's ManifestSettings (image extensions for listed manifests, the driver's
    read limit); defaults apply when None.
    """
    return open_manifest(spark, uri, fmt, settings).rows


def open_manifest(spark: SparkSession, uri: str, fmt: str = "auto", settings=None) -> Manifest:
    """The manifest's rows: read on the driver when small and plain, by Spark or a listing otherwise."""
    from jobs.config import ManifestSettings

    settings = settings or ManifestSettings()
    fmt = resolve_format(uri, fmt)
    path = driver_readable(uri, fmt, settings.driver_read_max_bytes)
    columns = _driver_columns(path, fmt) if path is not None else None
    if columns is not None:
        return _from_driver(spark, uri, *columns)
    if fmt == "text":
        raw = spark.read.text(uri).select(F.trim("value").alias("url"))
        raw = raw.where((F.col("url") != "") & ~F.col("url").startswith("#"))
    elif fmt == "csv":
        raw = spark.read.option("header", True).csv(uri)
    elif fmt == "parquet":
        raw = spark.read.parquet(uri)
    else:
        return _listed(spark, uri, fmt, settings)
    return Manifest(with_image_ids(raw, uri))


def driver_readable(uri: str, fmt: str, max_bytes: int) -> Path | None:
    """The manifest's local file when the driver may read it: a plain file of Spark's formats, at most max_bytes.

    Directories (Parquet datasets), globs, compressed and hidden files stay with Spark.
    """
    path = _local_path(uri)
    if fmt not in SPARK_FORMATS or max_bytes <= 0 or path is None or re.search(r"[*?\[{]", uri):
        return None
    if path.name.startswith(("_", ".")) or path.name.lower().endswith(COMPRESSED_SUFFIXES):
        return None
    try:
        return path if path.is_file() and path.stat().st_size <= max_bytes else None
    except OSError:
        return None


def _driver_columns(path: Path, fmt: str) -> tuple[list[str], dict[str, list]] | None:
    """(column names, the url and image_id columns' values) as Spark would read them, or None where they could differ."""
    import pyarrow as pa

    data = path.read_bytes()
    try:
        if fmt == "text":
            return _text_lines(data)
        read = _csv_table(data) if fmt == "csv" else _parquet_table(data)
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None  # Spark reads it (ragged rows, bad encoding, ...) and says what is wrong
    if read is None:
        return None
    all_names, table = read
    names = {name.lower(): name for name in all_names}
    if len(names) < len(all_names):
        return None  # names equal but for case: Spark renames or refuses them
    picked = {key: table.column(names[key]) for key in ("url", "image_id") if key in names}
    if any(not (pa.types.is_string(c.type) or pa.types.is_large_string(c.type)) for c in picked.values()):
        return None  # Spark's cast to string decides how other types read
    return all_names, {key: column.to_pylist() for key, column in picked.items()}


def _text_lines(data: bytes) -> tuple[list[str], dict[str, list]]:
    """Spark's text reader: lines end at \\n, \\r\\n or \\r; then trimmed of spaces, blank and '#' lines dropped."""
    lines = (line.strip(" ") for line in re.split(r"\r\n|\r|\n", data.decode("utf-8")))
    return ["url"], {"url": [line for line in lines if line and not line.startswith("#")]}


def _csv_table(data: bytes):
    """(header, table) of a CSV with a header, every column a string, empty fields null (Spark's defaults); None when quoted.

    Spark's quote and escape rules differ from pyarrow's, so a file with a '"' goes to Spark. Rows with
    fewer or more fields than the header fail here (Spark pads or drops them) and go to Spark too.
    """
    from pyarrow import csv

    first = next((line for line in data.splitlines() if line), None)
    if b'"' in data or first is None:
        return None
    names = [f"f{i}" for i in range(first.count(b",") + 1)]
    table = csv.read_csv(
        io.BytesIO(data),
        read_options=csv.ReadOptions(column_names=names),
        parse_options=csv.ParseOptions(quote_char=False),
        convert_options=csv.ConvertOptions(
            column_types={name: "string" for name in names}, strings_can_be_null=True, null_values=[""]
        ),
    )
    header = [table.column(name)[0].as_py() for name in names]
    if any(not name for name in header):
        return None  # Spark names an empty header _c<i>
    return header, table.slice(1).rename_columns(header)


def _parquet_table(data: bytes):
    """(every column's name, a table of the url and image_id columns)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(io.BytesIO(data)).names
    return names, pq.read_table(io.BytesIO(data), columns=[n for n in names if n.lower() in ("url", "image_id")])


def _from_driver(spark: SparkSession, uri: str, names: list[str], columns: dict[str, list]) -> Manifest:
    """The rows the driver read as a DataFrame (a local relation: no Spark job), with with_image_ids' ids."""
    import pandas as pd

    from jobs.session import session_conf

    if "url" not in columns:
        raise ManifestError(_no_url_column(uri, names))
    urls = columns["url"]
    ids = [image_id_of(given, url) for given, url in zip(columns.get("image_id", [None] * len(urls)), urls, strict=True)]
    frame = pd.DataFrame({"image_id": ids, "url": urls}, dtype=object)
    with session_conf(spark, "spark.sql.execution.arrow.pyspark.enabled", "true"):  # Arrow: no Python workers
        rows = spark.createDataFrame(frame, MANIFEST_COLUMNS)
    return Manifest(rows, rows_in=len(ids), unique_ids=len(set(ids)))


def _listed(spark: SparkSession, uri: str, fmt: str, settings):
    if fmt == "s3-prefix" and not uri.startswith("s3://"):
        raise ManifestError(f"{uri}: --manifest-format s3-prefix needs an s3://bucket/prefix/ URI (a local folder: folder)")
    if fmt == "folder" and _local_path(uri) is None:
        raise ManifestError(f"{uri}: --manifest-format folder needs a local path or file:// URI (S3: s3-prefix)")
    extensions = settings.extensions
    urls, stats = list_urls(spark, uri, fmt, extensions)
    if stats.kept == 0:
        raise ManifestError(
            f"{uri}: no images to tag ({stats.keys} entries listed, {stats.not_image} without an image extension "
            f"({', '.join(extensions)}), {stats.inventory_skipped} not current or delete markers)"
        )
    return Manifest(with_image_ids(urls, uri), stats)


def with_image_ids(raw: DataFrame, uri: str = "manifest") -> DataFrame:
    """Select (image_id, url); image_id defaults to a stable hash of the URL."""
    columns = {c.lower(): c for c in raw.columns}
    if "url" not in columns:
        raise ManifestError(_no_url_column(uri, raw.columns))
    url = F.col(columns["url"]).cast("string")
    if "image_id" in columns:
        given = F.nullif(F.trim(F.col(columns["image_id"]).cast("string")), F.lit(""))
        image_id = F.coalesce(given, image_id_column(url))
    else:
        image_id = image_id_column(url)
    return raw.select(image_id.alias("image_id"), url.alias("url"))


def _no_url_column(uri: str, columns: list[str]) -> str:
    return f"{uri} has no 'url' column (columns: {', '.join(columns) or 'none'})"
