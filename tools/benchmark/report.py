"""`make report`: reports/latest/ from the newest bench run's records.

    python -m tools.benchmark.report [--runs-dir reports/runs] [--bench-id ID] [--out reports/latest]

Writes README.md (markdown.py: tables, per-iteration notes with the numbers, targets, cost), PNG
plots (plots.py) and summary.json (analysis.py). Everything comes from the run records; nothing
is re-measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from tools.benchmark import cost
from tools.benchmark.analysis import REPO, build_summary, latest_bench, load_bench
from tools.benchmark.markdown import render_markdown
from tools.benchmark.plots import make_plots


def write_report(bench: dict, prices: cost.PriceTable, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    summary = build_summary(bench, prices)
    plots = make_plots(bench, summary, out)
    (out / "README.md").write_text(render_markdown(bench, summary, prices, plots), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "reports" / "runs")
    parser.add_argument("--bench-id", help="default: the newest bench run")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "latest")
    parser.add_argument("--prices", type=Path, default=REPO / "conf" / "prices.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target does not hold")
    args = parser.parse_args(argv)
    bench_dir = args.runs_dir / args.bench_id if args.bench_id else latest_bench(args.runs_dir)
    try:
        prices = cost.load_prices(args.prices)
    except (cost.PriceError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = write_report(load_bench(bench_dir), prices, args.out)
    for t in summary["targets"]:
        print(f"target {'PASS' if t['passed'] else 'FAIL'}: {t['target']}: {t['detail']}")
    print(f"report: {args.out / 'README.md'} (from {bench_dir})")
    return 0 if summary["targets_met"] or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
