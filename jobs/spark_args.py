"""Print spark-submit options (--master, --conf) from a profile: one source of truth.

    mapfile -t args < <(python -m jobs.spark_args --profile conf/local.yaml)
    spark-submit "${args[@]}" jobs/tag_images.py ...

One argument per line, so values with spaces or brackets survive the shell.

Settings such as spark.driver.memory only take effect when given to spark-submit,
before the driver JVM starts; the job also applies them when it builds its session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.config import ConfigError, Settings, load_settings
from jobs.exits import EXIT_BAD_INPUT, exit_status

JOB_SCRIPT = Path(__file__).with_name("tag_images.py")


def job_command(
    settings: Settings,
    *,
    manifest,
    output,
    overrides: list[str] = (),
    extra: list[str] = (),
    spark_submit: str | Path = "spark-submit",
    script: str | Path = JOB_SCRIPT,
) -> list[str]:
    """The spark-submit command line of the job: the profile's Spark options, the entry point, its
    arguments, every override as --set (so the job applies the same settings), then `extra`."""
    return [
        str(spark_submit), *spark_submit_args(settings), str(script), "--manifest", str(manifest), "--output", str(output),
        *[arg for override in overrides for arg in ("--set", override)], *extra,
    ]  # fmt: skip


def spark_submit_args(settings: Settings) -> list[str]:
    args = ["--master", settings.spark.master, "--name", settings.spark.app_name]
    for key, value in sorted(settings.spark.conf.items()):
        args += ["--conf", f"{key}={value}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    def print_args() -> int:
        print("\n".join(spark_submit_args(load_settings(args.profile, args.overrides))))
        return 0

    return exit_status(print_args, {ConfigError: EXIT_BAD_INPUT})


if __name__ == "__main__":
    sys.exit(main())
