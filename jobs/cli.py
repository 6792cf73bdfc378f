"""Command line of the tagging job: parse, validate, run, print the summary."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

from jobs.config import ConfigError, load_settings
from jobs.manifest import FORMATS, ManifestError
from model.artifact import ArtifactError, load_artifact

log = logging.getLogger("image_tagger")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tag_images.py",
        description="Tag images listed in a manifest with a CNN; write one Parquet row per input row.",
    )
    parser.add_argument("--manifest", required=True, help="manifest URI: Parquet, CSV with header, or text (one URL a line)")
    parser.add_argument("--output", required=True, help="output Parquet dataset URI (local path or s3://)")
    parser.add_argument("--profile", help="profile YAML (default: conf/local.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a profile key by dotted path; VALUE is YAML (repeatable)",
    )
    parser.add_argument("--manifest-format", choices=FORMATS, default="auto", help="default: from the file name")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    # Validate everything cheap before any Spark work starts.
    settings = load_settings(args.profile, args.overrides)
    artifact = load_artifact(settings.model.uri)
    log.info("model %s version %s from %s", artifact.name, artifact.version, settings.model.uri)

    from jobs.manifest import read_manifest
    from jobs.pipeline import StageTimes, build_spark, summarise, tag_dataframe

    started = time.perf_counter()
    spark = build_spark(settings)
    try:
        manifest = read_manifest(spark, args.manifest, args.manifest_format)
        stage_times = spark.sparkContext.accumulator(Counter(), StageTimes())
        tagged = tag_dataframe(manifest, artifact, settings, stage_times)
        tagged.write.mode("overwrite").parquet(args.output)
        summary = summarise(spark, args.output, time.perf_counter() - started, stage_times.value)
        rows_in = manifest.count()
        if rows_in != summary.rows_in:
            log.error("accounting mismatch: %d rows in, %d rows written", rows_in, summary.rows_in)
            return 3
        print(summary.render(f"{artifact.name} {artifact.version}"), flush=True)
        return 0
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ConfigError, ManifestError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
