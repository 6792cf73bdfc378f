"""Product-category head: a classifier on the frozen EfficientNet-Lite0 embedding.

    python -m tools.train_category_head [--train-size N] [--cache DIR] [--out DIR] [--reports DIR]   (make train-head)

Transfer learning, last layer first: the backbone stays frozen; only a small head on its
1280-d embedding (global average pool, raw: not L2-normalised) is trained. Steps, each a
small function:

1. render: each 28x28 item becomes a 224x224 backbone input in one of two styles (RENDERS):
   "catalogue", the crop the job would feed the backbone for a tools.datasets.product_photo
   (`render_item`, a 224-pixel shortcut of product_photo + jobs.decode.prepare), or "plain",
   the inverted greyscale item on white (`render_plain`). Training mixes both (--plain-share):
   a head trained on plain renders alone gets 28% of catalogue renders right, one trained on
   catalogue renders alone tops out near 87% on them (random tints are a large nuisance for
   the ImageNet backbone), and the mix serves both. The test set is evaluated in both styles;
   the target (--gate, --target) applies to one of them, and the record shows both;
2. embed: the backbone (TFLite via a SavedModel export: ~2x faster than Keras on CPU, same
   numbers to 1e-5) turns images into embeddings, cached as .npz so a rerun only trains;
3. split: a stratified subset of the 60,000 training items, of which a stratified share is held
   out for validation (early stopping, head choice); the 10,000 test items are only evaluated;
4. train: a linear softmax head first, then a one-hidden-layer MLP (HEAD_SETTINGS); the MLP is
   kept only when it beats the linear head on validation by `--mlp-margin`;
5. evaluate + write: reports/train-head/evaluation.json, confusion_matrix.png, and the versioned
   artifact model/artifacts/product_category (written only when the test target is met; the
   exit status is 1 otherwise). With --pipeline-check N, N generated product photos also run
   the job's own path (JPEG, the job's decode, backbone, head): the command
   (tools/train_category_head.py) passes the job's decode in (`main(..., prepare=jobs.decode.prepare)`).

Steps 3-5 use the building blocks in tools/head_training.py, which the own-data path
(`make train-head LABELS=... NAME=...`, tools/train_head.py) shares.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from model.efficientnet_lite import HEAD_CHANNELS
from tools import head_training
from tools.datasets import FASHION_CLASSES, fashion_mnist, product_photo
from tools.head_training import (
    choose_head,
    evaluate,
    plot_confusion,
    predict,
    stratified_subset,
    train_head,
    train_val_split,
)

HEAD_NAME = "product_category"
BACKBONE_DIR = Path("model/artifacts/efficientnet_lite0")
DEFAULT_OUT = Path("model/artifacts") / HEAD_NAME
DEFAULT_CACHE = Path("data/cache")
DEFAULT_REPORTS = Path("reports/train-head")
IMAGE_SIZE = 224
RESIZE_SHORTER = 256
# Bump when render_item changes: cached embeddings of the old renders are then ignored.
RENDER_VERSION = 1
log = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]
# The job's decode, jobs.decode.prepare: (image bytes, *, max_pixels, resize_shorter, image_size) -> uint8 (H, W, 3).
# Passed in by the command (tools/train_category_head.py).
Prepare = Callable[..., np.ndarray]
# The product-category head's artifact: raw (not L2-normalised) embedding in.
write_head_artifact = functools.partial(head_training.write_head_artifact, name=HEAD_NAME, input_normalisation="none")


# --------------------------------------------------------------------------------------------
# 1. render
# --------------------------------------------------------------------------------------------
def render_item(
    item: np.ndarray, rng: np.random.Generator, *, image_size: int = IMAGE_SIZE, resize_shorter: int = RESIZE_SHORTER
) -> np.ndarray:
    """A 28x28 Fashion-MNIST item as the backbone input the job would make of its product photo.

    Why render and not just invert-and-upscale: at run time the head sees embeddings of
    catalogue photos (tools.datasets.product_photo: a tinted object on an off-white, unevenly
    lit backdrop with a soft shadow and sensor noise, 600-1000 px), resized to 256 on the
    shorter side and centre-cropped to 224 by jobs.decode.prepare. A black-background,
    white-object upscale is a different input for an ImageNet backbone (different embedding
    statistics), so a head trained on it transfers poorly. Rendering every 600-1000 px photo
    and shrinking it would cost ~10x the time, so this draws the same random photo geometry
    and paints only the 224x224 crop that prepare() keeps, at its final scale (~1 ms/item).
    Returns uint8 (image_size, image_size, 3).
    """
    # The photo's geometry, drawn as product_photo draws it.
    long_side = int(rng.integers(600, 1001))
    short_side = int(long_side * rng.uniform(0.75, 1.0))
    landscape = rng.random() < 0.5
    photo_height = short_side if landscape else long_side
    scale = resize_shorter / short_side  # prepare(): shorter side -> resize_shorter
    tint = rng.uniform(0, 18, size=3)
    falloff = rng.uniform(0.85, 0.97)
    side_share = rng.uniform(0.6, 0.85)
    colour = rng.uniform(20, 230, size=3)

    # Backdrop: off-white with the vertical light falloff, over the rows the centre crop keeps.
    resized_height = max(image_size, round(photo_height * scale))
    top_crop = (resized_height - image_size) // 2
    rows = (top_crop + np.arange(image_size)) / resized_height
    canvas = np.empty((image_size, image_size, 3), np.float32)
    canvas[:] = (255.0 - tint).astype(np.float32)
    canvas *= (1.0 + (falloff - 1.0) * rows)[:, None, None].astype(np.float32)

    # The object, centred in the photo and so in the crop; side in crop pixels.
    side_original = int(min(long_side, short_side) * side_share)
    side = max(2, min(image_size, round(side_original * scale)))
    mask = np.asarray(Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255.0
    cells = side_original // 8 + 1  # product_photo's texture grid, ~8 source pixels a cell
    texture = np.asarray(Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8)).resize((side, side)), np.float32)[
        ..., None
    ]
    obj = colour.astype(np.float32) * (0.75 + texture / 1000.0)
    top = left = (image_size - side) // 2
    shadow = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(side / 40))
    shadow_alpha = np.asarray(shadow, np.float32)[..., None] / 255.0 * 0.25
    offset = top + side // 40
    region = canvas[offset : offset + side, left : left + side]
    region *= 1 - shadow_alpha[: region.shape[0], : region.shape[1]]
    alpha = mask[..., None]
    patch = canvas[top : top + side, left : left + side]
    canvas[top : top + side, left : left + side] = patch * (1 - alpha) + obj * alpha
    # Sensor noise (std 3 at full size) averages down when the photo is shrunk by 1/scale; a
    # random window of a fixed noise tile costs 0.1 ms where fresh normal draws cost 2 ms.
    tile = _noise_tile()
    y, x = rng.integers(0, tile.shape[0] - image_size, size=2)
    canvas += tile[y : y + image_size, x : x + image_size] * np.float32(3.0 * scale)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _noise_tile(size: int = 512) -> np.ndarray:
    return np.random.default_rng(20240601).standard_normal((size, size, 3), dtype=np.float32)


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each item's own random stream: renders do not depend on batch or subset boundaries."""
    return np.random.default_rng([seed, {"train": 0, "t10k": 1}[split], int(index)])


