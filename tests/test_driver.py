"""Runs against the ledger: accounting, duplicates, --incremental, chunked commits."""

import dataclasses
import json
import shutil

import pytest
from pyspark.sql import functions as F

from jobs.config import load_settings
from jobs.driver import AccountingError, JobArgs, TaggingRun
from jobs.infer import ModelBundle
from jobs.lease import Lease, LeaseHeld, NumberedLeaseStore, holding, lease_store
from jobs.ledger import OutputStore, RunState, statuses_once
from model.artifact import ModelArtifact

pytestmark = pytest.mark.spark


def write_manifest(path, rows):
    path.write_text("image_id,url\n" + "".join(f"{i},{u}\n" for i, u in rows))
    return str(path)


def run_job(spark, artifact, manifest, output, *, incremental=False, overrides=()):
    settings = load_settings(overrides=["spark.partitions=2", "inference.batch_size=8", *overrides])
    job = TaggingRun(spark, settings, ModelBundle(artifact), JobArgs(manifest, str(output), incremental=incremental))
    result = job.execute()
    return {"run_id": result.run_id, **result.counts}


def output_rows(spark, output):
    return [r.asDict() for r in spark.read.parquet(str(output)).collect()]


@pytest.fixture
def images(photos, tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    return {
        "coffee": photos["coffee"].as_uri(),
        "cat": photos["chelsea"].as_uri(),
        "rocket": photos["rocket"].as_uri(),
        "bad": (tmp_path / "bad.jpg").as_uri(),
    }


def test_duplicates_accounted(spark, artifact, images, tmp_path):
    manifest = write_manifest(
        tmp_path / "m.csv",
        [("a", images["coffee"]), ("a", images["coffee"]), ("b", images["coffee"]), ("c", images["bad"])],
    )
    result = run_job(spark, artifact, manifest, tmp_path / "out")
    assert result["rows_in"] == 4 and result["skipped_duplicates"] == 1
    assert (result["ok"], result["error"], result["skipped"]) == (2, 1, 1)
    rows = output_rows(spark, tmp_path / "out")
    # Same image_id twice: tagged once. Same URL under two image_ids: two rows.
    assert sorted(r["image_id"] for r in rows) == ["a", "b", "c"]


def test_incremental_skips_done_work_and_retries_errors(spark, artifact, images, tmp_path):
    out = tmp_path / "out"
    first = write_manifest(tmp_path / "m1.csv", [("a", images["coffee"]), ("b", images["bad"])])
    run_job(spark, artifact, first, out)
    second = write_manifest(tmp_path / "m2.csv", [("a", images["coffee"]), ("b", images["bad"]), ("c", images["cat"])])
    result = run_job(spark, artifact, second, out, incremental=True)
    assert (result["rows_in"], result["skipped_done"], result["ok"], result["error"]) == (3, 1, 1, 1)
    rows = output_rows(spark, out)
    ok = [(r["image_id"], r["model_version"]) for r in rows if r["status"] == "ok"]
    assert sorted(ok) == [("a", artifact.version), ("c", artifact.version)]  # one ok row each
    assert len([r for r in rows if r["image_id"] == "b"]) == 2  # the error was retried, both kept

    # A new model version re-tags everything; still one ok row per (image_id, model_version).
    v2 = ModelArtifact({**artifact.meta, "version": "feedfacecafe"}, artifact.files)
    result = run_job(spark, v2, second, out, incremental=True)
    assert (result["skipped_done"], result["ok"]) == (0, 2)
    ok = [(r["image_id"], r["model_version"]) for r in output_rows(spark, out) if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == 4


def test_unique_ids_read_on_the_driver_are_planned_without_the_dedup_shuffle(spark, artifact, tmp_path):
    from jobs.manifest import open_manifest
    from jobs.planning import plan_pending

    unique = write_manifest(tmp_path / "unique.csv", [("a", "u1"), ("b", "u2"), ("c", "u3")])
    twice = write_manifest(tmp_path / "twice.csv", [("a", "u1"), ("b", "u2"), ("a", "u1")])
    for manifest, ids_unique, expected in ((unique, True, ["a", "b", "c"]), (twice, False, ["a", "b"])):
        opened = open_manifest(spark, manifest)
        assert opened.ids_unique == ids_unique and opened.rows_in == 3
        pending, counts = plan_pending(
            opened.rows, None, models=ModelBundle(artifact), embedding=True, run_id="r", incremental=False, partitions=2,
            unique_ids=opened.ids_unique,
        )  # fmt: skip
        assert ("Exchange" in pending._jdf.queryExecution().executedPlan().toString()) != ids_unique
        assert sorted(r.image_id for r in pending.collect()) == expected
        assert counts() == {"rows_in": 3, "unique": len(expected), "after_ledger": len(expected), "stored_embedding": 0}


def test_non_incremental_run_replaces_output(spark, artifact, images, tmp_path):
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.csv", [("a", images["coffee"])])
    run_job(spark, artifact, manifest, out)
    run_job(spark, artifact, manifest, out)
    assert len(output_rows(spark, out)) == 1


def test_chunked_run_commits_each_chunk(spark, artifact, images, tmp_path):
    out = tmp_path / "out"
    rows = [(f"id{i}", images[name]) for i, name in enumerate(["coffee", "cat", "rocket", "bad"] * 3)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = run_job(spark, artifact, manifest, out, overrides=["output.chunks=3"])
    assert (result["rows_in"], result["ok"], result["error"]) == (12, 9, 3)
    (state_file,) = (out / "_image_tagger").glob("run-*.json")
    state = json.loads(state_file.read_text())
    assert state["status"] == "done" and sorted(state["done_chunks"]) == [0, 1, 2]
    assert not (out / "_image_tagger" / "staging" / state["run_id"]).exists()
    written = spark.read.parquet(str(out))
    assert written.count() == 12 and written.select("image_id").distinct().count() == 12
    assert written.where(F.col("run_id") != state["run_id"]).count() == 0


def test_accounting_mismatch_the_repair_cannot_explain_fails_clearly(spark, artifact, images, tmp_path):
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.csv", [("a", images["coffee"])])
    result = run_job(spark, artifact, manifest, out)
    job = TaggingRun(spark, load_settings(), ModelBundle(artifact), JobArgs(manifest, str(out)))
    job.models_bc = spark.sparkContext.broadcast(job.models)
    state = RunState(run_id=result["run_id"], chunks=1, counts={"rows_in": 2, "unique": 2, "after_ledger": 2})
    nothing_unwritten = spark.createDataFrame([], "image_id string, url string")
    with holding(Lease(lease_store(str(out)), output=str(out), timeout_s=60)) as held:
        job.lease = held
        with pytest.raises(AccountingError, match=r"accounting mismatch: rows in 2 != ok 1 \+ error 0 \+ skipped 0"):
            job._account_and_repair(state, lambda: nothing_unwritten)
    assert job.repaired == 1  # it tried once: the plan had nothing left to tag


def test_a_second_run_on_a_held_output_is_refused_before_any_work(spark, artifact, images, tmp_path):
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.csv", [("a", images["coffee"])])
    run_job(spark, artifact, manifest, out)
    before = sorted(p.name for p in out.iterdir())
    other = Lease(lease_store(str(out)), output=str(out), timeout_s=60, manifest="elsewhere.csv")
    with holding(other) as held:
        held.name_run("the-other-run")
        with pytest.raises(LeaseHeld, match="is in use: run the-other-run .*manifest elsewhere.csv"):
            run_job(spark, artifact, manifest, out)  # not incremental: it would have replaced the output
    assert sorted(p.name for p in out.iterdir()) == before and len(output_rows(spark, out)) == 1
    assert run_job(spark, artifact, manifest, out, incremental=True)["skipped_done"] == 1  # released: free again


def test_images_written_twice_count_once(spark):
    rows = spark.createDataFrame(
        [("a", "ok", 1, "r"), ("a", "ok", 2, "r"), ("b", "error", 1, "r"), ("b", "ok", 3, "r"), ("c", "error", 1, "r")],
        "image_id string, status string, processed_at int, run_id string",
    )
    counts, repeated = statuses_once(rows)
    assert counts == {"ok": 2, "error": 1} and repeated == 2  # b's latest row is ok


def test_state_round_trip(spark, tmp_path):
    store = OutputStore(spark, str(tmp_path / "out"))
    assert store.read_state("k") is None and not store.has_data()
    state = RunState(run_id="r1", chunks=4, done_chunks=[0, 2], counts={"rows_in": 5})
    store.write_state("k", state)
    store.write_state("k", dataclasses.replace(state, done_chunks=[0, 1, 2]))
    assert store.read_state("k") == dataclasses.replace(state, done_chunks=[0, 1, 2])
    assert not store.has_data()  # state files are not data


def test_a_bad_manifest_fails_before_the_output_is_replaced(spark, artifact, images, tmp_path):
    from jobs.manifest import ManifestError

    out = tmp_path / "out"
    run_job(spark, artifact, write_manifest(tmp_path / "m.csv", [("a", images["coffee"])]), out)
    (tmp_path / "bad.csv").write_text("image,link\nx,y\n")
    with pytest.raises(ManifestError, match="no 'url' column"):
        run_job(spark, artifact, str(tmp_path / "bad.csv"), out)
    assert [r["image_id"] for r in output_rows(spark, out)] == ["a"]  # the earlier output is intact


def test_stage_times_merge_extremes_sums_and_timelines():
    from collections import Counter

    from jobs.metrics import StageTimes

    merged = StageTimes().addInPlace(
        Counter(images=3, ready_at_min=5.0, end_at_max=9.0, task_timeline=[{"start": 1}]),
        Counter(images=4, ready_at_min=4.0, end_at_max=8.0, task_timeline=[{"start": 2}]),
    )
    assert merged == Counter(images=7, ready_at_min=4.0, end_at_max=9.0, task_timeline=[{"start": 1}, {"start": 2}])
    assert StageTimes().addInPlace(Counter(), Counter(task_timeline=[{"start": 3}]))["task_timeline"] == [{"start": 3}]


def test_process_start_is_before_now():
    import time

    from jobs.pipeline import process_started_at

    started = process_started_at()
    assert started is not None and 0 < time.time() - started < 3600  # this pytest process, started minutes ago


def test_startup_breakdown_segments_add_up_to_the_first_ready_model():
    from jobs.run_record import startup_breakdown

    marks = {"main_at": 102.0, "session_at": 102.5, "execute_at": 105.0, "tagging_submitted_at": 106.0}
    marks["manifest_read_at"] = 105.25  # inside manifest_and_plan
    times = {"worker_start_at_min": 107.5, "task_start_at_min": 108.0, "ready_at_min": 108.25, "first_batch_at_min": 109.0}
    segments = startup_breakdown(marks, times, jvm_started=100.0)
    assert segments == {
        "driver_start_s": 2.0, "driver_setup_s": 0.5, "session_s": 2.5, "manifest_and_plan_s": 1.0,
        "shuffle_and_schedule_s": 2.0, "model_load_s": 0.25, "first_batch_s": 0.75, "python_worker_start_s": 0.5,
        "manifest_read_s": 0.25,
    }  # fmt: skip
    on_path = sum(v for k, v in segments.items() if k not in ("first_batch_s", "python_worker_start_s", "manifest_read_s"))
    assert on_path == times["ready_at_min"] - 100.0
    without_proc = startup_breakdown(marks, {k: v for k, v in times.items() if k != "worker_start_at_min"}, 100.0)
    assert without_proc["python_worker_start_s"] is None and without_proc["model_load_s"] == 0.25
    # Warmed up: the workers started beside manifest_and_plan; their own start is the warm-up's.
    warm = startup_breakdown({**marks, "warm_up_at": 105.0, "warm_ready_at": 106.5, "warm_worker_start_s": 1.2}, times, 100.0)
    assert warm["warm_up_s"] == 1.5 and warm["python_worker_start_s"] == 1.2


def test_warm_up_builds_the_models_the_tagging_tasks_then_find(artifact):
    import os
    from types import SimpleNamespace

    from jobs.infer import tagger_for_worker, worker_model_loads
    from jobs.pipeline import warm_worker

    settings = load_settings(overrides=["model.top_k=4", "inference.batch_size=2", "model.embedding=false"])
    models = ModelBundle(artifact)
    answer = warm_worker(SimpleNamespace(value=models), settings)  # what each warm-up task runs
    assert answer["worker"] == os.getpid() and answer["ready_at"] >= answer["process_started_at"]
    builds = worker_model_loads()
    tagger = tagger_for_worker(models, top_k=4, batch_size=2, threads=settings.inference.threads, embedding=False)
    assert worker_model_loads() == builds and tagger.top_k == 4  # found, not built again


def test_warm_up_job_runs_one_task_per_core_in_python_workers(spark, artifact):
    import os

    from jobs.pipeline import WarmUp

    settings = load_settings(overrides=["inference.batch_size=2", "model.embedding=false"])
    warm_up = WarmUp(spark, spark.sparkContext.broadcast(ModelBundle(artifact)), settings)
    warm_up.start()
    warm_up.join(timeout=120)
    assert len(warm_up.workers) == spark.sparkContext.defaultParallelism == 2
    assert all(w["worker"] != os.getpid() and w["ready_at"] >= warm_up.started_at for w in warm_up.workers)


def test_an_output_holding_images_twice_is_covered_once(spark, artifact, images, tmp_path):
    """An incident before the lease wrote every row twice: --incremental still sees each image done once."""
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.csv", [("a", images["coffee"]), ("b", images["bad"])])
    run_job(spark, artifact, manifest, out)
    for part in list(out.glob("part-*.parquet")):
        shutil.copy(part, part.with_name("part-copy-" + part.name[5:]))
    assert len(output_rows(spark, out)) == 4
    result = run_job(spark, artifact, manifest, out, incremental=True)
    assert (result["rows_in"], result["skipped_done"], result["ok"], result["error"]) == (2, 1, 0, 1)  # the error retried


def test_lease_through_hadoops_filesystem(spark, tmp_path):
    """hdfs:// outputs take the lease through Hadoop's FileSystem: the same contract (here on file://)."""
    uri = f"file://{tmp_path}/out"
    files = OutputStore(spark, uri).lease_files(f"{uri}/_image_tagger/lease")
    assert files.create_exclusive("x.json", b"1") and not files.create_exclusive("x.json", b"2")
    assert files.read("x.json") == b"1" and files.read("y.json") is None
    store = NumberedLeaseStore(files)
    first = Lease(store, output=uri, timeout_s=60)
    assert first.acquire() is None
    with pytest.raises(LeaseHeld):
        Lease(store, output=uri, timeout_s=60).acquire()
    first.release()
    assert Lease(store, output=uri, timeout_s=60).acquire() is None
