"""Manifests listed from where the images are: an s3:// prefix, an S3 Inventory report, a local folder."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import load_settings
from jobs.listing import (
    Part,
    inventory_rows,
    list_pages,
    list_part,
    list_urls,
    parse_inventory_manifest,
    plan_prefix_parts,
    range_parts,
)
from jobs.manifest import ManifestError, detect_format, open_manifest, read_manifest, spark_reads, stable_image_id

REPO = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
EXTS = tuple(load_settings().manifest.extensions)
ODD_KEYS = [
    "odd/a b.jpg",
    "odd/café ünïcode.PNG",
    "odd/plus+sign.jpeg",
    "odd/日本/写真.webp",
    "odd/~tilde.gif",
    "odd/UPPER.JPG",
    "odd/notes.txt",
    "odd/dir-marker/",
    "odd/Z.tiff",
]


@pytest.fixture(scope="module")
def s3(aws_endpoint):
    return boto3.client("s3", endpoint_url=aws_endpoint)


@pytest.fixture(scope="module")
def photo_bucket(s3):
    """'big/' holds 3000 images in 100 folders two levels deep, plus non-images; 'odd/' awkward names."""
    s3.create_bucket(Bucket="listing")
    keys = [f"big/{a:02d}/{b:02d}/img-{n:03d}.jpg" for a in range(10) for b in range(10) for n in range(30)]
    keys += [f"big/{a:02d}/readme.txt" for a in range(10)] + ["big/top.JPG", "big/manifest.csv"]
    keys += ODD_KEYS
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="listing", Key=k, Body=b"x"), keys))
    return "listing"


def _all_keys(s3, bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


# --- pure functions -----------------------------------------------------------------------------


def test_auto_detection_and_which_manifests_spark_reads(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    (tmp_path / "ds.parquet").mkdir()
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "part-0.parquet").write_bytes(b"")
    assert detect_format("s3://b/photos/") == "s3-prefix"
    assert detect_format("s3://b/photos") == "parquet"
    assert detect_format("s3://b/manifest.parquet/") == "parquet"
    assert detect_format("s3://inv/src/cfg/2026-11-25T01-00Z/manifest.json") == "s3-inventory"
    assert detect_format(str(tmp_path / "inv" / "manifest.json")) == "s3-inventory"
    assert detect_format((tmp_path / "photos").as_uri() + "/") == "folder"
    assert detect_format(str(tmp_path / "photos")) == "folder"
    assert detect_format(str(tmp_path / "dataset")) == "parquet"  # a Parquet dataset directory stays one
    assert detect_format(str(tmp_path / "dataset") + "/") == "parquet"  # with a trailing slash too
    assert detect_format(str(tmp_path / "ds.parquet") + "/") == "parquet"
    assert detect_format("s3://b/m.csv") == "csv" and detect_format("/x/urls.txt") == "text"
    assert spark_reads("s3://b/m.csv") and not spark_reads("s3://b/photos/") and not spark_reads("s3://b/m.json", "s3-inventory")


def test_key_ranges_cover_every_key_once(s3, photo_bucket):
    """A level too wide for the driver is split into key ranges: each key in exactly one part."""
    expected = _all_keys(s3, photo_bucket, "odd/") + _all_keys(s3, photo_bucket, "big/00/")
    for prefix in ("odd/", "big/00/"):
        parts = plan_prefix_parts(s3, photo_bucket, prefix, max_driver_pages=1, page_size=2)
        assert all(not p.direct for p in parts) and len(parts) == len(range_parts(prefix))
    listed = [k for prefix in ("odd/", "big/00/") for p in range_parts(prefix) for k in list_part(s3, photo_bucket, p, 7)]
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))


def test_delimiter_split_plans_one_part_per_folder(s3, photo_bucket):
    parts = plan_prefix_parts(s3, photo_bucket, "big/")
    assert Part("big/", direct=True) in parts and Part("big/03/", direct=True) in parts
    assert Part("big/03/07/") in parts and len(parts) == 1 + 10 + 100
    listed = [k for p in parts for k in list_part(s3, photo_bucket, p)]
    assert sorted(listed) == sorted(_all_keys(s3, photo_bucket, "big/"))


def test_listing_retries_throttling_and_names_a_permanent_error():
    from botocore.exceptions import ClientError

    def error(code, status):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")

    class Flaky:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), []

        def list_objects_v2(self, **request):
            self.calls.append(request)
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    pages = [
        {"Contents": [{"Key": "a.jpg"}], "IsTruncated": True, "NextContinuationToken": "t1"},
        {"Contents": [{"Key": "b.jpg"}], "IsTruncated": False},
    ]
    client, sleeps = Flaky([error("SlowDown", 503), pages[0], error("InternalError", 500), pages[1]]), []
    assert list(list_pages(client, sleep=sleeps.append, Bucket="b", Prefix="p/")) == pages
    assert len(sleeps) == 2 and client.calls[-1]["ContinuationToken"] == "t1"
    with pytest.raises(ManifestError, match=r"listing s3://b/p/: S3 AccessDenied \(HTTP 403\), 1 attempt$"):
        list(list_pages(Flaky([error("AccessDenied", 403)]), sleep=sleeps.append, Bucket="b", Prefix="p/"))
    with pytest.raises(ManifestError, match="S3 SlowDown .*, 2 attempts"):
        list(list_pages(Flaky([error("SlowDown", 503)] * 2), attempts=2, sleep=sleeps.append, Bucket="b", Prefix="p/"))


def _inventory_table(rows):
    return pa.table(
        {
            "bucket": [r[0] for r in rows],
            "key": [r[1] for r in rows],
            "version_id": [r[2] for r in rows],
            "is_latest": [r[3] for r in rows],
            "is_delete_marker": [r[4] for r in rows],
            "size": pa.array([r[5] for r in rows], pa.int64()),
        }
    )


INVENTORY_ROWS = [  # bucket, key, version, is_latest, is_delete_marker, size
    ("src", "shop/a b.jpg", "v1", True, False, 10),
    ("src", "shop/café ü.png", "v1", True, False, 11),
    ("src", "shop/plus+sign.JPG", "v2", True, False, 12),
    ("src", "shop/plus+sign.JPG", "v1", False, False, 12),  # an older version
    ("src", "shop/gone.jpg", "v3", True, True, 0),  # a delete marker
    ("src", "shop/gone.jpg", "v2", False, False, 9),
    ("src", "shop/readme.txt", "v1", True, False, 5),
    ("src", "shop/日本/写真.webp", "v1", True, False, 7),
]
EXPECTED_URLS = {
    "s3://src/shop/a b.jpg",
    "s3://src/shop/café ü.png",
    "s3://src/shop/plus+sign.JPG",
    "s3://src/shop/日本/写真.webp",
}


def _csv_gz(rows) -> bytes:
    """As AWS writes it: no header, every field quoted, the key URL-encoded, gzipped."""

    def field(v):
        return "true" if v is True else "false" if v is False else str(v)

    lines = [",".join(f'"{field(quote_plus(v, safe="/") if i == 1 else v)}"' for i, v in enumerate(r)) for r in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))


def _write_inventory(s3, fmt: str, tag: str) -> str:
    """An inventory report in the destination bucket; returns its manifest.json's s3:// URI."""
    s3.create_bucket(Bucket="inventory-dest") if "inventory-dest" not in [
        b["Name"] for b in s3.list_buckets()["Buckets"]
    ] else None
    halves = [INVENTORY_ROWS[:4], INVENTORY_ROWS[4:]]  # two data files: two tasks
    files = []
    for i, rows in enumerate(halves):
        if fmt == "CSV":
            body, ext = _csv_gz(rows), "csv.gz"
        else:
            sink = io.BytesIO()
            if fmt == "Parquet":
                pq.write_table(_inventory_table(rows), sink)
            else:
                from pyarrow import orc

                orc.write_table(_inventory_table(rows), sink)
            body, ext = sink.getvalue(), fmt.lower()
        key = f"src/images/{tag}/data/file-{i}.{ext}"
        s3.put_object(Bucket="inventory-dest", Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": "0" * 32})
    manifest = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inventory-dest",
        "version": "2016-11-30",
        "creationTimestamp": "1764032400000",
        "fileFormat": fmt,
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size",
        "files": files,
    }
    if fmt == "Parquet":  # AWS describes Parquet and ORC files by their own schema
        manifest["fileSchema"] = (
            "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
            "optional binary version_id (STRING); optional boolean is_latest; "
            "optional boolean is_delete_marker; optional int64 size; }"
        )
    elif fmt == "ORC":
        manifest["fileSchema"] = (
            "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint>"
        )
    key = f"src/images/{tag}/2026-11-25T01-00Z/manifest.json"
    s3.put_object(Bucket="inventory-dest", Key=key, Body=json.dumps(manifest).encode())
    return f"s3://inventory-dest/{key}"