def render_plain(
    item: np.ndarray, rng: np.random.Generator, *, image_size: int = IMAGE_SIZE, resize_shorter: int = RESIZE_SHORTER
) -> np.ndarray:
    """The item inverted (dark garment on white) and upscaled, framed as render_item frames it.

    The usual way Fashion-MNIST is fed to an ImageNet backbone; a plain studio shot. A head
    trained on plain renders alone gets 28% of catalogue renders right (colour is a large
    nuisance for the backbone), so training mixes both styles (see RENDERS).
    """
    side = max(2, min(image_size, round(resize_shorter * rng.uniform(0.6, 0.85))))
    canvas = np.full((image_size, image_size), 255, np.uint8)
    top = (image_size - side) // 2
    canvas[top : top + side, top : top + side] = np.asarray(
        Image.fromarray(255 - item).resize((side, side), Image.Resampling.BICUBIC), np.uint8
    )
    return np.repeat(canvas[..., None], 3, axis=2)


# Render styles: "catalogue" is what the job sees for tools.datasets product photos (tinted
# object, off-white backdrop); "plain" is the classic inverted-greyscale transfer benchmark.
RENDERS = {"catalogue": render_item, "plain": render_plain}


def render_items(items: np.ndarray, indices: np.ndarray, *, split: str, seed: int, style: str = "catalogue") -> np.ndarray:
    """Render items[indices] in a style (seeded per item); uint8 (len(indices), 224, 224, 3)."""
    render = RENDERS[style]
    return np.stack([render(items[i], item_rng(seed, split, i)) for i in indices])


