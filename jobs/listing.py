"""Manifests from where the images are: an s3:// prefix, an S3 Inventory report, a local folder.

Each source becomes rows of `url`; jobs.manifest adds the image_id (first 32 hex of
sha256(url), as for any manifest row without one), so an image listed here gets the same id
as the same s3:// URL in a CSV manifest.

- s3:// prefix: the driver only splits the prefix into parts (a delimiter listing one or two
  levels deep, or key ranges by first characters when a level is too wide to enumerate), and
  the executors list the parts in parallel (list_objects_v2 page by page, transient errors
  retried with the fetch stage's capped backoff). URLs are
  `s3://bucket/key` with the key as S3 returns it (spaces and non-ASCII kept, not encoded).
- S3 Inventory: the driver reads manifest.json; each data file (CSV.gz, Parquet or ORC) is
  read by one executor task. CSV keys are URL-encoded by AWS and decoded with
  urllib.parse.unquote_plus ('+' is a space, '%2B' a plus); Parquet and ORC keys are plain.
  Rows that are not the current version (IsLatest false) or are delete markers are skipped
  and counted (`inventory_skipped`).
- local folder: walked recursively on the driver; URLs are file:// URIs (Path.as_uri()).

No Hadoop filesystem is involved: all S3 access goes through jobs.fetch.s3_client (which
honours AWS_ENDPOINT_URL), so this works in local mode as on EMR.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the manifest and the problem.

    Raised by listings and by jobs.manifest (which imports it from here, so imports go one way)."""


log = logging.getLogger(__name__)

