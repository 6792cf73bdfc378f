"""Command line of the tagging job: parse, validate, run, print the summary."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from jobs.config import ConfigError, add_profile_arguments, load_settings
from jobs.exits import EXIT_ACCOUNTING, EXIT_BAD_INPUT, exit_status, output_busy
from jobs.manifest import FORMATS, ManifestError, spark_reads
from model.artifact import ArtifactError

log = logging.getLogger("image_tagger")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tag_images.py",
        description="Tag images listed in a manifest with a CNN; write one Parquet row per input row.",
    )
    parser.add_argument(
        "--manifest",
        required=True,
        help="manifest URI: Parquet, CSV with header, or text (one URL a line); or where the images are: "
        "s3://bucket/prefix/ (listed), an S3 Inventory manifest.json, a local folder (file:///dir/ or a path)",
    )
    parser.add_argument("--output", required=True, help="output Parquet dataset URI (local path or s3://)")
    add_profile_arguments(parser, "profile YAML (default: conf/local.yaml)", log_level="INFO")
    parser.add_argument(
        "--manifest-format",
        choices=FORMATS,
        default="auto",
        help="default auto: from the name (.csv, .txt, manifest.json -> s3-inventory, s3://.../ -> s3-prefix, "
        "a local folder -> folder, else parquet)",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="keep the output and do per image only what it lacks for the profile's models: nothing, the heads it "
        "lacks (on its stored embedding, no fetch), or a full pass",
    )
    parser.add_argument("--metrics-out", type=Path, help="write the run's metrics record (JSON) here")
    return parser.parse_args(argv)


def tag(args: argparse.Namespace) -> int:
    main_started = time.time()
    # Validate everything cheap before any Spark work starts.
    settings = load_settings(args.profile, args.overrides)
    from jobs.infer import load_bundle

    models = load_bundle(settings.model.uri, settings.model.heads)
    log.info("models %s", models.versions())

    from jobs.driver import JobArgs, TaggingRun
    from jobs.metrics import jvm_started_at
    from jobs.run_record import metrics_record, render_summary
    from jobs.session import build_spark, require_filesystems
    from jobs.spark_keys import spark_version, unknown_keys

    session_started, session_at = time.perf_counter(), time.time()
    spark = build_spark(settings)
    session_s = time.perf_counter() - session_started
    jvm = spark.sparkContext._jvm
    jvm_started = jvm_started_at(spark)
    try:
        # Listed manifests (s3-prefix, s3-inventory, folder) go through boto3 / the local disk, not Hadoop.
        checked = {"--manifest": args.manifest} if spark_reads(args.manifest, args.manifest_format) else {}
        require_filesystems(spark, {**checked, "--output": args.output})
        unknown = unknown_keys(jvm, settings.spark.conf)
        if unknown:
            log.warning(
                "the profile sets Spark settings that Spark %s does not define (ignored): %s",
                spark_version(jvm),
                ", ".join(unknown),
            )
        job_args = JobArgs(args.manifest, args.output, args.manifest_format, args.incremental, args.profile)
        job = TaggingRun(spark, settings, models, job_args)
        job.marks["session_at"] = session_at
        result = job.execute()
        record = metrics_record(
            result, args=job_args, settings=settings, models=models, main_started=main_started, session_s=session_s,
            jvm_started=jvm_started,
        )  # fmt: skip
        if args.metrics_out:
            args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
            args.metrics_out.write_text(json.dumps(record, indent=2) + "\n")
        print(render_summary(record, job.examples(result.run_id)), flush=True)
        return 0
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jobs.driver import AccountingError

    bad_input = dict.fromkeys((ConfigError, ManifestError, ArtifactError), EXIT_BAD_INPUT)
    return exit_status(lambda: tag(args), {**bad_input, AccountingError: EXIT_ACCOUNTING, **output_busy()})