def test_inventory_manifest_is_validated():
    good = {
        "sourceBucket": "s",
        "destinationBucket": "arn:aws:s3:::d",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "x/data/1.csv.gz", "size": 1, "MD5checksum": "m"}],
    }
    inventory = parse_inventory_manifest(json.dumps(good))
    assert inventory.destination_bucket == "d" and inventory.fields == ("Bucket", "Key", "Size")
    with pytest.raises(ManifestError, match="not JSON"):
        parse_inventory_manifest("{oops")
    with pytest.raises(ManifestError, match="lacks files"):
        parse_inventory_manifest(json.dumps({k: v for k, v in good.items() if k != "files"}))
    with pytest.raises(ManifestError, match="fileFormat 'JSON' is not one of CSV, Parquet, ORC"):
        parse_inventory_manifest(json.dumps(good | {"fileFormat": "JSON"}))
    with pytest.raises(ManifestError, match="no Key field"):
        parse_inventory_manifest(json.dumps(good | {"fileSchema": "Bucket, Size"}))


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_inventory_rows_decode_keys_and_skip_old_versions_and_delete_markers(s3, fmt):
    inventory = parse_inventory_manifest(
        s3.get_object(Bucket="inventory-dest", Key=_write_inventory(s3, fmt, fmt).split("/", 3)[3])["Body"].read()
    )
    rows = list(inventory_rows(inventory.files, inventory, EXTS))
    urls = [u for u, _ in rows if u is not None]
    assert set(urls) == EXPECTED_URLS and len(urls) == len(EXPECTED_URLS)
    assert rows[-1] == (None, {"keys": 8, "not_image": 1, "inventory_skipped": 3})


