"""Sample images for `make run-local` and `make bench`, from data that ships in packages.

Real photos come from the scikit-image wheel (coffee, chelsea the cat, a rocket, ...).
Product photos are generated from Fashion-MNIST (Debian package dataset-fashion-mnist):
each 28x28 item is inverted onto a white background, tinted, enlarged to a 600-1000 px
canvas with a soft shadow and sensor noise, and saved as JPEG, so sizes and decode cost
resemble a shop's catalogue. Both sources and the photo generator are tools/datasets.py's;
this module writes them out as datasets. Everything is seeded: same arguments, same files.

    python -m tools.sample_data --out data/sample --images 200
    python -m tools.sample_data --demo --out data/local --images 200 [--seed 7]  # make run-local's manifest
    python -m tools.sample_data --labelled --out data/labelled --images 300   # url,label for make train-head
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tools.datasets import (
    FASHION_CLASSES,
    REAL_PHOTOS,
    fashion_mnist,
    product_photo,
    real_photo_paths,
    skimage_data_dir,
)


def photo_variant(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A resized, cropped and mirrored view of a real photo, 600-1000 px on the long side."""
    photo = photo.convert("RGB")
    width, height = photo.size
    crop = rng.uniform(0.7, 1.0)
    cw, ch = int(width * crop), int(height * crop)
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    view = photo.crop((left, top, left + cw, top + ch))
    long_side = int(rng.integers(600, 1001))
    scale = long_side / max(cw, ch)
    view = view.resize((max(1, int(cw * scale)), max(1, int(ch * scale))), Image.Resampling.BICUBIC)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def sample_images(count: int, rng: np.random.Generator, photo_share: float) -> Iterator[tuple[Image.Image, str]]:
    """A seeded mix of (image, source): catalogue photos of Fashion-MNIST items and views of real photos."""
    items, labels = fashion_mnist("t10k")
    photos = [Image.open(p) for p in real_photo_paths()]
    for _ in range(count):
        if rng.random() < photo_share:
            k = int(rng.integers(len(photos)))
            yield photo_variant(photos[k], rng), f"photo:{REAL_PHOTOS[k]}"
        else:
            k = int(rng.integers(len(items)))
            yield product_photo(items[k], rng), f"fashion:{FASHION_CLASSES[labels[k]]}"


def cached_manifest(out: Path, stamp: dict, stamp_name: str = "dataset.json") -> Path | None:
    """out/manifest.csv when out holds a data set made with these arguments (its stamp file says so)."""
    manifest, stamp_file = out / "manifest.csv", out / stamp_name
    if manifest.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()).get("stamp") == stamp:
        return manifest
    return None


def write_manifest(
    out: Path, header: list[str], rows: list[tuple], stamp: dict, stamp_name: str = "dataset.json", **facts
) -> Path:
    """manifest.csv, then the stamp file ({"stamp": the arguments, **facts}) that marks the data set complete."""
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    (out / stamp_name).write_text(json.dumps({"stamp": stamp, **facts}, indent=2) + "\n")
    return manifest


def make_dataset(out: Path, images: int, *, seed: int = 7, photo_share: float = 0.1) -> Path:
    """Write `images` JPEGs and manifest.csv (url, image_id, source) under out; cached."""
    stamp = {"images": images, "seed": seed, "photo_share": photo_share, "version": 1}
    if manifest := cached_manifest(out, stamp):
        return manifest

    def encode(img: Image.Image, rng: np.random.Generator) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=int(rng.integers(85, 96)))
        return buffer.getvalue()

    files = write_sample_images(out, images, seed, photo_share, encode)
    rows = [(f.path.resolve().as_uri(), f"img-{f.index:06d}", f.source) for f in files]
    return write_manifest(out, ["url", "image_id", "source"], rows, stamp)


@dataclass(frozen=True)
class SampleFile:
    index: int
    path: Path
    source: str  # fashion:<class> or photo:<file>
    size: tuple[int, int]  # width, height
    bytes: int


def write_sample_images(
    out: Path, images: int, seed: int, photo_share: float, encode: Callable[[Image.Image, np.random.Generator], bytes]
) -> list[SampleFile]:
    """`images` seeded sample images (sample_images) written as out/img_NNNNNN.jpg by encode(img, rng)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i, (img, source) in enumerate(sample_images(images, rng, photo_share)):
        data = encode(img, rng)
        path = out / f"img_{i:06d}.jpg"
        path.write_bytes(data)
        files.append(SampleFile(i, path, source, img.size, len(data)))
    return files


def make_labelled_dataset(out: Path, images: int, *, seed: int = 7, classes: list[str] | None = None) -> Path:
    """Write `images` product photos and manifest.csv (url, label) under out, for `make train-head`.

    label is the Fashion-MNIST class the photo was made from. The classes (default: all ten)
    get equal shares (the first ones one more when `images` does not divide evenly); the
    items are drawn from the t10k split without repeats. Cached like make_dataset.
    """
    classes = list(classes or FASHION_CLASSES)
    unknown = sorted(set(classes) - set(FASHION_CLASSES))
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct Fashion-MNIST classes ({', '.join(FASHION_CLASSES)}); got {classes}")
    stamp = {"images": images, "seed": seed, "classes": classes, "version": 1}
    if manifest := cached_manifest(out, stamp, "labelled.json"):
        return manifest
    items, labels = fashion_mnist("t10k")
    rng = np.random.default_rng([seed, 3])
    shares = [images // len(classes) + (k < images % len(classes)) for k in range(len(classes))]
    picks = [
        (int(i), name)
        for name, share in zip(classes, shares, strict=True)
        for i in rng.choice(np.nonzero(labels == FASHION_CLASSES.index(name))[0], size=share, replace=False)
    ]
    order = rng.permutation(len(picks))  # classes interleaved, as a real label file would be
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, k in enumerate(order):
        index, name = picks[k]
        path = out / "images" / f"item_{n:06d}.jpg"
        product_photo(items[index], rng).save(path, "JPEG", quality=int(rng.integers(85, 96)))
        rows.append((path.resolve().as_uri(), name))
    return write_manifest(out, ["url", "label"], rows, stamp, "labelled.json")


def local_demo_manifest(out: Path, generated: int, *, seed: int = 7) -> Path:
    """run-local's manifest: the real photos, generated product photos (seeded), and two bad rows."""
    product_manifest = make_dataset(out / "products", generated, seed=seed, photo_share=0.0)
    with product_manifest.open() as f:
        product_rows = [(r["url"], r["image_id"]) for r in csv.DictReader(f)]
    rows = [(p.resolve().as_uri(), f"photo-{p.stem}") for p in real_photo_paths()]
    rows += product_rows
    rows += [
        ((out / "missing.jpg").resolve().as_uri(), "bad-missing"),
        (skimage_data_dir().joinpath("README.txt").as_uri(), "bad-not-an-image"),
    ]
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "image_id"])
        writer.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--demo", action="store_true", help="run-local's mix: real photos + products + bad rows")
    parser.add_argument("--labelled", action="store_true", help="product photos and manifest.csv with url,label")
    parser.add_argument("--classes", help="--labelled: comma-separated Fashion-MNIST classes (default: all ten)")
    args = parser.parse_args(argv)
    if args.labelled:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        manifest = make_labelled_dataset(args.out, args.images, seed=args.seed, classes=classes)
    elif args.demo:
        manifest = local_demo_manifest(args.out, args.images, seed=args.seed)
    else:
        manifest = make_dataset(args.out, args.images, seed=args.seed)
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
