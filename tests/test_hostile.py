"""Hostile and broken input through the Spark job: exactly one row each, a useful message, no crash."""

import json

import boto3
import pytest
from PIL import Image

from jobs.config import load_settings
from jobs.infer import ModelBundle
from jobs.manifest import with_image_ids
from jobs.pipeline import tag_dataframe
from tests import image_factory as f
from tests.http_fixtures import Routes, start_server

pytestmark = pytest.mark.spark

OK = "ok"


@pytest.fixture(scope="module")
def hostile_manifest(tmp_path_factory, aws_endpoint):
    root = tmp_path_factory.mktemp("hostile")
    files = {
        "truncated.jpg": f.jpeg(300, 300)[:1500],
        "zero.jpg": b"",
        "bomb.png": f.bomb_png(20000),
        "deep16.png": f.png_16bit_grey(40000),
        "cmyk.jpg": f.encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        "palette.png": f.palette_png_with_transparency(),
        "image.webp": f.encode(f.gradient_rgb(), "WEBP"),
        "one-pixel.png": f.encode(Image.new("RGB", (1, 1)), "PNG"),
        "dir with space/ünïcödé name.jpg": f.jpeg(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    routes = Routes()
    routes.add("/page.jpg", (200, b"<!DOCTYPE html><html>Not Found</html>", {"Content-Type": "image/jpeg"}, 0))
    routes.add("/anim.gif", (200, f.animated_gif(), {}, 0))
    routes.add("/flaky.jpg", (500, b"busy", {}, 0), (200, f.jpeg(), {}, 0))
    routes.add("/stall.jpg", (200, f.jpeg(), {}, 3))
    routes.add("/a%20b/%C3%BC.jpg", (200, f.jpeg(), {}, 0))
    server = start_server(routes)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="hostile-bucket")
    s3.put_object(Bucket="hostile-bucket", Key="secret/x.jpg", Body=f.jpeg())
    s3.put_bucket_policy(
        Bucket="hostile-bucket",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::hostile-bucket/secret/*",
                    }
                ],
            }
        ),
    )

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    cases = {
        "truncated": ((root / "truncated.jpg").as_uri(), "decode: corrupt or truncated image"),
        "zero": ((root / "zero.jpg").as_uri(), "decode: empty body (0 bytes)"),
        "html": (f"{base}/page.jpg", "decode: not an image: the body is HTML"),
        "bomb": ((root / "bomb.png").as_uri(), "decode: image is 20000x20000 = 400000000 pixels"),
        "animated-gif": (f"{base}/anim.gif", OK),
        "png-16bit": ((root / "deep16.png").as_uri(), OK),
        "cmyk": ((root / "cmyk.jpg").as_uri(), OK),
        "palette-transparent": ((root / "palette.png").as_uri(), OK),
        "webp": ((root / "image.webp").as_uri(), OK),
        "one-pixel": ((root / "one-pixel.png").as_uri(), OK),
        "file-spaces-unicode": ((root / "dir with space/ünïcödé name.jpg").as_uri(), OK),
        "http-spaces-unicode": (f"{base}/a b/ü.jpg", OK),
        "unreachable": (f"http://127.0.0.1:{closed_port}/x.jpg", "fetch: HTTP request failed"),
        "500-then-ok": (f"{base}/flaky.jpg", OK),
        "stall": (f"{base}/stall.jpg", "fetch: HTTP request failed"),
        "s3-missing": ("s3://hostile-bucket/nothing.jpg", "fetch: S3 NoSuchKey (HTTP 404)"),
        "s3-denied": ("s3://hostile-bucket/secret/x.jpg", "fetch: S3 AccessDenied (HTTP 403)"),
        "metadata-service": (
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "fetch: refused: 169.254.169.254 resolves to non-public address",
        ),
        "no-url": (None, "fetch: empty URL"),
    }
    yield cases, routes
    server.shutdown()


def test_every_hostile_input_gives_one_row(spark, artifact, hostile_manifest):
    cases, routes = hostile_manifest
    manifest = with_image_ids(spark.createDataFrame([(k, u) for k, (u, _) in cases.items()], "image_id string, url string"))
    settings = load_settings(
        overrides=[
            "fetch.allowed_networks=[127.0.0.0/8]",
            "fetch.read_timeout_s=1",
            "fetch.max_attempts=2",
            "fetch.backoff_initial_s=0.05",
            "fetch.backoff_max_s=0.1",
        ]
    )
    rows = tag_dataframe(manifest.repartition(3), ModelBundle(artifact), settings).collect()
    assert sorted(r.image_id for r in rows) == sorted(cases)  # exactly one row each
    for row in rows:
        expected = cases[row.image_id][1]
        if expected == OK:
            assert row.status == "ok", (row.image_id, row.error)
            assert row.error is None and len(row.tags) == 5
        else:
            assert row.status == "error" and row.tags is None
            assert row.error.startswith(expected), (row.image_id, row.error)
    by_id = {r.image_id: r for r in rows}
    assert "permanent, 1 attempt" in by_id["s3-denied"].error
    assert "gave up after 2 attempts" in by_id["unreachable"].error
    assert "Timeout" in by_id["stall"].error
    assert routes.hits["/flaky.jpg"] == 2  # retried once, then tagged