# --- on Spark -------------------------------------------------------------------------------------


@pytest.mark.spark
def test_prefix_listing_thousands_of_keys_on_the_driver_or_split_on_the_executors(spark, s3, photo_bucket):
    started = time.perf_counter()
    opened = open_manifest(spark, f"s3://{photo_bucket}/big/")  # 3012 keys: under 5 pages, one driver loop
    rows, stats = opened.rows.collect(), opened.listing
    driver_rate = stats.keys / (time.perf_counter() - started)
    assert stats.parts == 1 and stats.keys == 3012 and stats.kept == 3001 and stats.not_image == 11
    assert len(rows) == 3001 and len({r.url for r in rows}) == 3001
    assert all(r.image_id == stable_image_id(r.url) for r in rows)
    assert "s3://listing/big/top.JPG" in {r.url for r in rows}  # case-insensitive extensions

    started = time.perf_counter()
    # Forced to split (the 111-part plan two levels deep is checked above without Spark; one level keeps this fast).
    split, stats = list_urls(spark, f"s3://{photo_bucket}/big/", "s3-prefix", EXTS, max_driver_pages=0, levels=1)
    urls = [r.url for r in split.collect()]
    split_rate = stats.keys / (time.perf_counter() - started)
    assert stats.parts == 11 and (stats.keys, stats.kept, stats.not_image) == (3012, 3001, 11)
    assert sorted(urls) == sorted(r.url for r in rows)
    print(
        f"\nlisting 3012 keys on the emulator: one driver loop {driver_rate:.0f} keys/s; "
        f"split into {stats.parts} parts on the executors {split_rate:.0f} keys/s"
    )


@pytest.mark.spark
def test_prefix_keys_with_spaces_and_non_ascii_same_id_as_a_csv_manifest(spark, s3, photo_bucket, tmp_path):
    listed = {r.url: r.image_id for r in read_manifest(spark, f"s3://{photo_bucket}/odd/", "s3-prefix").collect()}
    images = [k for k in ODD_KEYS if not k.endswith(("/", ".txt"))]
    assert set(listed) == {f"s3://listing/{k}" for k in images}
    csv = tmp_path / "m.csv"
    csv.write_text("url\n" + "".join(f'"{u}"\n' for u in listed), encoding="utf-8")
    from_csv = {r.url: r.image_id for r in read_manifest(spark, str(csv)).collect()}
    assert from_csv == listed
    only_jpeg = read_manifest(
        spark, f"s3://{photo_bucket}/odd/", settings=load_settings(overrides=["manifest.extensions=[.jpeg]"]).manifest
    ).collect()
    assert [r.url for r in only_jpeg] == ["s3://listing/odd/plus+sign.jpeg"]


