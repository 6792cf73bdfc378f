"""Read stage: a manifest of image URLs (Parquet, CSV with header, or text) -> (image_id, url).

Every input row becomes exactly one output row, so nothing here filters rows except blank
lines and '#' comments in text manifests (they are not rows). A row without a URL stays
and is reported as an error by the fetch stage.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

FORMATS = ("auto", "parquet", "csv", "text")
IMAGE_ID_HEX_CHARS = 32


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the manifest and the problem."""


def stable_image_id(url: str) -> str:
    """The default image_id: the first 128 bits of sha256(url), hex. Same as `image_id_column`."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:IMAGE_ID_HEX_CHARS]


def image_id_column(url: Column) -> Column:
    return F.substring(F.sha2(F.coalesce(url, F.lit("")), 256), 1, IMAGE_ID_HEX_CHARS)


def detect_format(uri: str) -> str:
    path = uri.rstrip("/").lower()
    if path.endswith((".csv", ".csv.gz")):
        return "csv"
    if path.endswith((".txt", ".txt.gz", ".lst", ".urls")):
        return "text"
    return "parquet"  # .parquet files and dataset directories alike


def read_manifest(spark: SparkSession, uri: str, fmt: str = "auto") -> DataFrame:
    """Return a DataFrame with string columns image_id and url, one row per manifest row."""
    if fmt not in FORMATS:
        raise ManifestError(f"manifest format {fmt!r} is not one of {', '.join(FORMATS)}")
    fmt = detect_format(uri) if fmt == "auto" else fmt
    if fmt == "text":
        raw = spark.read.text(uri).select(F.trim("value").alias("url"))
        raw = raw.where((F.col("url") != "") & ~F.col("url").startswith("#"))
    elif fmt == "csv":
        raw = spark.read.option("header", True).csv(uri)
    else:
        raw = spark.read.parquet(uri)
    return with_image_ids(raw, uri)


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
