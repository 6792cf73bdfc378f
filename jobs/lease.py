"""One writer per output at a time: a lease in OUTPUT/_image_tagger/ that a run holds while it works.

A run takes the lease before it plans, renews it every `timeout_s / 4` while it works and releases
it when it ends, whether it succeeds or fails. A second run on the same output is refused with a
message naming the holder (`LeaseHeld`). A lease whose holder stopped renewing it for `timeout_s`
(killed driver, lost cluster) is taken over by the next run, which says so. A holder that finds its
lease taken over, or that could not renew it for `timeout_s`, has lost it (`LeaseLost`) and must stop.

Every change of the lease is a compare-and-swap on a store, with no lock service:
- S3 (`s3://`, `s3a://`, `s3n://`): one object, `_image_tagger/lease.json`, written with S3's
  conditional writes: `PutObject` with `If-None-Match: *` to take a free lease, with `If-Match` on the
  ETag read to renew or take over, `DeleteObject` with `If-Match` to release. Of two writers with
  the same ETag, S3 lets one win and answers the other 412 (or 409).
- A file system (local paths, `hdfs://`): numbered files `_image_tagger/lease/<n>.json`; the lease
  is the highest. Writing over number n is an exclusive create of n+1 (link() locally, HDFS's
  create without overwrite), which only one writer can win; numbers never go back (a release is
  written as a numbered "released" record), and older files are removed after the create.

Expiry compares the holder's last heartbeat (its clock) with the reader's clock: clocks must agree
to well within `timeout_s` (EMR nodes sync with the Amazon Time Sync Service).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LEASE_DIR = "_image_tagger/lease"  # file systems: numbered records
LEASE_KEY = "_image_tagger/lease.json"  # S3: one object
S3_SCHEMES = ("s3", "s3a", "s3n")


class LeaseConflict(Exception):
    """A store's compare-and-swap failed: someone else wrote the lease since it was read."""


class LeaseHeld(RuntimeError):
    """Another run holds the output's lease; the message names it and what to do."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (or could not be renewed in time): it must stop writing."""


class LeaseStore(Protocol):
    where: str

    def read(self) -> tuple[dict | None, Any]:
        """(the current record or None when free, a token for `write`)."""

    def write(self, record: dict | None, expected: Any) -> Any:
        """Replace the lease read with token `expected` by `record` (None: release); the new token.
        Raises LeaseConflict when the lease changed since."""


# --- S3: conditional writes on one object ---------------------------------------------------------


class S3LeaseStore:
    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        self.where = f"s3://{bucket}/{key}"

    def read(self) -> tuple[dict | None, Any]:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _s3_code(exc) in ("NoSuchKey", "404"):
                return None, None
            raise
        return json.loads(answer["Body"].read()), answer["ETag"]

    def write(self, record: dict | None, expected: Any) -> Any:
        from botocore.exceptions import ClientError

        try:
            if record is None:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=expected)
                return None
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
            body = json.dumps(record).encode()
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)
            return answer["ETag"]
        except ClientError as exc:
            # 412: the condition failed; 409: a concurrent conditional write won; 404: released meanwhile.
            if _s3_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409", "404"):
                raise LeaseConflict(str(exc)) from None
            raise


def _s3_code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# --- File systems: numbered records, each an exclusive create -------------------------------------