def assign_styles(count: int, plain_share: float, seed: int) -> np.ndarray:
    """A render style per training item: "plain" for a seeded plain_share of them, else "catalogue"."""
    plain = np.random.default_rng([seed, 2]).random(count) < plain_share
    return np.where(plain, "plain", "catalogue")


# --------------------------------------------------------------------------------------------
# 2. embed (with an on-disk cache)
# --------------------------------------------------------------------------------------------
def read_backbone_meta(backbone_dir: Path) -> dict:
    path = backbone_dir / "model.json"
    if not path.is_file():
        raise SystemExit(f"backbone artifact missing: {path} (run `make model`)")
    return json.loads(path.read_text(encoding="utf-8"))


def backbone_embedder(backbone_dir: Path, *, backend: str = "tflite", threads: int = 0, batch_size: int = 32) -> Embed:
    """uint8 (N, 224, 224, 3) -> raw float32 (N, 1280) embeddings, through the job's own runtime (model.runtime).

    backend "tflite" uses the TFLite artifact `make model` builds beside the Keras one (same
    weights, about half the time per image); "keras" the Keras artifact itself.
    """
    from model.artifact import load_artifact
    from model.runtime import build_model_runner

    source = backbone_dir.parent / f"{backbone_dir.name}_tflite" if backend == "tflite" else backbone_dir
    artifact = load_artifact(str(source))
    model = build_model_runner(artifact, batch_size=batch_size, threads=threads or os.cpu_count() or 1)

    def embed(batch: np.ndarray) -> np.ndarray:
        chunks = [model(batch[i : i + batch_size])["embedding"] for i in range(0, len(batch), batch_size)]
        return np.concatenate(chunks).astype(np.float32)

    return embed


def embed_images(render: Callable[[np.ndarray], np.ndarray], count: int, embed: Embed, *, batch_size: int) -> np.ndarray:
    """Embed `count` images made batch by batch by render(positions); the next batch renders
    in a thread while the backbone runs (Pillow and TFLite release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((count, HEAD_CHANNELS), np.float32)
    starts = list(range(0, count, batch_size))
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(render, np.arange(0, min(batch_size, count)))
        for n, start in enumerate(starts):
            images = pending.result()
            if n + 1 < len(starts):
                nxt = starts[n + 1]
                pending = pool.submit(render, np.arange(nxt, min(nxt + batch_size, count)))
            out[start : start + len(images)] = embed(images)
            if (n + 1) % 100 == 0:
                rate = (start + len(images)) / (time.perf_counter() - started)
                log.info("embedded %d/%d images (%.0f img/s)", start + len(images), count, rate)
    return out


def cache_dir_for(cache: Path, backbone_version: str, split: str, seed: int, style: str = "catalogue") -> Path:
    """Where one split's embeddings of one style live: renders depend on (seed, split, item, style)."""
    return cache / f"fashion_embeddings_{backbone_version}_{split}_{style}_seed{seed}_render{RENDER_VERSION}"