@pytest.mark.spark
@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_inventory_report_read_one_task_per_data_file(spark, s3, fmt):
    uri = _write_inventory(s3, fmt, f"spark-{fmt}")
    opened = open_manifest(spark, uri)  # auto: manifest.json
    rows, stats = opened.rows.collect(), opened.listing
    assert {r.url for r in rows} == EXPECTED_URLS and len(rows) == len(EXPECTED_URLS)
    assert all(r.image_id == stable_image_id(r.url) for r in rows)
    assert (stats.parts, stats.keys, stats.not_image, stats.inventory_skipped) == (2, 8, 1, 3)


@pytest.mark.spark
def test_local_inventory_manifest_json_and_bad_reports(spark, s3, tmp_path):
    uri = _write_inventory(s3, "CSV", "local")
    local = tmp_path / "manifest.json"
    local.write_bytes(s3.get_object(Bucket="inventory-dest", Key=uri.split("/", 3)[3])["Body"].read())
    assert {r.url for r in read_manifest(spark, str(local)).collect()} == EXPECTED_URLS
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"files": []}')
    with pytest.raises(ManifestError, match="is not an S3 Inventory manifest.json: it lacks sourceBucket"):
        read_manifest(spark, str(tmp_path / "bad" / "manifest.json"))
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(spark, str(tmp_path / "none" / "manifest.json"))
    missing = json.loads(local.read_text()) | {"files": [{"key": "src/none.csv.gz", "size": 1, "MD5checksum": "m"}]}
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(missing))
    with pytest.raises(ManifestError, match="listing .* failed: .*cannot read s3://inventory-dest/src/none.csv.gz"):
        read_manifest(spark, str(tmp_path / "bad" / "manifest.json"))


@pytest.mark.spark
def test_prefix_without_images_is_a_clear_error(spark, s3, photo_bucket):
    with pytest.raises(ManifestError, match=r"s3://listing/nothing/: no images to tag \(0 entries listed"):
        read_manifest(spark, f"s3://{photo_bucket}/nothing/")
    s3.put_object(Bucket=photo_bucket, Key="docs/a.txt", Body=b"x")
    with pytest.raises(ManifestError, match=r"no images to tag \(1 entries listed, 1 without an image extension"):
        read_manifest(spark, f"s3://{photo_bucket}/docs/")
    with pytest.raises(ManifestError, match="needs an s3://bucket/prefix/"):
        read_manifest(spark, "/tmp/x/", "s3-prefix")


