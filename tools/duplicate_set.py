"""A near-duplicate set of generated product photos, and the duplicate threshold chosen on it.

    python -m tools.duplicate_set [--originals 200] [--out reports/duplicates.json] [--embeddings reports/duplicate_set.npz]

Each original is a catalogue photo of a Fashion-MNIST item (tools.datasets.product_photo). Its
copies, which must land in its duplicate group: JPEG quality 30, resized to 50%, cropped 5% off each
side, a text overlay, mirrored. Its different image, which must not: the same photo on another
background colour. Every image is decoded and embedded as the tagging job does (jobs.decode, the
default profile's backbone), then, for each threshold, the groups are the connected components of
the pairs at or above it (what jobs/similar_images.py writes), scored by:
- recall: the share of (original, copy) pairs that share a group;
- impure groups: the share of groups holding images of more than one original (a recoloured photo
  counts as an original of its own): the issue's bound is 1%;
and the share of each original's 10 nearest originals with the same product category (neighbours).
The chosen threshold is the lowest whose impure share is within the bound (the best recall that keeps it).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jobs.config import DecodeSettings, load_settings
from jobs.decode import prepare_with
from jobs.similar import brute_force, unit_rows
from model.artifact import load_artifact
from model.runtime import build_model_runner
from tools.datasets import FASHION_CLASSES, fashion_mnist, product_photo

COPIES = ("jpeg_q30", "half_size", "crop_5pct", "text_overlay", "mirrored")
THRESHOLDS = [round(float(t), 3) for t in np.arange(0.80, 0.995, 0.01)]
IMPURE_BOUND = 0.01


def copy_of(photo: Image.Image, kind: str) -> Image.Image:
    """One of COPIES: the same photo as a shop or a user might have re-saved it."""
    width, height = photo.size
    if kind == "jpeg_q30":
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=30)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "half_size":
        return photo.resize((width // 2, height // 2), Image.Resampling.BILINEAR)
    if kind == "crop_5pct":
        return photo.crop((width // 20, height // 20, width - width // 20, height - height // 20))
    if kind == "text_overlay":
        marked = photo.copy()
        font = ImageFont.load_default(size=max(12, height // 12))
        ImageDraw.Draw(marked).text((width // 20, height // 20), "SALE -30%", fill=(200, 0, 0), font=font)
        return marked
    if kind == "mirrored":
        return photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raise ValueError(f"unknown copy kind {kind}")


def recoloured(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo on another background colour: its near-white, unsaturated pixels tinted."""
    pixels = np.asarray(photo, dtype=np.float32)
    background = (pixels.min(axis=2) > 190) & (pixels.max(axis=2) - pixels.min(axis=2) < 30)
    colour = rng.uniform(60, 200, size=3)
    pixels[background] = pixels[background] / 255.0 * colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_set(originals: int, seed: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray, np.ndarray]:
    """(images, source: the original each is (a copy of); a recoloured photo is an original of its own,
    kind: "original", one of COPIES or "recoloured", category of each image)."""
    items, labels = fashion_mnist("t10k")
    rng = np.random.default_rng(seed)
    images, source, kind_of, category = [], [], [], []
    for number, index in enumerate(rng.choice(len(items), originals, replace=False)):
        photo = product_photo(items[index], rng)
        for kind in ("original", *COPIES, "recoloured"):
            image = photo if kind == "original" else recoloured(photo, rng) if kind == "recoloured" else copy_of(photo, kind)
            images.append(image)
            source.append(originals + number if kind == "recoloured" else number)
            kind_of.append(kind)
            category.append(int(labels[index]))
    return images, np.array(source), np.array(kind_of), np.array(category)


def embed(images: list[Image.Image], model_uri: str, batch_size: int = 32) -> np.ndarray:
    """Unit embeddings as the tagging job computes them: JPEG bytes, the job's decode, the backbone."""
    model = build_model_runner(load_artifact(model_uri), batch_size, threads=0)
    decode = DecodeSettings()
    out = []
    for start in range(0, len(images), batch_size):
        batch = []
        for image in images[start : start + batch_size]:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=90)
            batch.append(prepare_with(buffer.getvalue(), decode))
        out.append(np.asarray(model(np.stack(batch))["embedding"], dtype=np.float32))
    return unit_rows(np.concatenate(out))


def components(pairs: np.ndarray, size: int) -> np.ndarray:
    """Union-find over index pairs: each index's component root (the reference, not the Spark job's way)."""
    parent = np.arange(size)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(size)])


def score_threshold(scores: np.ndarray, source: np.ndarray, kind: np.ndarray, threshold: float) -> dict:
    upper = np.triu(scores >= threshold, k=1)
    group = components(np.argwhere(upper), len(scores))
    copies = np.flatnonzero(np.isin(kind, COPIES))
    original_of = {source[i]: i for i in np.flatnonzero(kind == "original")}
    joined = np.array([group[c] == group[original_of[source[c]]] for c in copies])
    by_copy = {name: round(float(joined[kind[copies] == name].mean()), 4) for name in COPIES}
    in_groups = [members for members in _groups(group) if len(members) > 1]
    impure = sum(len(set(source[m])) > 1 for m in in_groups)
    return {
        "threshold": threshold,
        "recall": round(float(joined.mean()), 4),
        "recall_by_copy": by_copy,
        "groups": len(in_groups),
        "impure_groups": impure,
        "impure_share": round(impure / max(1, len(in_groups)), 4),
    }


def _groups(group: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    return np.split(order, bounds)


def category_agreement(embeddings: np.ndarray, category: np.ndarray, originals: np.ndarray) -> float:
    """Share of each original's 10 nearest originals (copies left out) with its product category."""
    rows, _ = brute_force(embeddings[originals], k=10)
    return float((category[originals][rows] == category[originals][:, None]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.duplicate_set", description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("reports/duplicates.json"))
    parser.add_argument(
        "--embeddings", type=Path, default=Path("reports/duplicate_set.npz"), help="the embeddings, for bench-similar --real"
    )
    parser.add_argument("--reuse", action="store_true", help="score the embeddings saved in --embeddings again (no rendering)")
    args = parser.parse_args(argv)
    if args.reuse:
        saved = np.load(args.embeddings)
        embeddings, source, kind, category = (saved[name] for name in ("embeddings", "source", "kind", "category"))
    else:
        images, source, kind, category = build_set(args.originals, args.seed)
        embeddings = embed(images, load_settings().model.uri)
        args.embeddings.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.embeddings, embeddings=embeddings, source=source, kind=kind, category=category)
    scores = embeddings @ embeddings.T
    points = [score_threshold(scores, source, kind, t) for t in THRESHOLDS]
    within_bound = [p for p in points if p["impure_share"] <= IMPURE_BOUND]
    chosen = min(within_bound, key=lambda p: p["threshold"]) if within_bound else None
    originals = np.flatnonzero(kind == "original")
    report = {
        "images": len(embeddings),
        "originals": args.originals,
        "copies": list(COPIES),
        "different": "recoloured background (an original of its own)",
        "impure_bound": IMPURE_BOUND,
        "chosen_threshold": chosen and chosen["threshold"],
        "chosen": chosen,
        "neighbour_category_agreement_at_10": round(category_agreement(embeddings, category, originals), 4),
        "categories": FASHION_CLASSES,
        "thresholds": points,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("thresholds", "categories")}, indent=2))
    for p in points:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