def read_cache(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, embeddings) from every part file in directory; empty when there is none."""
    parts = sorted(directory.glob("part-*.npz")) if directory.is_dir() else []
    indices, embeddings = [np.empty(0, np.int64)], [np.empty((0, HEAD_CHANNELS), np.float32)]
    for part in parts:
        with np.load(part) as data:
            indices.append(data["indices"].astype(np.int64))
            embeddings.append(data["embeddings"].astype(np.float32))
    return np.concatenate(indices), np.concatenate(embeddings)


def cached_embeddings(
    directory: Path, indices: np.ndarray, compute: Callable[[np.ndarray], np.ndarray], *, part_size: int = 5000
) -> np.ndarray:
    """Embeddings of item `indices`, in that order: cached ones read, the others computed.

    compute(missing indices) -> embeddings. New embeddings are written part by part
    (part_size items), so a larger --train-size reuses a smaller run's work and an
    interrupted run resumes where it stopped.
    """
    known, embeddings = read_cache(directory)
    row = {int(i): r for r, i in enumerate(known)}
    missing = np.array([i for i in dict.fromkeys(indices.tolist()) if i not in row], np.int64)
    if len(missing):
        log.info("%s: %d cached, %d to compute", directory.name, len(indices) - len(missing), len(missing))
        directory.mkdir(parents=True, exist_ok=True)
        new = [embeddings]
        for start in range(0, len(missing), part_size):
            chunk = missing[start : start + part_size]
            computed = np.asarray(compute(chunk), np.float32)
            tmp = directory / f"tmp-{os.getpid()}.npz"
            np.savez(tmp, indices=chunk, embeddings=computed)
            tmp.replace(directory / f"part-{time.time_ns()}-{chunk[0]}.npz")
            for r, i in enumerate(chunk, start=sum(len(e) for e in new)):
                row[int(i)] = r
            new.append(computed)
        embeddings = np.concatenate(new)
    else:
        log.info("%s: all %d embeddings cached", directory.name, len(indices))
    return embeddings[[row[int(i)] for i in indices]]


# --------------------------------------------------------------------------------------------
# 3-5. split, train, evaluate: tools/head_training.py; the check on the job's own path
# --------------------------------------------------------------------------------------------
def product_photo_check(
    model, embed: Embed, items: np.ndarray, labels: np.ndarray, count: int, seed: int, *, prepare: Prepare
) -> dict:
    """Accuracy on the job's own path: product_photo -> JPEG -> prepare (the job's decode) -> backbone -> head."""
    rng = np.random.default_rng(seed)
    positions = rng.choice(len(items), size=count, replace=False)
    images = []
    for i in positions:
        buffer = io.BytesIO()
        product_photo(items[i], rng).save(buffer, "JPEG", quality=int(rng.integers(85, 96)))
        images.append(prepare(buffer.getvalue(), max_pixels=64_000_000, resize_shorter=RESIZE_SHORTER, image_size=IMAGE_SIZE))
    embeddings = np.concatenate([embed(np.stack(images[s : s + 16])) for s in range(0, count, 16)])
    predicted = predict(model, embeddings).argmax(axis=1)
    return {"count": count, "accuracy": round(float((predicted == labels[positions]).mean()), 4)}


# --------------------------------------------------------------------------------------------
# The command: each step a function, main() runs them in order
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """One Fashion-MNIST split and the items of it in use (sorted indices)."""

    name: str  # "train" or "t10k"
    items: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # uint8 (N,)
    indices: np.ndarray

    @property
    def y(self) -> np.ndarray:
        return self.labels[self.indices].astype(np.int64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=50000, help="items from the 60,000 training split (stratified)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of --train-size held out for validation")
    parser.add_argument("--plain-share", type=float, default=0.5, help="share of training items rendered plain, not catalogue")
    parser.add_argument("--test-size", type=int, default=10000, help="test items to evaluate (all 10,000 for the record)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="head artifact directory to write")
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="evaluation record directory")
    parser.add_argument("--backbone", type=Path, default=BACKBONE_DIR, help="backbone artifact directory")
    parser.add_argument("--backend", choices=["tflite", "keras"], default="tflite", help="backbone runtime for embedding")
    parser.add_argument("--heads", default="linear,mlp", help="heads to train, comma-separated: linear, mlp")
    parser.add_argument("--mlp-margin", type=float, default=0.005, help="validation gain the MLP needs over the linear head")
    parser.add_argument("--gate", choices=sorted(RENDERS), default="plain", help="test render style the target applies to")
    parser.add_argument("--target", type=float, default=0.90, help="required test top-1 accuracy (exit 1 below it)")
    parser.add_argument("--pipeline-check", type=int, default=200, help="product photos run through the job's decode path")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="images per backbone call")
    parser.add_argument("--threads", type=int, default=0, help="backbone threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def load_splits(args: argparse.Namespace) -> tuple[Split, Split]:
    """The stratified training subset (--train-size) and test subset (--test-size) of Fashion-MNIST."""
    splits = []
    for name, size in (("train", args.train_size), ("t10k", args.test_size)):
        items, labels = fashion_mnist(name)
        splits.append(Split(name, items, labels, np.sort(stratified_subset(labels, size, args.seed))))
    train, test = splits
    return train, test


def lazy_backbone(args: argparse.Namespace) -> Embed:
    """The backbone embedder, loaded on first use: a run whose embeddings are all cached never loads it."""
    loaded: list[Embed] = []

    def embed(batch: np.ndarray) -> np.ndarray:
        if not loaded:
            loaded.append(
                backbone_embedder(args.backbone, backend=args.backend, threads=args.threads, batch_size=args.batch_size)
            )
        return loaded[0](batch)

    return embed


def split_embeddings(
    args: argparse.Namespace, split: Split, indices: np.ndarray, style: str, embed: Embed, backbone_version: str
) -> np.ndarray:
    """Embeddings of split.items[indices] rendered in `style`: cached ones read, the others rendered and embedded."""

    def compute(missing: np.ndarray) -> np.ndarray:
        log.info("rendering (%s) and embedding %d %s items", style, len(missing), split.name)
        return embed_images(
            lambda pos: render_items(split.items, missing[pos], split=split.name, seed=args.seed, style=style),
            len(missing),
            embed,
            batch_size=args.batch_size,
        )

    directory = cache_dir_for(args.cache, backbone_version, split.name, args.seed, style)
    return cached_embeddings(directory, indices, compute)


def embed_splits(
    args: argparse.Namespace, train: Split, styles: np.ndarray, test: Split, embed: Embed, backbone_version: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(training embeddings, each in its assigned style; test embeddings per style, every style)."""
    x_train = np.empty((len(train.indices), HEAD_CHANNELS), np.float32)
    for style in RENDERS:
        chosen = styles == style
        if chosen.any():
            x_train[chosen] = split_embeddings(args, train, train.indices[chosen], style, embed, backbone_version)
    x_test = {style: split_embeddings(args, test, test.indices, style, embed, backbone_version) for style in RENDERS}
    return x_train, x_test


