"""Print a few images of jobs/similar_images.py's output with their neighbours, and its duplicate groups.

    python -m jobs.similar_show OUTPUT [--images N]

What `make similar-local` shows after the job: the two Parquet datasets read with pyarrow, no Spark.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import pyarrow.parquet as pq


def render(output: str, images: int) -> str:
    neighbours = pq.read_table(f"{output}/neighbours").sort_by("image_id").slice(0, images).to_pylist()
    lines = [f"{len(neighbours)} images and their neighbours (cosine):"]
    for row in neighbours:
        listed = ", ".join(f"{n['image_id']} {n['score']:.3f}" for n in row["neighbours"][:5])
        lines.append(f"  {row['image_id']}: {listed or '(none)'}")
    groups = defaultdict(list)
    for row in pq.read_table(f"{output}/duplicates").to_pylist():
        groups[row["group_id"]].append(f"{row['image_id']} {row['score_to_group']:.3f}")
    lines.append(f"{len(groups)} duplicate groups" + (":" if groups else ""))
    lines += [f"  {group_id}: {', '.join(sorted(members))}" for group_id, members in sorted(groups.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.similar_show", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="jobs/similar_images.py's --output")
    parser.add_argument("--images", type=int, default=5, help="images to show with their neighbours")
    args = parser.parse_args(argv)
    print(render(args.output, args.images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