@pytest.mark.spark
def test_local_folder_recursive_with_the_extension_filter(spark, tmp_path):
    root = tmp_path / "my photos"
    for name in (
        "a.jpg",
        "sub/b.PNG",
        "sub/deeper/c d.jpeg",
        "sub/deeper/é.webp",
        "notes.txt",
        "sub/.DS_Store",
        "sub/deeper/raw.cr2",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    expected = {(root / n).as_uri() for n in ("a.jpg", "sub/b.PNG", "sub/deeper/c d.jpeg", "sub/deeper/é.webp")}
    for uri in (root.as_uri() + "/", str(root)):
        opened = open_manifest(spark, uri)
        rows, stats = opened.rows.collect(), opened.listing
        assert {r.url for r in rows} == expected and (stats.keys, stats.not_image) == (7, 3)
        assert all(r.image_id == stable_image_id(r.url) for r in rows)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no images to tag"):
        read_manifest(spark, str(tmp_path / "empty") + "/")


# --- small manifest files read on the driver -------------------------------------------------------

DRIVER_READ = {  # name -> (text, read on the driver): the driver reads what both readers read alike
    "m.csv": ("image_id,url,extra\ni1,file:///x/1.jpg,5\n,s3://b/2 x.jpg,\n  i3 ,file:///x/3.jpg,\r\n\ti4,,\n\ni1,u5,7\n", True),
    "bom-upper.csv": ("\ufeffURL\nfile:///x/1.jpg\n\nfile:///x/2.jpg", True),
    "header-only.csv": ("image_id,url\n", True),
    "m.txt": ("# comment\nfile:///x/1.jpg\n\n  s3://bucket/2.jpg  \r\n\tfile:///t.jpg\r#x\rfile:///x/1.jpg\n", True),
    "quoted.csv": ('url\n"file:///q,1.jpg"\n""\n', False),  # Spark's quote rules are its own
    "ragged.csv": ("image_id,url\na\nb,u2,extra\n", False),  # Spark pads and drops fields
    "twice.csv": ("url,URL\nu1,u2\n", False),  # Spark renames the columns
    "latin1.txt": ("file:///caf\xe9.jpg\n".encode("latin-1"), False),  # not UTF-8
    "empty.csv": ("", False),
}
NO_URL_COLUMN = {"twice.csv": "url0, URL1", "empty.csv": "none"}


def _write_manifests(tmp_path) -> dict[str, bool]:
    on_driver = {}
    for name, (text, driver) in DRIVER_READ.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (tmp_path / name).write_bytes(data)
        on_driver[name] = driver
    table = pa.table({"URL": ["file:///p/1.jpg", None, "s3://b/p 2.jpg"], "image_id": ["p1", " ", None], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "m.parquet")
    pq.write_table(pa.table({"url": ["u1", "u2"], "image_id": [7, 7]}), tmp_path / "int-ids.parquet")
    on_driver |= {"m.parquet": True, "int-ids.parquet": False}  # Spark's cast decides how an int reads
    return on_driver


@pytest.mark.spark
def test_small_manifests_read_on_the_driver_give_spark_readers_rows(spark, tmp_path):
    from chispa import assert_df_equality

    from jobs.config import ManifestSettings

    spark_only = ManifestSettings(driver_read_max_bytes=0)
    for name, on_driver in _write_manifests(tmp_path).items():
        uri = str(tmp_path / name)
        if name in NO_URL_COLUMN:  # Spark's error, from either
            for settings in (None, spark_only):
                with pytest.raises(ManifestError, match=rf"{name} has no 'url' column \(columns: {NO_URL_COLUMN[name]}\)"):
                    open_manifest(spark, uri, settings=settings)
            continue
        opened, by_spark = open_manifest(spark, uri), open_manifest(spark, uri, settings=spark_only)
        assert (opened.rows_in is not None) == on_driver, name
        assert by_spark.rows_in is None and not by_spark.ids_unique
        assert_df_equality(opened.rows, by_spark.rows, ignore_row_order=True)
        if on_driver:
            ids = [r.image_id for r in by_spark.rows.collect()]
            assert (opened.rows_in, opened.unique_ids) == (len(ids), len(set(ids))), name
            assert opened.ids_unique == (len(ids) == len(set(ids)))
    assert not open_manifest(spark, str(tmp_path / "m.csv")).ids_unique  # i1 twice
    assert open_manifest(spark, str(tmp_path / "bom-upper.csv")).ids_unique
    too_big = ManifestSettings(driver_read_max_bytes=(tmp_path / "m.csv").stat().st_size - 1)
    assert open_manifest(spark, str(tmp_path / "m.csv"), settings=too_big).rows_in is None
    (tmp_path / "bad.csv").write_text("image,link\nx,y\n")
    for settings in (None, spark_only):
        with pytest.raises(ManifestError, match=r"bad.csv has no 'url' column \(columns: image, link\)"):
            read_manifest(spark, str(tmp_path / "bad.csv"), settings=settings)


@pytest.mark.e2e
def test_spark_submit_tags_a_folder_of_photos(tmp_path, photos, model_dir):
    folder = tmp_path / "holiday"
    (folder / "day two").mkdir(parents=True)
    shutil.copy(photos["coffee"], folder / "coffee.png")
    shutil.copy(photos["chelsea"], folder / "day two" / "chelsea cat.png")
    (folder / "notes.txt").write_text("not a photo")
    from jobs.spark_args import spark_submit_args

    settings = load_settings(overrides=["spark.master=local[2]"])
    command = [
        str(SPARK_SUBMIT),
        *spark_submit_args(settings),
        str(REPO / "jobs" / "tag_images.py"),
        "--manifest",
        folder.as_uri() + "/",
        "--output",
        str(tmp_path / "out"),
        "--set",
        "spark.master=local[2]",
        "--set",
        f"model.uri={model_dir}",
        "--set",
        "model.heads=[]",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "rows in     2" in result.stdout and "ok          2" in result.stdout
    by_url = {r["url"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert by_url[(folder / "coffee.png").as_uri()]["tags"][0]["label"] == "espresso"
    assert by_url[(folder / "day two" / "chelsea cat.png").as_uri()]["tags"][0]["label"] in {"tiger cat", "Egyptian cat", "tabby"}