def train_candidates(
    args: argparse.Namespace,
    x: np.ndarray,
    y: np.ndarray,
    train_pos: np.ndarray,
    val_pos: np.ndarray,
    x_test: dict[str, np.ndarray],
    y_test: np.ndarray,
    class_names: list[str],
) -> tuple[dict, dict]:
    """Each --heads kind trained: (kind -> model, kind -> validation and test accuracy per style + training info)."""
    heads, scores = {}, {}
    for kind in [k.strip() for k in args.heads.split(",") if k.strip()]:
        heads[kind], info = train_head(
            kind,
            x[train_pos],
            y[train_pos],
            x[val_pos],
            y[val_pos],
            num_classes=len(class_names),
            seed=args.seed,
            epochs=args.epochs,
            name=HEAD_NAME,
        )
        scores[kind] = {
            "validation_accuracy": evaluate(predict(heads[kind], x[val_pos]), y[val_pos], class_names)["accuracy"],
            **{
                f"test_accuracy_{s}": evaluate(predict(heads[kind], xs), y_test, class_names)["accuracy"]
                for s, xs in x_test.items()
            },
            **info,
        }
        log.info("%s head: %s", kind, scores[kind])
    return heads, scores


def evaluation_record(
    args: argparse.Namespace,
    *,
    meta: dict | None,
    chosen: str,
    scores: dict,
    backbone_meta: dict,
    styles: np.ndarray,
    train_pos: np.ndarray,
    val_pos: np.ndarray,
    test: Split,
    tests: dict[str, dict],
    validation: dict,
    pipeline: dict | None,
    timings: dict[str, float],
) -> dict:
    """reports/train-head/evaluation.json: the candidates, the chosen head, the gate, every evaluation."""
    accuracy = tests[args.gate]["accuracy"]
    passed = accuracy >= args.target
    return {
        "head": HEAD_NAME,
        "head_version": meta["version"] if meta else None,
        "head_type": chosen,
        "head_choice": f"linear unless the MLP beats it on validation accuracy by more than {args.mlp_margin}",
        "candidates": scores,
        "input_normalisation": "none (raw embedding; standardisation is a layer of the head)",
        "backbone": backbone_meta["name"],
        "backbone_version": backbone_meta["version"],
        "renders": {
            "catalogue": "tinted object on an off-white backdrop, as tools.datasets.product_photo + jobs.decode.prepare",
            "plain": "inverted greyscale item on white (the usual Fashion-MNIST transfer setting)",
            "train_plain_share": args.plain_share,
        },
        "sizes": {
            "train": len(train_pos),
            "validation": len(val_pos),
            "test": len(test.indices),
            "train_by_render": {style: int((styles[train_pos] == style).sum()) for style in RENDERS},
        },
        "seed": args.seed,
        "gate": {"render": args.gate, "target_test_accuracy": args.target, "test_accuracy": accuracy, "passed": passed},
        "passed": passed,
        "test": tests[args.gate],
        "test_by_render": {style: {"accuracy": r["accuracy"], "per_class": r["per_class"]} for style, r in tests.items()},
        "validation": validation,
        "product_photo_check": pipeline,
        "timings": timings,
    }


