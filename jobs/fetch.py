"""Fetch stage: image bytes from s3://, http(s):// or file:// URLs.

Errors are classified: transient ones (throttling, 5xx, timeouts, connection resets) are
retried with capped exponential backoff and full jitter; permanent ones (404, 403, bad
URL, missing file) fail at once. Either way the caller gets a FetchError whose message
says what happened, whether it was permanent, and how many attempts were made.

http(s) fetches are guarded against SSRF: the host is resolved first and the request goes
to the checked address, so a manifest URL cannot reach the instance metadata service,
loopback or private networks unless the profile opens them (fetch.allowed_networks).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

from jobs.config import FetchSettings

REDIRECT_CODES = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
}


class FetchError(Exception):
    """A URL could not be fetched. `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class FetchResult:
    data: bytes
    attempts: int


# --- SSRF guard -------------------------------------------------------------------------


def is_blocked_address(address: str, allowed_networks: tuple[str, ...] = ()) -> bool:
    """True when an http(s) fetch must not connect to `address` (an IP literal)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in allowed_networks):
        return False
    return not ip.is_global or ip.is_multicast


def resolve_checked(host: str, port: int, allowed_networks: tuple[str, ...]) -> str:
    """Resolve `host` and return one address the guard allows, or raise FetchError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}", transient=True) from None
    addresses = [info[4][0] for info in infos]
    blocked = [a for a in addresses if is_blocked_address(a, allowed_networks)]
    if blocked:
        # Refuse if any answer is internal: a mixed answer is a classic rebinding trick.
        raise FetchError(
            f"refused: {host} resolves to non-public address {blocked[0]} "
            "(link-local, loopback or private; open it with fetch.allowed_networks)"
        )
    return addresses[0]


# --- transports -------------------------------------------------------------------------


def read_file(url: str, settings: FetchSettings) -> bytes:
    parts = urlsplit(url)
    path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(url)
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise FetchError(f"file URL with a remote host is not supported: {parts.netloc}")
    try:
        size = path.stat().st_size
        if size > settings.max_bytes:
            raise FetchError(f"file is {size} bytes, over fetch.max_bytes={settings.max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise FetchError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise FetchError(f"is a directory, not an image file: {path}") from None
    except PermissionError:
        raise FetchError(f"permission denied: {path}") from None


@functools.lru_cache(maxsize=8)
def _cached_s3_client(endpoint_url: str | None, connect_timeout: float, read_timeout: float, pool: int):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": 1, "mode": "standard"},  # retries are ours, counted and bounded
        max_pool_connections=pool,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def s3_client(settings: FetchSettings | None = None):
    """A process-wide S3 client (thread-safe); honours AWS_ENDPOINT_URL for emulators."""
    settings = settings or FetchSettings()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return _cached_s3_client(endpoint, settings.connect_timeout_s, settings.read_timeout_s, max(10, settings.threads))


def read_s3(url: str, settings: FetchSettings) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urlsplit(url)
    bucket, key = parts.netloc, url.split("/", 3)[3] if url.count("/") >= 3 else ""
    if not bucket or not key:
        raise FetchError(f"malformed S3 URL (expected s3://bucket/key): {url}")
    try:
        response = s3_client(settings).get_object(Bucket=bucket, Key=key)
        size = response.get("ContentLength") or 0
        if size > settings.max_bytes:
            raise FetchError(f"object is {size} bytes, over fetch.max_bytes={settings.max_bytes}")
        return response["Body"].read()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code", "Unknown"))
        if code.isdigit():  # HEAD-style answers carry no error body, only the status
            code = {"403": "AccessDenied", "404": "NotFound"}.get(code, f"HTTP{code}")
        transient = code in TRANSIENT_S3_CODES or (status is not None and status >= 500)
        raise FetchError(f"S3 {code} (HTTP {status}) for {url}", transient=transient) from None
    except BotoCoreError as exc:  # connection errors, timeouts: worth another try
        raise FetchError(f"S3 request failed for {url}: {exc}", transient=True) from None


@functools.lru_cache(maxsize=256)
def _pool(scheme: str, address: str, port: int, hostname: str, connect_timeout: float, read_timeout: float):
    import urllib3

    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    if scheme == "https":
        # Connect to the checked address but verify the certificate for the real name.
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=hostname,
            assert_hostname=hostname,
            maxsize=4,
            block=False,
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=4, block=False)


def _request_target(path: str, query: str) -> str:
    """Percent-encode spaces and non-ASCII (as UTF-8), keeping escapes already present."""
    safe = "/%:@!$&'()*+,;=-._~"
    target = quote(path or "/", safe=safe)
    return target + (f"?{quote(query, safe=safe + '?')}" if query else "")


def _http_get_once(url: str, settings: FetchSettings):
    import urllib3

    parts = urlsplit(url)
    if not parts.hostname:
        raise FetchError(f"malformed URL (no host): {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_checked(parts.hostname, port, tuple(settings.allowed_networks))
    pool = _pool(parts.scheme, address, port, parts.hostname, settings.connect_timeout_s, settings.read_timeout_s)
    target = _request_target(parts.path, parts.query)
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    try:
        response = pool.urlopen(
            "GET",
            target,
            headers={"Host": host_header, "User-Agent": "image-tagger/1"},
            redirect=False,
            preload_content=False,
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise FetchError(f"HTTP request failed for {url}: {type(exc).__name__}", transient=True) from None
    return response


def read_http(url: str, settings: FetchSettings) -> bytes:
    import urllib3

    for _ in range(MAX_REDIRECTS + 1):
        response = _http_get_once(url, settings)
        try:
            if response.status in REDIRECT_CODES and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                if urlsplit(url).scheme not in ("http", "https"):
                    raise FetchError(f"redirect to a non-http URL refused: {url}")
                continue
            if response.status != 200:
                reason = response.reason or ""
                raise FetchError(
                    f"HTTP {response.status} {reason}".strip() + f" for {url}", transient=response.status in TRANSIENT_HTTP
                )
            length = int(response.headers.get("Content-Length") or 0)
            if length > settings.max_bytes:
                raise FetchError(f"body is {length} bytes, over fetch.max_bytes={settings.max_bytes}")
            data = response.read(settings.max_bytes + 1)
            if len(data) > settings.max_bytes:
                raise FetchError(f"body is over fetch.max_bytes={settings.max_bytes}")
            return data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise FetchError(f"HTTP read failed for {url}: {type(exc).__name__}", transient=True) from None
        finally:
            response.release_conn()
    raise FetchError(f"too many redirects (>{MAX_REDIRECTS}) for {url}")


TRANSPORTS = {"s3": read_s3, "http": read_http, "https": read_http, "file": read_file, "": read_file}


# --- retries ------------------------------------------------------------------------------


def backoff_delay(attempt: int, settings: FetchSettings, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, initial * 2**(attempt-1)))."""
    ceiling = min(settings.backoff_max_s, settings.backoff_initial_s * (2 ** (attempt - 1)))
    return rng.uniform(0, ceiling)


def fetch(url: str, settings: FetchSettings, *, sleep=time.sleep, rng: random.Random | None = None) -> FetchResult:
    """Fetch one URL's bytes with bounded retries; raise FetchError with a clear message."""
    if not isinstance(url, str) or not url.strip():
        raise FetchError("empty URL")
    scheme = urlsplit(url).scheme.lower()
    transport = TRANSPORTS.get(scheme)
    if transport is None:
        raise FetchError(f"unsupported URL scheme {scheme!r} (use s3://, http(s):// or file://)")
    rng = rng or random.Random()
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return FetchResult(transport(url, settings), attempt)
        except FetchError as exc:
            if not exc.transient:
                raise FetchError(f"{exc} (permanent, {attempt} attempt{'s' * (attempt > 1)})") from None
            if attempt == settings.max_attempts:
                raise FetchError(f"{exc} (transient, gave up after {attempt} attempts)", transient=True) from None
            sleep(backoff_delay(attempt, settings, rng))
    raise AssertionError("unreachable")
