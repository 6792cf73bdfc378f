"""The output's lease (jobs.lease) without Spark: the same contract on a local folder and on S3 (the
emulator), races between threads, and two real processes on the emulator's S3."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from jobs.lease import (
    LEASE_KEY,
    Heartbeat,
    Lease,
    LeaseConflict,
    LeaseHeld,
    LeaseLost,
    LocalFiles,
    NumberedLeaseStore,
    S3LeaseStore,
    holding,
    lease_store,
)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A fresh lease store of each kind: numbered files in a folder, or one object on the emulator's S3."""
    if request.param == "local":
        return lease_store(str(tmp_path / "out"))
    endpoint = request.getfixturevalue("aws_endpoint")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"lease-{os.getpid()}-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=bucket)
    return lease_store(f"s3://{bucket}/out/", s3_client=s3)


def make_lease(store, clock, timeout_s=60.0, manifest="m1.csv"):
    return Lease(store, output="OUT", timeout_s=timeout_s, manifest=manifest, clock=clock)


def test_store_for_each_kind_of_output(tmp_path):
    assert isinstance(lease_store(str(tmp_path)), NumberedLeaseStore)
    assert isinstance(lease_store(f"file://{tmp_path}/"), NumberedLeaseStore)
    s3 = lease_store("s3://bucket/a/b/", s3_client=object())
    assert isinstance(s3, S3LeaseStore) and (s3.bucket, s3.key) == ("bucket", f"a/b/{LEASE_KEY}")
    assert lease_store("s3a://bucket", s3_client=object()).key == LEASE_KEY
    with pytest.raises(ValueError, match="hdfs://"):
        lease_store("hdfs://nn/out")


def test_second_run_is_refused_with_the_holders_name(store):
    clock = Clock()
    first = make_lease(store, clock)
    assert first.acquire() is None
    first.renew(run_id="20261206T100000Z-abcd")
    clock.now += 20
    with pytest.raises(LeaseHeld) as refused:
        make_lease(store, clock, manifest="m2.csv").acquire()
    message = str(refused.value)
    assert "OUT is in use" in message and "run 20261206T100000Z-abcd" in message
    assert "last heartbeat 20 s ago" in message and "manifest m1.csv" in message and f"pid {os.getpid()}" in message
    assert "expires at" in message and "output.lease_timeout_s=60" in message


def test_release_frees_it_and_renewal_keeps_it(store):
    clock = Clock()
    first = make_lease(store, clock)
    first.acquire()
    for _ in range(3):  # renewed: still held long after the first heartbeat
        clock.now += 50
        first.renew()
    with pytest.raises(LeaseHeld):
        make_lease(store, clock).acquire()
    first.release()
    assert make_lease(store, clock).acquire() is None  # free again: not a takeover


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost(store, caplog):
    clock = Clock()
    old = make_lease(store, clock)
    old.acquire()
    old.renew(run_id="old-run")
    clock.now += 61
    new = make_lease(store, clock)
    taken = new.acquire()
    assert taken["run_id"] == "old-run"
    assert "took over the lease of run old-run" in caplog.text and "61 s ago" in caplog.text
    with pytest.raises(LeaseLost, match="taken over"):
        old.renew()
    old.release()  # lost: releases nothing
    with pytest.raises(LeaseHeld):
        make_lease(store, clock).acquire()
    new.release()


def test_two_takers_of_one_expired_lease_only_one_wins(store):
    clock = Clock()
    make_lease(store, clock).acquire()
    clock.now += 120
    a, b = make_lease(store, clock), make_lease(store, clock)
    _, token = store.read()  # both read the same expired lease ...
    store.write({**a.record, "heartbeat_at": clock.now}, token)  # ... a writes first
    with pytest.raises(LeaseConflict):
        store.write({**b.record, "heartbeat_at": clock.now}, token)


def test_racing_threads_take_a_free_lease_once(tmp_path):
    """Exclusive create is atomic: of 16 threads acquiring at once, exactly one holds the lease."""
    store = NumberedLeaseStore(LocalFiles(tmp_path / "lease"))
    barrier = threading.Barrier(16)

    def attempt(_):
        lease = make_lease(store, Clock())
        barrier.wait()
        try:
            lease.acquire()
            return True
        except LeaseHeld:
            return False

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(attempt, range(16)))
    assert won.count(True) == 1