def write_reports(reports: Path, record: dict, class_names: list[str]) -> None:
    """evaluation.json and confusion_matrix.png (of the gate's test renders) under reports."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    gate = record["gate"]
    plot_confusion(
        np.array(record["test"]["confusion_matrix"]),
        class_names,
        reports / "confusion_matrix.png",
        f"{HEAD_NAME} ({record['head_type']}), {record['sizes']['test']} {gate['render']} test renders: "
        f"top-1 {gate['test_accuracy']:.2%}",
    )


def main(argv: list[str] | None = None, *, prepare: Prepare) -> int:
    """The whole command (python -m tools.train_category_head passes the job's decode as `prepare`)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # 1-2. render and embed (cached)
    backbone_meta = read_backbone_meta(args.backbone)
    class_names = list(FASHION_CLASSES)
    train, test = load_splits(args)
    styles = assign_styles(len(train.indices), args.plain_share, args.seed)
    embed = lazy_backbone(args)
    t = time.perf_counter()
    x_train, x_test = embed_splits(args, train, styles, test, embed, backbone_meta["version"])
    timings["embed_s"] = round(time.perf_counter() - t, 1)

    # 3-4. split and train; the head chosen on validation
    y_train, y_test = train.y, test.y
    train_pos, val_pos = train_val_split(y_train, args.val_fraction, args.seed)
    heads, scores = train_candidates(args, x_train, y_train, train_pos, val_pos, x_test, y_test, class_names)
    timings["train_s"] = round(sum(s["train_s"] for s in scores.values()), 1)
    chosen = choose_head({k: s["validation_accuracy"] for k, s in scores.items()}, args.mlp_margin)
    model = heads[chosen]

    # 5. evaluate, then write the artifact (only when the gate passes) and the record
    tests = {style: evaluate(predict(model, x), y_test, class_names) for style, x in x_test.items()}
    validation = evaluate(predict(model, x_train[val_pos]), y_train[val_pos], class_names)
    t = time.perf_counter()
    pipeline = (
        product_photo_check(model, embed, test.items, test.labels, args.pipeline_check, args.seed, prepare=prepare)
        if args.pipeline_check
        else None
    )
    timings["pipeline_check_s"] = round(time.perf_counter() - t, 1)
    accuracy = tests[args.gate]["accuracy"]
    meta = None
    if accuracy >= args.target:
        meta = write_head_artifact(
            model,
            args.out,
            class_names=class_names,
            backbone_meta=backbone_meta,
            head_kind=chosen,
            extra={
                "test_accuracy": {style: record["accuracy"] for style, record in tests.items()},
                "trained_on": f"Fashion-MNIST train split, {len(train_pos)} items rendered as catalogue or plain photos "
                "(tools/category_head.py)",
            },
        )
    timings["total_s"] = round(time.perf_counter() - started, 1)
    record = evaluation_record(
        args,
        meta=meta,
        chosen=chosen,
        scores=scores,
        backbone_meta=backbone_meta,
        styles=styles,
        train_pos=train_pos,
        val_pos=val_pos,
        test=test,
        tests=tests,
        validation=validation,
        pipeline=pipeline,
        timings=timings,
    )
    write_reports(args.reports, record, class_names)
    log.info(
        "test top-1 %s, validation %.4f, product photos %s; evaluation in %s (%.0f s in all)",
        {style: r["accuracy"] for style, r in tests.items()},
        validation["accuracy"],
        pipeline and pipeline["accuracy"],
        args.reports,
        timings["total_s"],
    )
    if meta is None:
        log.error("%s test accuracy %.4f is below the target %.2f: no artifact written", args.gate, accuracy, args.target)
        return 1
    log.info("wrote %s version %s to %s", meta["name"], meta["version"], args.out)
    return 0