class Files(Protocol):
    """A folder's small files: what NumberedLeaseStore needs of a file system."""

    where: str

    def names(self) -> list[str]: ...

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create name with data unless it exists (atomically); False when it existed."""

    def read(self, name: str) -> bytes | None:
        """None when the file is gone."""

    def delete(self, name: str) -> None: ...


class LocalFiles:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.where = str(self.folder)

    def names(self) -> list[str]:
        try:
            return os.listdir(self.folder)
        except FileNotFoundError:
            return []

    def create_exclusive(self, name: str, data: bytes) -> bool:
        # Written whole under a private name, then linked: link() fails if the name exists, and a
        # reader never sees a half-written record.
        self.folder.mkdir(parents=True, exist_ok=True)
        private = self.folder / f".{name}.{uuid.uuid4().hex}"
        private.write_bytes(data)
        try:
            os.link(private, self.folder / name)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink()

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / name).unlink()


class NumberedLeaseStore:
    """Compare-and-swap from exclusive creates: the lease is the highest-numbered record."""

    SUFFIX = ".json"

    def __init__(self, files: Files):
        self.files = files
        self.where = files.where

    def _numbers(self) -> list[int]:
        names = (n[: -len(self.SUFFIX)] for n in self.files.names() if n.endswith(self.SUFFIX) and not n.startswith("."))
        return sorted(int(n) for n in names if n.isdigit())

    def _name(self, number: int) -> str:
        return f"{number:012d}{self.SUFFIX}"

    def read(self) -> tuple[dict | None, Any]:
        for _ in range(50):  # the top record may be replaced (and removed) while we read it
            numbers = self._numbers()
            if not numbers:
                return None, 0
            data = self.files.read(self._name(numbers[-1]))
            if data:
                record = json.loads(data)
                return (None if record.get("released") else record), numbers[-1]
            time.sleep(0.02)
        raise LeaseConflict(f"{self.where}: the lease kept changing while it was read")

    def write(self, record: dict | None, expected: Any) -> Any:
        numbers = self._numbers()
        if (numbers[-1] if numbers else 0) != expected:
            raise LeaseConflict(f"{self.where}: the lease changed since it was read")
        number = expected + 1
        data = json.dumps(record if record is not None else {"released": True}).encode()
        if not self.files.create_exclusive(self._name(number), data):
            raise LeaseConflict(f"{self.where}: another writer took record {number}")
        if any(n > number for n in self._numbers()):  # ours was stale: a newer record stands above it
            raise LeaseConflict(f"{self.where}: the lease changed since it was read")
        for old in numbers:
            self.files.delete(self._name(old))
        return number


def lease_store(output: str, hadoop_files: Callable[[str], Files] | None = None, s3_client=None) -> LeaseStore:
    """The lease store for an output URI: S3's conditional writes, or numbered files.

    hadoop_files: folder URI -> Files through Hadoop's FileSystem, for schemes other than S3 and
    local paths (hdfs://, whose create without overwrite is atomic).
    """
    uri = output.rstrip("/")
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme in S3_SCHEMES:
        parts = urlsplit(uri)
        prefix = parts.path.strip("/")
        if s3_client is None:
            from jobs.fetch import s3_client as default_client

            s3_client = default_client()
        return S3LeaseStore(s3_client, parts.netloc, f"{prefix}/{LEASE_KEY}" if prefix else LEASE_KEY)
    if scheme in ("", "file"):
        return NumberedLeaseStore(LocalFiles(Path(uri.removeprefix("file://")) / LEASE_DIR))
    if hadoop_files is None:
        raise ValueError(f"{output}: no lease store for {scheme}://")
    return NumberedLeaseStore(hadoop_files(f"{uri}/{LEASE_DIR}"))


# --- The holder's side --------------------------------------------------------------------------


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def describe_holder(record: dict, now: float) -> str:
    run = record.get("run_id") or "(still planning)"
    return (
        f"run {run} (started {_utc(record['started_at'])} on host {record['host']}, pid {record['pid']}, "
        f"manifest {record.get('manifest') or '?'}), last heartbeat {now - record['heartbeat_at']:.0f} s ago"
    )


class Lease:
    """One run's lease on one output. `acquire`, then `renew` (a Heartbeat does it), then `release`."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        output: str,
        timeout_s: float,
        manifest: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.output, self.timeout_s, self.clock = store, output, timeout_s, clock
        self.record = {
            "holder": uuid.uuid4().hex,
            "run_id": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "manifest": manifest,
            "started_at": clock(),
            "heartbeat_at": clock(),
            "timeout_s": timeout_s,
        }
        self.token: Any = None
        self.held = False
        self._lock = threading.Lock()  # the heartbeat and the run both renew: one write at a time
        self.renewed_at = 0.0  # our clock, when the store last confirmed the lease

    def acquire(self) -> dict | None:
        """Take the lease; the expired record taken over, or None. Raises LeaseHeld."""
        current, token = self.store.read()
        now = self.clock()
        if current is not None and now - current["heartbeat_at"] <= current["timeout_s"]:
            raise LeaseHeld(self._refusal(current, now))
        record = {**self.record, "started_at": now, "heartbeat_at": now}
        try:
            self.token = self.store.write(record, token)
        except LeaseConflict:  # another run took it between our read and write
            winner, _ = self.store.read()
            raise LeaseHeld(self._refusal(winner, self.clock()) if winner else f"{self._where()}: the lease changed") from None
        self.record, self.held, self.renewed_at = record, True, now
        if current is not None:
            log.warning(
                "took over the lease of %s: it stopped renewing it %.0f s ago (lease timeout %s s)",
                describe_holder(current, now),
                now - current["heartbeat_at"],
                current["timeout_s"],
            )
        return current

    def renew(self, **changes) -> None:
        """Write a fresh heartbeat (and changes such as run_id). Raises LeaseLost when taken over."""
        with self._lock:
            self._renew(changes)

    def _renew(self, changes: dict) -> None:
        now = self.clock()
        record = {**self.record, **changes, "heartbeat_at": now}
        try:
            self.token = self.store.write(record, self.token)
        except LeaseConflict:
            self.held = False
            current, _ = self.store.read()
            by = describe_holder(current, now) if current else "nobody (it was released)"
            raise LeaseLost(f"{self._where()}: this run's lease was taken over; it is now held by {by}") from None
        self.record, self.renewed_at = record, now

    def release(self) -> None:
        with self._lock:
            if not self.held:
                return
            self.held = False
            try:
                self.store.write(None, self.token)
            except LeaseConflict:
                log.warning("%s: the lease was no longer ours to release", self._where())

    def overdue(self) -> bool:
        """Not confirmed for timeout_s: another run may have taken it over by now."""
        return self.clock() - self.renewed_at > self.timeout_s

    def _where(self) -> str:
        return f"output {self.output}"

    def _refusal(self, current: dict, now: float) -> str:
        expires = current["heartbeat_at"] + current["timeout_s"]
        return (
            f"{self._where()} is in use: {describe_holder(current, now)}. Only one run may write an output at a time. "
            f"Wait for that run to end and run again (with --incremental nothing it did is redone). If it is dead "
            f"(killed driver, lost cluster), its lease expires at {_utc(expires)} (output.lease_timeout_s="
            f"{current['timeout_s']:g} after its last heartbeat) and the next run takes it over. Lease: {self.store.where}"
        )


class Heartbeat(threading.Thread):
    """Renews a lease every interval_s; on loss calls on_lost once (e.g. to cancel the Spark jobs)."""

    def __init__(self, lease: Lease, on_lost: Callable[[], None], interval_s: float):
        super().__init__(name="lease-heartbeat", daemon=True)
        self.lease, self.on_lost, self.interval_s = lease, on_lost, interval_s
        self.lost: LeaseLost | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.lease.renew()
                continue
            except LeaseLost as exc:
                self.lost = exc
            except Exception as exc:  # a transient store error: retried at the next beat, until overdue
                log.warning("renewing the lease of %s failed (retried): %s", self.lease.output, exc)
                if not self.lease.overdue():
                    continue
                overdue = f"output {self.lease.output}: the lease could not be renewed for {self.lease.timeout_s:g} s"
                self.lost = LeaseLost(overdue)
            log.error("%s", self.lost)
            self.on_lost()
            return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class HeldLease:
    """What a run sees of its lease while it holds it: `check()` before making work visible."""

    def __init__(self, lease: Lease, heartbeat: Heartbeat, taken_over: dict | None):
        self.lease, self.heartbeat, self.taken_over = lease, heartbeat, taken_over

    def check(self) -> None:
        if self.heartbeat.lost is not None:
            raise self.heartbeat.lost

    def taken_over_from(self) -> str | None:
        """The run whose expired lease this one took over, if it did."""
        return None if self.taken_over is None else (self.taken_over.get("run_id") or "a run still planning")

    def name_run(self, run_id: str) -> None:
        """Record the run id in the lease once the run knows it (new or resumed)."""
        self.lease.renew(run_id=run_id)


@contextlib.contextmanager
def holding(lease: Lease, on_lost: Callable[[], None] = lambda: None) -> Iterator[HeldLease]:
    """Acquire (or raise LeaseHeld), renew in the background, release at the end, even on error."""
    taken_over = lease.acquire()
    heartbeat = Heartbeat(lease, on_lost, interval_s=lease.timeout_s / 4)
    heartbeat.start()
    try:
        yield HeldLease(lease, heartbeat, taken_over)
    finally:
        heartbeat.stop()
        if heartbeat.lost is None:
            lease.release()
