"""Recording a run: its metrics record (jobs.metrics' contract) and the summary it prints.

Built from what TaggingRun.execute returns (RunResult), never from the run's internals.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

from jobs import metrics as M
from jobs.config import Settings
from jobs.infer import ModelBundle
from jobs.metrics import run_record


@dataclass(frozen=True)
class RunResult:
    """What one run did: the accounting counts, its timings and what it met on the way."""

    run_id: str
    resumed: bool
    counts: dict  # rows_in, ok, error, skipped, skipped_duplicates, skipped_done, path_full, path_stored_embedding
    phases: dict  # the driver's phases (jobs.metrics.DRIVER_PHASES), seconds
    marks: dict  # wall-clock moments of the start-up (and the warm-up's), for its breakdown
    task_times: dict  # the tagging tasks' merged timings (jobs.metrics keys)
    progress: list  # the progress lines' points
    listing: object = None  # a listed manifest's ManifestListing
    lease_taken_over_from: str | None = None  # the expired holder's run id, when this run took its lease over
    repaired: int = 0  # images tagged again because a committed write's files were gone


PROGRESS_KEYS = ("images_done", "ok", "error", "images_per_s")


def startup_breakdown(marks: dict[str, float], times: dict, jvm_started: float) -> dict[str, float | None]:
    """JVM start to the first ready model, in consecutive segments (seconds; they sum to it), then
    the first batch, and the Python workers' own start, which overlaps those segments.

    marks: the driver's moments (main_at, session_at, execute_at, manifest_read_at, tagging_submitted_at, and with a
    warm-up warm_up_at, warm_ready_at, warm_worker_start_s); times: the tasks' merged timings
    (worker_start_at_min, task_start_at_min, ready_at_min, first_batch_at_min). A value is None
    when a moment is missing (no task ran, no /proc).
    """
    moments = [
        ("driver_start_s", jvm_started),  # spark-submit's JVM until the Python driver runs
        ("driver_setup_s", marks.get("main_at")),  # profile, models read (until the session starts)
        ("session_s", marks.get("session_at")),  # SparkSession / SparkContext
        ("manifest_and_plan_s", marks.get("execute_at")),  # manifest opened (the SQL engine's first use), state, plan
        ("shuffle_and_schedule_s", marks.get("tagging_submitted_at")),  # the dedup shuffle stage, tasks sent
        ("model_load_s", times.get(M.TASK_START_AT)),  # the first tagging task until its models are built
        ("first_batch_s", times.get(M.READY_AT)),  # the first batch fetched, decoded, inferred
    ]
    ends = [m for _, m in moments[1:]] + [times.get(M.FIRST_BATCH_AT)]
    segments = {name: _span(start, end) for (name, start), end in zip(moments, ends, strict=True)}
    # Inside manifest_and_plan: the manifest opened (on the driver, or Spark's reader and its first job).
    segments["manifest_read_s"] = _span(marks.get("execute_at"), marks.get("manifest_read_at"))
    if "warm_up_at" in marks:  # workers forked, imports and models done beside manifest_and_plan
        segments["warm_up_s"] = _span(marks["warm_up_at"], marks.get("warm_ready_at"))
        segments["python_worker_start_s"] = marks.get("warm_worker_start_s")
    else:  # a worker forked until its first tagging task runs (imports): inside shuffle_and_schedule
        segments["python_worker_start_s"] = _span(times.get(M.WORKER_START_AT), times.get(M.TASK_START_AT))
    return segments


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def metrics_record(
    result: RunResult,
    *,
    args,
    settings: Settings,
    models: ModelBundle,
    main_started: float,
    session_s: float,
    jvm_started: float,
) -> dict:
    """The run's metrics: counts, start-up apart from steady tagging, time per stage (jobs.metrics).

    args: the job's arguments (jobs.driver.JobArgs: manifest, output, incremental, profile).
    """
    times, counts, marks = result.task_times, result.counts, result.marks
    timing = run_record(
        times, jvm_started=jvm_started, main_started=main_started, session_s=session_s, rows_in=counts["rows_in"],
        driver_stages={name: result.phases.get(name, 0.0) for name in M.DRIVER_PHASES},
        breakdown=startup_breakdown({"main_at": main_started, **marks}, times, jvm_started),
    )  # fmt: skip
    # Models the warm-up built (before any tagging task) count as builds, and their time as model load.
    timing["model_builds"] += marks.get("warm_model_builds", 0)
    timing["startup"]["model_load_s_max"] = max(timing["startup"]["model_load_s_max"], marks.get("warm_model_load_s_max", 0.0))
    return {
        "run_id": result.run_id,
        "record_id": uuid.uuid4().hex,
        "profile": args.profile,
        "settings": settings.as_dict(),
        "manifest": args.manifest,
        "output": args.output,
        "incremental": args.incremental,
        "resumed": result.resumed,
        # The lease: the expired holder this run took over (its run id), and images tagged again
        # because files of a committed write were gone.
        "lease_taken_over_from": result.lease_taken_over_from,
        "repaired": result.repaired,
        "model_name": models.backbone.name,
        "model_version": models.backbone.version,
        "models": models.versions(),
        **{k: counts[k] for k in ("rows_in", "ok", "error", "skipped", "skipped_duplicates", "skipped_done")},
        # How the tagged rows were made: fetch + decode + backbone, or heads on a stored embedding.
        "paths": {"full": counts["path_full"], "stored_embedding": counts["path_stored_embedding"]},
        "stored_embedding_s": times.get(M.STORED_EMBEDDING_S, 0.0),
        **timing,
        # A listed manifest: keys seen, images kept, not images, not current (inventory).
        "manifest_listing": asdict(result.listing) if result.listing else None,
        # The progress lines' time series; t_s counts from the JVM's start, like startup.first_model_ready_s.
        "progress": [{"t_s": round(p["at"] - jvm_started, 3), **{k: p[k] for k in PROGRESS_KEYS}} for p in result.progress],
    }


def render_summary(record: dict, examples: list[dict]) -> str:
    stages = record["stages"]
    lines = [
        f"model       {record['model_name']} {record['model_version']}   run {record['run_id']}"
        + ("  (resumed)" if record["resumed"] else ""),
        f"rows in     {record['rows_in']}"
        + (f"   ({record['repaired']} repaired: their committed rows were gone, tagged again)" if record.get("repaired") else ""),
        f"ok          {record['ok']}",
        f"error       {record['error']}",
        f"skipped     {record['skipped']} ({record['skipped_duplicates']} duplicate image_id, "
        f"{record['skipped_done']} already tagged by these models)",
        f"paths       {record['paths']['full']} full (fetch, decode, backbone, heads), "
        f"{record['paths']['stored_embedding']} heads only, on stored embeddings (no fetch)",
        f"wall        {record['wall_s']:.1f} s, {record['images_per_s']:.1f} images/s end to end; "
        f"start-up {record['startup_s']:.1f} s, then {record['steady_images_per_s']:.1f} images/s steady",
        "stages      "
        + ", ".join(
            f"{k[:-2]} {stages[k]:.1f}s" for k in ("read_manifest_s", "fetch_s", "decode_s", "infer_s", "spark_io_s", "write_s")
        ),
        "            (fetch/decode summed over threads and tasks; infer summed over tasks)",
    ]
    listing = record.get("manifest_listing")
    if listing:
        lines.insert(
            1,
            f"listed      {listing['source']}: {listing['keys']} entries, {listing['kept']} images kept, "
            f"{listing['not_image']} not images, {listing['inventory_skipped']} not current or delete markers",
        )
    heads = [head["name"] for head in record["settings"]["model"]["heads"]]
    for row in examples:
        if row["tags"] is None:
            tags = "(heads only, on the stored embedding)"
        else:
            tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"][:3])
        # A head an image already had is not rerun (no score here); under min_score the label is null.
        extra = "".join(
            f" | {name}: {row[name] or '(unsure)'} {row[f'{name}_score']:.2f}"
            for name in heads
            if row.get(f"{name}_score") is not None
        )
        if row.get("embedding") is not None:
            extra += f" | embedding[{len(row['embedding'])}]"
        lines.append(f"  {row['url'].rsplit('/', 1)[-1][:32]:32s} {tags}{extra}")
    return "\n".join(lines)