# Boundaries for key-range parts, in S3's (UTF-8 byte = code point) order. Ranges between
# consecutive boundaries cover every possible key, whatever characters it holds.
SPLIT_CHARS = "".join(sorted("-._/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
INVENTORY_FORMATS = ("CSV", "Parquet", "ORC")


class ListingError(ManifestError):
    """A prefix, folder or inventory report cannot be listed (the CLI exits 2, as for any bad manifest)."""


@dataclass(frozen=True)
class Part:
    """Keys under `prefix` in (after, upto]: None means unbounded. direct: only keys right at this level."""

    prefix: str
    after: str | None = None
    upto: str | None = None
    direct: bool = False


@dataclass
class ListingStats:
    """What a listing saw. keys = kept + not_image (+ inventory_skipped for inventories)."""

    source: str
    parts: int = 0
    keys: int = 0
    kept: int = 0
    not_image: int = 0
    inventory_skipped: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.keys / self.seconds if self.seconds > 0 else 0.0
        return (
            f"listed {self.source}: {self.parts} parts, {self.keys} entries, {self.kept} images kept, "
            f"{self.not_image} not images (extension), inventory_skipped {self.inventory_skipped} "
            f"(not current / delete markers), {self.seconds:.1f}s ({rate:.0f} entries/s)"
        )


def is_image(name: str, extensions: tuple[str, ...]) -> bool:
    """Case-insensitive extension check; `extensions` must be lower-case ('.jpg')."""
    return name.lower().endswith(extensions)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ListingError(f"{uri}: expected s3://bucket/prefix/")
    return parts.netloc, uri.split("/", 3)[3] if uri.count("/") >= 3 else ""


# --- s3:// prefix ----------------------------------------------------------------------------


def list_pages(client, *, attempts: int = 5, sleep=time.sleep, rng: random.Random | None = None, **request) -> Iterator[dict]:
    """list_objects_v2 pages, following continuation tokens; throttling, 5xx and connection errors
    are retried (capped exponential backoff with full jitter, as in jobs.fetch), others raise ListingError."""
    from botocore.exceptions import BotoCoreError, ClientError

    from jobs.config import FetchSettings
    from jobs.fetch import TRANSIENT_S3_CODES, backoff_delay

    rng, settings, token = rng or random.Random(), FetchSettings(), None
    while True:
        call = {**request, **({"ContinuationToken": token} if token else {})}
        for attempt in range(1, attempts + 1):
            try:
                page = client.list_objects_v2(**call)
                break
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                transient, why = code in TRANSIENT_S3_CODES or status >= 500, f"S3 {code} (HTTP {status})"
            except BotoCoreError as exc:
                transient, why = True, f"S3 request failed ({exc})"
            if not transient or attempt == attempts:
                raise ListingError(
                    f"listing s3://{request.get('Bucket')}/{request.get('Prefix', '')}: {why}, "
                    f"{attempt} attempt{'s' * (attempt > 1)}"
                )
            sleep(backoff_delay(attempt, settings, rng))
        yield page
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def plan_prefix_parts(
    client, bucket: str, prefix: str, *, levels: int = 2, max_driver_pages: int = 5, page_size: int = 1000
) -> list[Part]:
    """Split a prefix into parts the executors list independently; together they cover it exactly once.

    Each level is one delimiter ('/') listing per prefix on the driver, at most max_driver_pages
    pages: its common prefixes become parts (or are split one level further), its own keys one
    `direct` part. A level too wide to enumerate that way (a flat prefix of millions of keys)
    is split into key ranges by the next character instead, without listing it.
    """
    parts: list[Part] = []
    frontier = [prefix]
    for level in range(levels):
        deeper = []
        for p in frontier:
            children, has_keys, complete = _delimiter_level(client, bucket, p, max_driver_pages, page_size)
            if not complete:
                parts.extend(range_parts(p))
                continue
            if has_keys:
                parts.append(Part(p, direct=True))
            if level + 1 < levels:
                deeper.extend(children)
            else:
                parts.extend(Part(c) for c in children)
        frontier = deeper
    return parts


def _delimiter_level(client, bucket: str, prefix: str, max_pages: int, page_size: int) -> tuple[list[str], bool, bool]:
    children: list[str] = []
    has_keys = False
    pages = list_pages(client, Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=page_size)
    for number, page in enumerate(pages, start=1):
        children.extend(c["Prefix"] for c in page.get("CommonPrefixes", []))
        has_keys = has_keys or bool(page.get("Contents"))
        if number >= max_pages and page.get("IsTruncated"):
            return children, has_keys, False
    return children, has_keys, True


def range_parts(prefix: str) -> list[Part]:
    """Key ranges (None, p+c0], (p+c0, p+c1], ..., (p+cN, None) under prefix p: every key in exactly one."""
    bounds = [prefix + c for c in SPLIT_CHARS]
    edges = [None, *bounds, None]
    return [Part(prefix, after=edges[i], upto=edges[i + 1]) for i in range(len(edges) - 1)]


def list_part(client, bucket: str, part: Part, page_size: int = 1000) -> Iterator[str]:
    """The keys of one part, in S3 order (runs on an executor)."""
    kwargs = {"Bucket": bucket, "Prefix": part.prefix, "MaxKeys": page_size}
    if part.direct:
        kwargs["Delimiter"] = "/"
    if part.after is not None:
        kwargs["StartAfter"] = part.after
    for page in list_pages(client, **kwargs):
        for item in page.get("Contents", []):
            key = item["Key"]
            if part.upto is not None and key > part.upto:
                return
            yield key


def prefix_rows(bucket: str, parts: Iterable[Part], extensions: tuple[str, ...], page_size: int = 1000) -> Iterator[tuple]:
    """Executor side: (url, None) per image key, then one (None, counts) row with what was dropped."""
    from jobs.fetch import s3_client

    client = s3_client()
    keys = not_image = 0
    for part in parts:
        for key in list_part(client, bucket, part, page_size):
            keys += 1
            if is_image(key, extensions):
                yield f"s3://{bucket}/{key}", None
            else:
                not_image += 1
    yield None, {"keys": keys, "not_image": not_image, "inventory_skipped": 0}


# --- S3 Inventory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    source_bucket: str
    destination_bucket: str
    file_format: str
    fields: tuple[str, ...]
    files: tuple[str, ...]


def read_bytes(uri: str) -> bytes:
    """Bytes of a local path, file:// URI or s3:// object (the project's S3 client)."""
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from jobs.fetch import s3_client

        bucket, key = split_s3_uri(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise ListingError(f"cannot read {uri}: {exc}") from None
    path = Path(unquote(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ListingError(f"cannot read {uri}: {exc.strerror or exc}") from None


def parse_inventory_manifest(text: bytes | str, uri: str = "manifest.json") -> Inventory:
    """Validate an S3 Inventory manifest.json (AWS's layout) and return what the job needs."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ListingError(f"{uri} is not an S3 Inventory manifest.json: not JSON ({exc})") from None
    missing = [
        k
        for k in ("sourceBucket", "destinationBucket", "fileFormat", "fileSchema", "files")
        if not isinstance(doc, dict) or k not in doc
    ]
    if missing:
        raise ListingError(f"{uri} is not an S3 Inventory manifest.json: it lacks {', '.join(missing)}")
    fmt = {f.lower(): f for f in INVENTORY_FORMATS}.get(str(doc["fileFormat"]).lower())
    if fmt is None:
        raise ListingError(f"{uri}: fileFormat {doc['fileFormat']!r} is not one of {', '.join(INVENTORY_FORMATS)}")
    # CSV: the field names, in order ("Bucket, Key, ..."). Parquet / ORC: the files' own schema
    # (columns bucket, key, is_latest, ...), described there as a Parquet message / ORC struct.
    fields = tuple(f.strip() for f in str(doc["fileSchema"]).split(","))
    if fmt == "CSV" and "key" not in {_column_name(f) for f in fields}:
        raise ListingError(f"{uri}: fileSchema has no Key field ({doc['fileSchema']})")
    files = doc["files"]
    if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("key") for f in files):
        raise ListingError(f"{uri}: files must be a non-empty list of {{key, size, MD5checksum}}")
    destination = str(doc["destinationBucket"])
    destination = destination.rsplit(":", 1)[-1] if destination.startswith("arn:") else destination
    return Inventory(str(doc["sourceBucket"]), destination, fmt, fields, tuple(f["key"] for f in files))


def _column_name(name: str) -> str:
    """CSV's IsLatest and Parquet/ORC's is_latest alike -> islatest."""
    return name.replace("_", "").lower()


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def inventory_table(data: bytes, inventory: Inventory):
    """One data file -> a pyarrow Table with the schema's field names (CSV fields all strings)."""
    import pyarrow as pa

    if inventory.file_format == "CSV":
        from pyarrow import csv

        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        return csv.read_csv(
            io.BytesIO(raw),
            read_options=csv.ReadOptions(column_names=list(inventory.fields)),
            convert_options=csv.ConvertOptions(
                column_types={f: pa.string() for f in inventory.fields}, strings_can_be_null=False
            ),
        )
    if inventory.file_format == "Parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data))
    from pyarrow import orc

    return orc.read_table(io.BytesIO(data))


def inventory_rows(files: Iterable[str], inventory: Inventory, extensions: tuple[str, ...]) -> Iterator[tuple]:
    """Executor side: (url, None) per current image object, then one (None, counts) row."""
    keys = not_image = skipped = 0
    for file_key in files:
        table = inventory_table(read_bytes(f"s3://{inventory.destination_bucket}/{file_key}"), inventory)
        columns = {_column_name(name): name for name in table.column_names}
        get = {
            f: table.column(columns[_column_name(f)]).to_pylist() if _column_name(f) in columns else None
            for f in ("Bucket", "Key", "IsLatest", "IsDeleteMarker")
        }
        if get["Key"] is None:
            raise ListingError(f"inventory data file {file_key} has no Key column")
        for i, key in enumerate(get["Key"]):
            keys += 1
            latest = get["IsLatest"][i] if get["IsLatest"] is not None else True
            deleted = get["IsDeleteMarker"][i] if get["IsDeleteMarker"] is not None else False
            if (latest is not None and not _truthy(latest)) or _truthy(deleted):
                skipped += 1
                continue
            if inventory.file_format == "CSV":
                key = unquote_plus(key)  # AWS URL-encodes CSV keys only
            if not is_image(key, extensions):
                not_image += 1
                continue
            bucket = get["Bucket"][i] if get["Bucket"] is not None else inventory.source_bucket
            yield f"s3://{bucket}/{key}", None
    yield None, {"keys": keys, "not_image": not_image, "inventory_skipped": skipped}


# --- local folder ---------------------------------------------------------------------------


def local_folder(uri: str) -> Path:
    return Path(unquote(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)


def folder_files(root: Path) -> list[str]:
    """Every file under root, recursively (symlinked folders are not followed), sorted."""
    if not root.is_dir():
        raise ListingError(f"{root}: not a folder")
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)


# --- Spark ---------------------------------------------------------------------------------


def _driver_listing(client, bucket: str, prefix: str, max_pages: int, page_size: int) -> list[str] | None:
    """All keys under prefix when they fit in max_pages pages (a small prefix needs no executors), else None."""
    if max_pages <= 0:
        return None
    keys = []
    pages = list_pages(client, Bucket=bucket, Prefix=prefix, MaxKeys=page_size)
    for number, page in enumerate(pages, start=1):
        keys.extend(item["Key"] for item in page.get("Contents", []))
        if number >= max_pages and page.get("IsTruncated"):
            return None
    return keys


def _driver_rows(keys: list[str], to_url, exts: tuple[str, ...]) -> tuple[list[tuple], int]:
    urls = [to_url(k) for k in keys if is_image(k, exts)]
    rows = [(u, None) for u in urls] + [(None, {"keys": len(keys), "not_image": len(keys) - len(urls), "inventory_skipped": 0})]
    return rows, max(1, min(len(urls) // 10_000, 64))


def list_urls(
    spark, uri: str, fmt: str, extensions: Iterable[str], *, levels: int = 2, max_driver_pages: int = 5, page_size: int = 1000
):
    """Return (DataFrame of `url`, ListingStats). The listing runs once: the rows are persisted.

    An s3:// prefix of at most max_driver_pages pages (5,000 keys) is listed on the driver in one
    loop; a larger one is split (plan_prefix_parts) and listed on the executors.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    exts = tuple(e.lower() for e in extensions)
    started = time.perf_counter()
    stats = ListingStats(uri)
    sc = spark.sparkContext
    if fmt == "s3-prefix":
        from jobs.fetch import s3_client

        bucket, prefix = split_s3_uri(uri)
        client = s3_client()
        small = _driver_listing(client, bucket, prefix, max_driver_pages, page_size)
        if small is not None:
            stats.parts = 1
            rdd = sc.parallelize(*_driver_rows(small, lambda k: f"s3://{bucket}/{k}", exts))
        else:
            parts = plan_prefix_parts(
                client, bucket, prefix, levels=levels, max_driver_pages=max(1, max_driver_pages), page_size=page_size
            )
            stats.parts = len(parts)
            slices = max(1, min(len(parts), sc.defaultParallelism * 4))
            rdd = sc.parallelize(parts, slices).mapPartitions(lambda ps: prefix_rows(bucket, ps, exts, page_size))
    elif fmt == "s3-inventory":
        inventory = parse_inventory_manifest(read_bytes(uri), uri)
        stats.parts = len(inventory.files)
        rdd = sc.parallelize(inventory.files, len(inventory.files)).mapPartitions(
            lambda files: inventory_rows(files, inventory, exts)
        )
    elif fmt == "folder":
        files = folder_files(local_folder(uri))
        stats.parts = 1
        rdd = sc.parallelize(*_driver_rows(files, lambda f: Path(f).absolute().as_uri(), exts))
    else:
        raise ListingError(f"{fmt!r} is not a listing format")
    rows = spark.createDataFrame(rdd, "url string, counts map<string,bigint>").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = rows.agg(
            F.count("url").alias("kept"),
            *(F.sum(F.col("counts")[k]).alias(k) for k in ("keys", "not_image", "inventory_skipped")),
        ).first()
    except Exception as exc:  # an executor's error (pyspark PythonException, Py4JJavaError): name its cause
        lines = [line.strip() for line in str(exc).splitlines() if re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", line.strip())]
        raise ListingError(f"listing {uri} failed: {lines[-1] if lines else type(exc).__name__}") from None
    stats.kept = int(totals["kept"])
    stats.keys = int(totals["keys"] or 0)
    stats.not_image = int(totals["not_image"] or 0)
    stats.inventory_skipped = int(totals["inventory_skipped"] or 0)
    stats.seconds = time.perf_counter() - started
    log.info("%s", stats.line())
    return rows.where(F.col("url").isNotNull()).select("url"), stats
