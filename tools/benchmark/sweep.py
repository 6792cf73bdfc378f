"""The measurement behind conf/03-spark-parameters.yaml: one setting varied at a time.

    python -m tools.benchmark.sweep [--images 500]     (make sweep)

Each point is a `make bench` run of the 03 profile with one override, recorded under
reports/sweeps/<sweep_id>/; the table goes to reports/sweeps/<sweep_id>/sweep.md and
reports/sweep.md, which the report includes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.benchmark import runner

REPO = Path(__file__).resolve().parents[2]
PROFILE = "conf/03-spark-parameters.yaml"
ARROW = "spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch"
# (label, overrides): the 03 profile itself first, then one change at a time.
GRID = [
    ("03 as chosen: partitions 4, Arrow 64, 1 TF thread", []),
    ("partitions 2", ["spark.partitions=2"]),
    ("partitions 8", ["spark.partitions=8"]),
    ("Arrow batch 16", [f"{ARROW}=16"]),
    ("Arrow batch 256", [f"{ARROW}=256"]),
    ("TF threads: default", ["inference.threads=0"]),
]


def run_point(images: int, overrides: list[str], runs_dir: Path) -> dict:
    argv = ["--images", str(images), "--profiles", PROFILE, "--no-ceiling", "--no-reference", "--runs-dir", str(runs_dir)]
    for text in overrides:
        argv += ["--set", text]
    before = set(runs_dir.glob("*")) if runs_dir.exists() else set()
    runner.main(argv)
    (bench_dir,) = set(runs_dir.glob("*")) - before
    time.sleep(1.1)  # bench ids are timestamps with one-second resolution
    return json.loads((bench_dir / "03-spark-parameters.json").read_text())


def render(rows: list[tuple[str, dict]], images: int) -> str:
    lines = [
        f"### Spark parameter sweep ({images} images, local[2], 03 profile, one change at a time)",
        "",
        "| setting | end-to-end images/s | steady images/s | start-up s | peak MB | status |",
        "|---|---|---|---|---|---|",
    ]
    for label, record in rows:
        if record.get("status") != "ok":
            lines.append(f"| {label} | - | - | - | - | failed |")
            continue
        lines.append(
            f"| {label} | {record['images_per_s']:.1f} | {record['steady_images_per_s']:.1f} | "
            f"{record['startup_s']:.1f} | {record['peak_memory_mb']:.0f} | ok |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args(argv)
    sweep_dir = REPO / "reports" / "sweeps" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows = [(label, run_point(args.images, overrides, sweep_dir)) for label, overrides in GRID]
    table = render(rows, args.images)
    (sweep_dir / "sweep.md").write_text(table)
    (REPO / "reports" / "sweep.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
