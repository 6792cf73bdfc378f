"""The benchmark's images: fixed, seeded, realistic product photos as JPEG files, cached.

Built from the same sources as tools/sample_data.py (Fashion-MNIST items staged as
catalogue photos, plus real photos from the scikit-image wheel), with one difference:
each file's JPEG quality is chosen so that its size lands in 50-200 KB, around a seeded
target size, as on a shop's catalogue (the plain sample data spreads from ~25 to ~230 KB).

    python -m tools.benchmark.dataset --out data/bench --images 500
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tools.sample_data import cached_manifest, write_manifest, write_sample_images

MIN_BYTES = 50_000
MAX_BYTES = 200_000
QUALITIES = (55, 97)  # the search range of JPEG quality
DATASET_VERSION = 2


def _search(img: Image.Image, target: int, low: int, high: int, **options) -> tuple[bytes, int]:
    lo, hi = QUALITIES
    best: tuple[bytes, int] | None = None

    def score(data: bytes) -> tuple[bool, int]:
        return low <= len(data) <= high, -abs(len(data) - target)

    while lo <= hi:
        quality = (lo + hi) // 2
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, **options)
        data = buf.getvalue()
        if best is None or score(data) > score(best[0]):
            best = (data, quality)
        if len(data) < target:
            lo = quality + 1
        else:
            hi = quality - 1
    assert best is not None
    return best


def encode_in_range(img: Image.Image, target: int, *, low: int = MIN_BYTES, high: int = MAX_BYTES) -> tuple[bytes, int]:
    """JPEG bytes of img whose size is close to target and inside [low, high] when possible.

    Binary search on quality (size grows with quality); a smooth image that stays under `low`
    even at the top quality is saved without chroma subsampling (4:4:4, larger files), as
    some shops' tools do. Returns (bytes, quality).
    """
    data, quality = _search(img, target, low, high)
    if len(data) < low:
        data, quality = _search(img, target, low, high, subsampling=0)
    return data, quality


def make_bench_dataset(out: Path, images: int, *, seed: int = 20240, photo_share: float = 0.15) -> Path:
    """Write `images` JPEGs plus manifest.csv (url, image_id, source, bytes, width, height); cached.

    The same arguments give the same files; a second call with them returns at once.
    """
    stamp = {"images": images, "seed": seed, "photo_share": photo_share, "version": DATASET_VERSION}
    if manifest := cached_manifest(out, stamp):
        return manifest

    def encode(img: Image.Image, rng: np.random.Generator) -> bytes:
        # Log-uniform target size: many mid-size files, some small and some large ones.
        target = int(np.exp(rng.uniform(np.log(MIN_BYTES * 1.1), np.log(MAX_BYTES * 0.95))))
        return encode_in_range(img, target)[0]

    files = write_sample_images(out, images, seed, photo_share, encode)
    rows = [(f.path.resolve().as_uri(), f"bench-{f.index:06d}", f.source, f.bytes, *f.size) for f in files]
    sizes = np.array([r[3] for r in rows])
    return write_manifest(
        out, ["url", "image_id", "source", "bytes", "width", "height"], rows, stamp,
        files=images,
        bytes_min=int(sizes.min()) if images else 0,
        bytes_median=int(np.median(sizes)) if images else 0,
        bytes_max=int(sizes.max()) if images else 0,
        in_range_share=float(np.mean((sizes >= MIN_BYTES) & (sizes <= MAX_BYTES))) if images else 1.0,
        photo_share=float(np.mean([r[2].startswith("photo:") for r in rows])) if images else 0.0,
    )  # fmt: skip


def dataset_stats(manifest: Path) -> dict:
    """The statistics written next to the manifest (sizes, share in 50-200 KB)."""
    return json.loads((manifest.parent / "dataset.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240)
    args = parser.parse_args(argv)
    manifest = make_bench_dataset(args.out, args.images, seed=args.seed)
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
