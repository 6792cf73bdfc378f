"""Read stage: a manifest of image URLs -> (image_id, url).

Spark reads Parquet, CSV with a header, or text. A manifest can also be listed from where the
images are (jobs/listing.py): an s3:// prefix, an S3 Inventory report's manifest.json, or a
local folder; those keep only image extensions (manifest.extensions) and never touch Hadoop.

Every input row becomes exactly one output row, so nothing here filters rows except blank
lines and '#' comments in text manifests (they are not rows). A row without a URL stays
and is reported as an error by the fetch stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.listing import ManifestError, list_urls  # listings raise ManifestError too: imports go one way

FORMATS = ("auto", "parquet", "csv", "text", "s3-prefix", "s3-inventory", "folder")
SPARK_FORMATS = ("parquet", "csv", "text")  # read by Spark itself (through Hadoop's filesystems)
IMAGE_ID_HEX_CHARS = 32


def stable_image_id(url: str) -> str:
    """The default image_id: the first 128 bits of sha256(url), hex. Same as `image_id_column`."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:IMAGE_ID_HEX_CHARS]


def image_id_column(url: Column) -> Column:
    return F.substring(F.sha2(F.coalesce(url, F.lit("")), 256), 1, IMAGE_ID_HEX_CHARS)


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

    settings: the profile's ManifestSettings (image extensions for listed manifests); defaults apply when None.
    """
    return open_manifest(spark, uri, fmt, settings)[0]


def open_manifest(spark: SparkSession, uri: str, fmt: str = "auto", settings=None):
    """(DataFrame of image_id and url, ListingStats or None): the stats say what a listing saw and skipped."""
    fmt = resolve_format(uri, fmt)
    if fmt == "text":
        raw = spark.read.text(uri).select(F.trim("value").alias("url"))
        raw = raw.where((F.col("url") != "") & ~F.col("url").startswith("#"))
    elif fmt == "csv":
        raw = spark.read.option("header", True).csv(uri)
    elif fmt == "parquet":
        raw = spark.read.parquet(uri)
    else:
        return _listed(spark, uri, fmt, settings)
    return with_image_ids(raw, uri), None


def _listed(spark: SparkSession, uri: str, fmt: str, settings):
    from jobs.config import ManifestSettings

    if fmt == "s3-prefix" and not uri.startswith("s3://"):
        raise ManifestError(f"{uri}: --manifest-format s3-prefix needs an s3://bucket/prefix/ URI (a local folder: folder)")
    if fmt == "folder" and _local_path(uri) is None:
        raise ManifestError(f"{uri}: --manifest-format folder needs a local path or file:// URI (S3: s3-prefix)")
    extensions = (settings or ManifestSettings()).extensions
    urls, stats = list_urls(spark, uri, fmt, extensions)
    if stats.kept == 0:
        raise ManifestError(
            f"{uri}: no images to tag ({stats.keys} entries listed, {stats.not_image} without an image extension "
            f"({', '.join(extensions)}), {stats.inventory_skipped} not current or delete markers)"
        )
    return with_image_ids(urls, uri), stats


def with_image_ids(raw: DataFrame, uri: str = "manifest") -> DataFrame:
    """Select (image_id, url); image_id defaults to a stable hash of the URL."""
    columns = {c.lower(): c for c in raw.columns}
    if "url" not in columns:
        raise ManifestError(f"{uri} has no 'url' column (columns: {', '.join(raw.columns) or 'none'})")
    url = F.col(columns["url"]).cast("string")
    if "image_id" in columns:
        given = F.nullif(F.trim(F.col(columns["image_id"]).cast("string")), F.lit(""))
        image_id = F.coalesce(given, image_id_column(url))
    else:
        image_id = image_id_column(url)
    return raw.select(image_id.alias("image_id"), url.alias("url"))
