"""Progress lines: the arithmetic, the reporter thread with fake counters, and one real chunked run."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from jobs.progress import (
    Counts,
    ProgressReporter,
    Tasks,
    eta_from_tasks,
    eta_s,
    format_duration,
    format_line,
    window_rate,
)

# --- pure functions ---------------------------------------------------------------------------


def test_rate_over_the_sliding_window():
    points = [(0.0, 0), (10.0, 100), (20.0, 300), (30.0, 600)]
    assert window_rate(points, 30.0, window_s=10.0) == pytest.approx(30.0)  # 300 -> 600 in 10 s
    assert window_rate(points, 30.0, window_s=20.0) == pytest.approx(25.0)  # 100 -> 600 in 20 s
    assert window_rate(points, 30.0, window_s=100.0) == pytest.approx(20.0)  # younger than the window: from the start
    assert window_rate(points[:1], 0.0, window_s=10.0) == 0.0
    assert window_rate([(5.0, 0), (5.0, 10)], 5.0, window_s=10.0) == 0.0


def test_eta_and_durations():
    assert eta_s(1200, 5000, 41.3) == pytest.approx(3800 / 41.3)
    assert eta_s(10, None, 5.0) is None and eta_s(10, 100, 0.0) is None
    assert eta_s(120, 100, 5.0) == 0.0 and eta_s(0, 0, 0.0) == 0.0  # done, or nothing to do: no rate needed
    assert eta_from_tasks(30.0, Tasks(7, completed=2, total=8)) == pytest.approx(90.0)
    assert eta_from_tasks(30.0, Tasks(7, completed=0, total=8)) is None and eta_from_tasks(30.0, None) is None
    assert [format_duration(s) for s in (0, 45, 92, 3599, 7500, -3)] == ["0s", "45s", "1m32s", "59m59s", "2h05m", "0s"]


def test_line_format():
    line = format_line(Counts(610, 600, 10), 1200, 30.5, eta_s(610, 1200, 30.5), tasks=Tasks(4, 0, 4))
    assert line == "progress  610/1200 images (51%), ok 600, error 10, 30.5 images/s, tasks 0/4, ETA 19s"
    line = format_line(Counts(1200, 1190, 10), 5000, 41.3, 92.0)
    assert line == "progress  1200/5000 images (24%), ok 1190, error 10, 41.3 images/s, ETA 1m32s"
    line = format_line(Counts(40, 39, 1), None, 2.0, None, event="chunk 3/64 committed", tasks=Tasks(4, 1, 2))
    assert line == "progress  chunk 3/64 committed, 40/? images, ok 39, error 1, 2.0 images/s, tasks 1/2, ETA unknown"
    line = format_line(Counts(0, 0, 0), None, 0.0, None, phase="staging the plan")
    assert line == "progress  staging the plan, 0/? images, ok 0, error 0, 0.0 images/s, ETA unknown"
    line = format_line(Counts(0, 0, 0), 0, 0.0, eta_s(0, 0, 0.0))  # an --incremental run with nothing left
    assert line == "progress  0/0 images (100%), ok 0, error 0, 0.0 images/s, ETA 0s"


# --- the reporter with fake counters ----------------------------------------------------------


class FakeJob:
    """Counters a test moves by hand, and a clock it sets."""

    def __init__(self):
        self.now, self.counts, self.tasks = 1000.0, Counts(0, 0, 0), None

    def reporter(self, **kwargs):
        lines = []
        reporter = ProgressReporter(
            lambda: self.counts, clock=lambda: self.now, emit=lines.append, tasks=lambda: self.tasks, **kwargs
        )
        return reporter, lines


def test_reporter_lines_with_a_fake_clock():
    job = FakeJob()
    reporter, lines = job.reporter(interval_s=30, total=1000, window_s=60)
    reporter.report("started")
    job.now, job.counts = 1030.0, Counts(300, 290, 10)
    reporter.report()
    job.now, job.counts = 1060.0, Counts(600, 590, 10)
    line = reporter.report("chunk 1/2 committed")
    assert line == "progress  chunk 1/2 committed, 600/1000 images (60%), ok 590, error 10, 10.0 images/s, ETA 40s"
    assert lines == reporter.lines and len(lines) == 3 and all("ETA" in x for x in lines)
    assert lines[0].endswith("0/1000 images (0%), ok 0, error 0, 0.0 images/s, ETA unknown")
    assert [p["images_done"] for p in reporter.points] == [0, 300, 600]
    assert [p["images_per_s"] for p in reporter.points] == [0.0, 10.0, 10.0]


def test_reporter_without_a_total_estimates_from_the_tasks():
    job = FakeJob()
    reporter, lines = job.reporter(interval_s=30)
    job.tasks = Tasks(5, completed=0, total=4)
    reporter.report()  # the stage is first seen now
    job.now, job.tasks, job.counts = 1020.0, Tasks(5, completed=1, total=4), Counts(50, 50, 0)
    assert reporter.report().endswith("50/? images, ok 50, error 0, 2.5 images/s, tasks 1/4, ETA 1m00s")
    assert lines[0].endswith("ETA unknown")

    def broken():
        raise RuntimeError("the status tracker went away")

    reporter.tasks = broken  # never fails the run; the line goes without tasks
    assert "tasks" not in reporter.report()


def test_reporter_thread_reports_at_the_interval_and_stops_cleanly():
    done = {"n": 0}
    lines: list[str] = []
    reporter = ProgressReporter(lambda: Counts(done["n"], done["n"], 0), interval_s=0.05, total=100, emit=lines.append)
    with reporter:
        for _ in range(6):
            done["n"] += 10
            time.sleep(0.05)
        deadline = time.monotonic() + 10  # a loaded machine may delay the thread's ticks, not skip them
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        reporter.report("chunk 1/2 committed")
    assert lines[0].startswith("progress  started, ") and lines[-1].startswith("progress  tagging finished, 60/100")
    assert len(lines) >= 5, lines  # started, >= 2 at the interval, the chunk, finished
    assert any(x.startswith("progress  chunk 1/2 committed, ") for x in lines)
    assert all("ETA" in x for x in lines)
    assert not any(t.name == "progress" for t in threading.enumerate())


def test_reporter_stops_when_the_run_fails():
    lines: list[str] = []
    reporter = ProgressReporter(lambda: Counts(3, 2, 1), interval_s=10, emit=lines.append)
    with pytest.raises(ZeroDivisionError), reporter:
        1 / 0  # noqa: B018
    assert lines[-1].startswith("progress  tagging failed, 3/? images")
    assert not any(t.name == "progress" for t in threading.enumerate())


# --- one real run -----------------------------------------------------------------------------


@pytest.mark.spark
def test_chunked_run_prints_progress_and_records_the_series(spark, artifact, photos, tmp_path, caplog):
    from jobs.config import load_settings
    from jobs.driver import JobArgs, TaggingRun
    from jobs.infer import ModelBundle
    from jobs.run_record import metrics_record

    (tmp_path / "bad.jpg").write_text("not an image")
    urls = [photos["coffee"].as_uri(), photos["rocket"].as_uri(), (tmp_path / "bad.jpg").as_uri()]
    manifest = tmp_path / "m.csv"
    manifest.write_text("image_id,url\n" + "".join(f"id{i},{urls[i % 3]}\n" for i in range(6)))
    settings = load_settings(
        overrides=["spark.partitions=2", "inference.batch_size=8", "output.chunks=2", "progress.interval_s=0.2"]
    )
    started = time.time()
    args, models = JobArgs(str(manifest), str(tmp_path / "out")), ModelBundle(artifact)
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        result = TaggingRun(spark, settings, models, args).execute()
    lines = [r.getMessage() for r in caplog.records if r.name == "jobs.progress"]
    assert (result.counts["ok"], result.counts["error"]) == (4, 2)
    assert any(x.startswith("progress  staging the plan, 0/? images") for x in lines), lines
    chunk = [x for x in lines if "chunk 1/2 committed" in x]
    assert chunk and "/6 images (" in chunk[0] and "ETA" in chunk[0], lines
    assert any("chunk 2/2 committed, 6/6 images (100%), ok 4, error 2" in x for x in lines), lines
    assert lines[-1].startswith("progress  tagging finished, 6/6 images")

    record = metrics_record(
        result, args=args, settings=settings, models=models, main_started=started, session_s=0.0, jvm_started=started
    )
    series = record["progress"]
    assert len(series) >= 4 and set(series[0]) == {"t_s", "images_done", "ok", "error", "images_per_s"}
    assert [p["t_s"] for p in series] == sorted(p["t_s"] for p in series) and series[0]["t_s"] >= 0
    assert (series[-1]["images_done"], series[-1]["ok"], series[-1]["error"]) == (6, 4, 2)
    assert series[0]["images_done"] == 0 and max(p["images_per_s"] for p in series) > 0


@pytest.mark.spark
@pytest.mark.job
def test_single_chunk_run_has_a_total_and_an_eta_once_it_has_a_rate(spark, artifact, photos, tmp_path, caplog):
    import re

    from jobs.config import load_settings
    from jobs.driver import JobArgs, TaggingRun
    from jobs.infer import ModelBundle

    urls = [photos["coffee"].as_uri(), photos["rocket"].as_uri(), photos["chelsea"].as_uri()]
    manifest = tmp_path / "m.csv"  # 7 rows, 6 image_ids: id0 twice
    manifest.write_text("image_id,url\n" + "".join(f"id{i},{urls[i % 3]}\n" for i in [0, *range(6)]))
    overrides = ["spark.partitions=2", "inference.batch_size=2", "progress.interval_s=0.1"]
    # Read on the driver: the distinct image_ids; read by Spark: the manifest's rows, a repeated id each time.
    for read_by, total in (("driver", 6), ("spark", 7)):
        settings = load_settings(overrides=[*overrides, *(["manifest.driver_read_max_bytes=0"] if read_by == "spark" else [])])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="jobs.progress"):
            result = TaggingRun(spark, settings, ModelBundle(artifact), JobArgs(str(manifest), str(tmp_path / read_by))).execute()
        lines = [r.getMessage() for r in caplog.records if r.name == "jobs.progress"]
        assert result.counts["ok"] == 6 and result.counts["skipped_duplicates"] == 1
        assert lines[0].startswith(f"progress  started, 0/{total} images (0%)"), lines
        assert all(f"/{total} images (" in x for x in lines), lines
        assert lines[-1].startswith(f"progress  tagging finished, 6/{total} images"), lines
        with_rate = [x for x in lines if float(re.search(r"([\d.]+) images/s", x)[1]) > 0]
        assert with_rate and all("ETA unknown" not in x for x in with_rate), lines

    # --incremental: the output decides what is left, counted by one pass over the plan before the tagging.
    more = tmp_path / "more.csv"  # the 6 tagged image_ids and 2 new ones
    more.write_text("image_id,url\n" + "".join(f"id{i},{urls[i % 3]}\n" for i in range(8)))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobs.progress"):
        args = JobArgs(str(more), str(tmp_path / "spark"), incremental=True)
        result = TaggingRun(spark, load_settings(overrides=overrides), ModelBundle(artifact), args).execute()
    lines = [r.getMessage() for r in caplog.records if r.name == "jobs.progress"]
    assert result.counts["ok"] == 2 and result.counts["skipped_done"] == 6, result.counts
    assert lines[0].startswith("progress  started, 0/2 images (0%)") and all("/2 images (" in x for x in lines), lines


# --- the report's plot ------------------------------------------------------------------------


def test_report_plots_the_progress_series_and_copes_without_one(tmp_path):
    import json

    from tests.test_benchmark import PRICES, job_record
    from tools.benchmark import analysis, cost, plots, report
    from tools.benchmark.records import write_record

    bench = tmp_path / "runs" / "20260101T000000Z"
    with_series = job_record("02-b")
    with_series["progress"] = [  # start-up until 8 s (first model ready), then about 30 images/s
        {"t_s": t, "images_done": done, "ok": done, "error": 0, "images_per_s": rate}
        for t, done, rate in ((3.0, 0, 0.0), (8.0, 0, 0.0), (10.0, 60, 12.0), (12.0, 120, 17.1), (14.7, 200, 20.0))
    ]
    write_record(bench / "01-a.json", job_record("01-a"))  # an older record: no time series
    write_record(bench / "02-b.json", with_series)
    (bench / "bench.json").write_text(
        json.dumps(
            {
                "bench_id": "20260101T000000Z",
                "images": 200,
                "cores": 2,
                "master": "local[2]",
                "git_commit": "abc123",
                "manifest": "m.csv",
                "machine": {"cpus": 2, "cpu_model": "test", "memory_gb": 8.0},
                "dataset": {"files": 200, "bytes_min": 1, "bytes_max": 2, "bytes_median": 1, "photo_share": 0.1},
                "load_avg_at_start": [0.1, 0.2, 0.3],
            }
        )
    )
    (tmp_path / "prices.yaml").write_text(PRICES)
    prices = cost.load_prices(tmp_path / "prices.yaml")
    assert plots.progress_rates(with_series["progress"])[1:] == [(10.0, 30.0), (12.0, 30.0), (14.7, pytest.approx(80 / 2.7))]

    out = tmp_path / "latest"
    report.write_report(analysis.load_bench(bench), prices, out)
    assert (out / "progress.png").stat().st_size > 1000 and "](progress.png)" in (out / "README.md").read_text()

    (bench / "02-b.json").unlink()  # no run with a series: no plot, the rest of the report as before
    report.write_report(analysis.load_bench(bench), prices, out)
    assert not (out / "progress.png").exists() and (out / "stages.png").is_file()


def test_a_listed_manifests_total_is_what_the_listing_kept_without_listing_again():
    from types import SimpleNamespace

    from jobs.driver import TaggingRun
    from jobs.listing import ListingStats
    from jobs.manifest import Manifest

    class Uncountable:
        def count(self):
            raise AssertionError("counting a listed manifest's rows lists it again")

    settings = SimpleNamespace(spark=SimpleNamespace(single_pass=True))
    run = SimpleNamespace(settings=settings, args=SimpleNamespace(incremental=False))
    listed = Manifest(Uncountable(), ListingStats("s3://b/p/", keys=12, kept=10, not_image=2))
    assert TaggingRun._single_chunk_total(run, listed, lambda: {}, resumed=False) == 10