def test_numbered_records_never_go_back(tmp_path):
    files = LocalFiles(tmp_path / "lease")
    store = NumberedLeaseStore(files)
    clock = Clock()
    for _ in range(3):
        lease = make_lease(store, clock)
        lease.acquire()
        lease.renew()
        lease.release()
    names = [n for n in files.names() if not n.startswith(".")]
    assert names == ["000000000009.json"]  # 3 x (take, renew, release); older records removed
    assert store.read() == (None, 9)


def test_heartbeat_renews_and_reports_a_loss(tmp_path):
    store = NumberedLeaseStore(LocalFiles(tmp_path / "lease"))
    lease = Lease(store, output="OUT", timeout_s=0.4)
    lost = threading.Event()
    with holding(lease, on_lost=lost.set) as held:
        time.sleep(0.5)  # longer than the timeout: the heartbeat kept it
        with pytest.raises(LeaseHeld):
            Lease(store, output="OUT", timeout_s=0.4).acquire()
        _, token = store.read()
        store.write({**lease.record, "holder": "someone else", "heartbeat_at": time.time()}, token)  # a takeover
        assert lost.wait(2)
        with pytest.raises(LeaseLost):
            held.check()
    assert store.read()[0]["holder"] == "someone else"  # the loser does not release the new holder's lease


def test_heartbeat_gives_up_when_the_store_fails_past_the_timeout():
    class Failing:
        where = "nowhere"

        def write(self, record, expected):
            raise OSError("store unreachable")

    clock = Clock()
    lease = Lease(Failing(), output="OUT", timeout_s=1.0, clock=clock)
    lease.renewed_at = clock.now
    lost = threading.Event()
    beat = Heartbeat(lease, lost.set, interval_s=0.01)
    beat.start()
    time.sleep(0.1)
    assert not lost.is_set()  # a transient failure: still held while not overdue
    clock.now += 2
    assert lost.wait(2) and "could not be renewed" in str(beat.lost)
    beat.stop()


def _hold_s3_lease(endpoint: str, uri: str, timeout_s: float, ready) -> None:
    """A separate process that takes the lease, names its run, and keeps renewing it until killed."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    store = lease_store(uri, s3_client=boto3.client("s3", endpoint_url=endpoint))
    lease = Lease(store, output=uri, timeout_s=timeout_s)
    with holding(lease) as held:
        held.name_run("held-by-child")
        ready.set()
        time.sleep(600)


def test_a_killed_holder_on_s3_blocks_until_its_lease_expires(aws_endpoint):
    """Two real processes through the emulator's S3: refused while the holder lives and for the
    timeout after it is killed, then taken over."""
    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="lease-processes")
    uri, timeout_s = "s3://lease-processes/out", 1.6
    ready = multiprocessing.get_context("spawn").Event()
    child = multiprocessing.get_context("spawn").Process(target=_hold_s3_lease, args=(aws_endpoint, uri, timeout_s, ready))
    child.start()
    try:
        assert ready.wait(60), "the holder process did not take the lease"
        store = lease_store(uri, s3_client=s3)
        time.sleep(timeout_s * 1.5)  # longer than the timeout: the child's heartbeat keeps it
        with pytest.raises(LeaseHeld, match="run held-by-child"):
            Lease(store, output=uri, timeout_s=timeout_s).acquire()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    killed_at = time.time()
    with pytest.raises(LeaseHeld):  # dead, but not yet for the timeout
        Lease(store, output=uri, timeout_s=timeout_s).acquire()
    while True:
        try:
            taken = Lease(store, output=uri, timeout_s=timeout_s).acquire()
            break
        except LeaseHeld:
            assert time.time() - killed_at < timeout_s + 5, "the dead holder's lease never expired"
            time.sleep(0.2)
    assert taken["run_id"] == "held-by-child" and time.time() - killed_at >= timeout_s * 0.5
