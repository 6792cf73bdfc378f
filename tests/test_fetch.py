import random
import socket

import pytest

from jobs.config import FetchSettings
from jobs.fetch import FetchError, backoff_delay, fetch, is_blocked_address
from tests.http_fixtures import LOOPBACK_ONLY, Routes, start_server


@pytest.fixture
def http():
    routes = Routes()
    server = start_server(routes)
    yield routes, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_file_url_with_percent_encoded_path(tmp_path):
    path = tmp_path / "a dir" / "ünï code.jpg"
    path.parent.mkdir()
    path.write_bytes(b"bytes")
    assert fetch(path.as_uri(), FetchSettings()).data == b"bytes"
    assert "%20" in path.as_uri()


def test_missing_file_is_permanent_and_says_so(tmp_path):
    with pytest.raises(FetchError, match=r"file not found: .*nope\.jpg \(permanent, 1 attempt\)"):
        fetch((tmp_path / "nope.jpg").as_uri(), FetchSettings())


def test_unsupported_scheme_and_empty_url():
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.invalid/x.jpg", FetchSettings())
    with pytest.raises(FetchError, match="empty URL"):
        fetch("", FetchSettings())
    with pytest.raises(FetchError, match="empty URL"):
        fetch(None, FetchSettings())


def test_file_over_size_limit(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"x" * 100)
    with pytest.raises(FetchError, match="over fetch.max_bytes=10"):
        fetch(path.as_uri(), FetchSettings(max_bytes=10))


def test_http_ok_and_404_not_retried(http):
    routes, base = http
    routes.add("/img.jpg", (200, b"jpegbytes", {}, 0))
    assert fetch(f"{base}/img.jpg", LOOPBACK_ONLY).data == b"jpegbytes"
    with pytest.raises(FetchError, match=r"HTTP 404 .*\(permanent, 1 attempt\)"):
        fetch(f"{base}/missing.jpg", LOOPBACK_ONLY)
    assert routes.hits["/missing.jpg"] == 1


def test_http_500_then_success_is_retried(http):
    routes, base = http
    routes.add("/flaky.jpg", (500, b"oops", {}, 0), (200, b"fine", {}, 0))
    result = fetch(f"{base}/flaky.jpg", LOOPBACK_ONLY)
    assert (result.data, result.attempts) == (b"fine", 2)


def test_http_503_gives_up_after_max_attempts(http):
    routes, base = http
    routes.add("/down.jpg", (503, b"busy", {}, 0))
    with pytest.raises(FetchError, match=r"HTTP 503 .*\(transient, gave up after 3 attempts\)"):
        fetch(f"{base}/down.jpg", LOOPBACK_ONLY)
    assert routes.hits["/down.jpg"] == 3


def test_http_stall_times_out(http):
    routes, base = http
    routes.add("/slow.jpg", (200, b"late", {}, 3))
    settings = FetchSettings(allowed_networks=["127.0.0.0/8"], max_attempts=1, read_timeout_s=0.3)
    with pytest.raises(FetchError, match=r"HTTP request failed .*Timeout.*gave up after 1 attempts"):
        fetch(f"{base}/slow.jpg", settings)


def test_http_redirect_followed_and_url_with_spaces(http):
    routes, base = http
    routes.add("/a%20b.jpg", (302, b"", {"Location": "/final.jpg"}, 0))
    routes.add("/final.jpg", (200, b"here", {}, 0))
    assert fetch(f"{base}/a b.jpg", LOOPBACK_ONLY).data == b"here"


def test_http_closed_port_is_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(FetchError, match="HTTP request failed .*gave up after 3 attempts"):
            fetch(f"http://127.0.0.1:{port}/x.jpg", LOOPBACK_ONLY)


def test_ssrf_guard_refuses_loopback_by_default(http):
    routes, base = http
    routes.add("/img.jpg", (200, b"secret", {}, 0))
    with pytest.raises(FetchError, match="refused: 127.0.0.1 resolves to non-public address"):
        fetch(f"{base}/img.jpg", FetchSettings())
    assert "/img.jpg" not in routes.hits  # never connected


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
    ],
)
def test_guard_blocks_internal_addresses(address):
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_guard_allows_public_addresses(address):
    assert not is_blocked_address(address)  # decided without connecting


def test_allowed_networks_open_a_range():
    assert not is_blocked_address("10.1.2.3", ("10.0.0.0/8",))
    assert is_blocked_address("169.254.169.254", ("10.0.0.0/8",))


def test_backoff_is_capped_exponential_with_jitter():
    settings = FetchSettings(backoff_initial_s=0.5, backoff_max_s=2.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 2.0)]:
        delays = [backoff_delay(attempt, settings, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole window


def test_retry_sleeps_between_attempts(http):
    routes, base = http
    routes.add("/flaky.jpg", (500, b"", {}, 0), (500, b"", {}, 0), (200, b"ok", {}, 0))
    sleeps = []
    fetch(f"{base}/flaky.jpg", LOOPBACK_ONLY, sleep=sleeps.append, rng=random.Random(0))
    assert len(sleeps) == 2


def test_s3_fetch_ok_missing_key_and_bucket(s3_bucket):
    settings = FetchSettings(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02)
    assert fetch(f"s3://{s3_bucket}/shop/coffee.png", settings).data[:4] == b"\x89PNG"
    assert fetch(f"s3://{s3_bucket}/shop/cat photo.png", settings).data[:4] == b"\x89PNG"
    with pytest.raises(FetchError, match=r"S3 NoSuchKey \(HTTP 404\) .*\(permanent, 1 attempt\)"):
        fetch(f"s3://{s3_bucket}/shop/nope.png", settings)
    with pytest.raises(FetchError, match=r"S3 NoSuchBucket .*permanent"):
        fetch("s3://no-such-bucket/x.png", settings)
    with pytest.raises(FetchError, match="malformed S3 URL"):
        fetch("s3://bucket-only", settings)
