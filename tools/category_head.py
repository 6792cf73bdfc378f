"""The built-in product-category head's labelled images: Fashion-MNIST items rendered as product photos.

    make train-head   (python -m tools.train_head: no --labels means these images, the head product_category)

The head is trained as any own-data head is (tools/head_training.py: split, linear and MLP heads,
temperature scaling, min_score, the one report); only its labelled images differ, and this module
makes them, with the job's decode settings (jobs.config DecodeSettings from the profile: a head is
never trained on other preprocessing than the job gives it):

1. render: each 28x28 item becomes a backbone input in one of two styles (RENDERS): "catalogue",
   the crop the job would feed the backbone for a tools.datasets.product_photo (`render_item`, a
   shortcut of product_photo + jobs.decode.prepare at the crop's final scale), or "plain", the
   inverted greyscale item on white (`render_plain`). Training mixes both (--plain-share): a head
   trained on plain renders alone gets 28% of catalogue renders right, one trained on catalogue
   renders alone tops out near 87% on them (random tints are a large nuisance for the ImageNet
   backbone), and the mix serves both. The test items are rendered in both styles: the --gate
   style is the report's test split, the other one of its other_tests;
2. embed: the profile's backbone (model.uri, through the job's runtime) turns renders into raw
   embeddings (input_normalisation "none"), cached as .npz so a rerun only trains;
3. split: a stratified subset of the 60,000 training items, of which a stratified share is held
   out for validation (early stopping, head choice, calibration, min_score); the 10,000 test
   items are only evaluated;
4. checks on the job's own path: --pipeline-check N generated product photos (JPEG, the job's
   decode, backbone, head), and the real photos of the out-of-domain check, prepared the same way.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from jobs.config import DecodeSettings
from jobs.decode import prepare_with
from model.efficientnet_lite import HEAD_CHANNELS
from tools.datasets import FASHION_CLASSES, fashion_mnist, product_photo, real_photo_paths
from tools.head_training import LabelledEmbeddings, predict, stratified_subset, train_val_split

HEAD_NAME = "product_category"
# Bump when render_item or render_plain changes: cached embeddings of the old renders are then ignored.
RENDER_VERSION = 1
log = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# 1. render
# --------------------------------------------------------------------------------------------
def render_item(item: np.ndarray, rng: np.random.Generator, *, decode: DecodeSettings) -> np.ndarray:
    """A 28x28 Fashion-MNIST item as the backbone input the job would make of its product photo.

    Why render and not just invert-and-upscale: at run time the head sees embeddings of
    catalogue photos (tools.datasets.product_photo: a tinted object on an off-white, unevenly
    lit backdrop with a soft shadow and sensor noise, 600-1000 px), resized to 256 on the
    shorter side and centre-cropped by jobs.decode.prepare (the job's decode settings). A black-background,
    white-object upscale is a different input for an ImageNet backbone (different embedding
    statistics), so a head trained on it transfers poorly. Rendering every 600-1000 px photo
    and shrinking it would cost ~10x the time, so this draws the same random photo geometry
    and paints only the 224x224 crop that prepare() keeps, at its final scale (~1 ms/item).
    Returns uint8 (image_size, image_size, 3), both sizes from decode.
    """
    image_size, resize_shorter = decode.image_size, decode.resize_shorter
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


def render_plain(item: np.ndarray, rng: np.random.Generator, *, decode: DecodeSettings) -> np.ndarray:
    """The item inverted (dark garment on white) and upscaled, framed as render_item frames it.

    The usual way Fashion-MNIST is fed to an ImageNet backbone; a plain studio shot. A head
    trained on plain renders alone gets 28% of catalogue renders right (colour is a large
    nuisance for the backbone), so training mixes both styles (see RENDERS).
    """
    image_size, resize_shorter = decode.image_size, decode.resize_shorter
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


def render_items(
    items: np.ndarray, indices: np.ndarray, *, split: str, seed: int, decode: DecodeSettings, style: str = "catalogue"
) -> np.ndarray:
    """Render items[indices] in a style (seeded per item); uint8 (len(indices), image_size, image_size, 3)."""
    render = RENDERS[style]
    return np.stack([render(items[i], item_rng(seed, split, i), decode=decode) for i in indices])


def assign_styles(count: int, plain_share: float, seed: int) -> np.ndarray:
    """A render style per training item: "plain" for a seeded plain_share of them, else "catalogue"."""
    plain = np.random.default_rng([seed, 2]).random(count) < plain_share
    return np.where(plain, "plain", "catalogue")


# --------------------------------------------------------------------------------------------
# 2. embed (with an on-disk cache)
# --------------------------------------------------------------------------------------------
def backbone_embedder(artifact, *, batch_size: int) -> Embed:
    """uint8 (N, H, W, 3) -> raw float32 (N, 1280) embeddings, through the job's own runtime (model.runtime), all cores."""
    from model.runtime import build_model_runner

    model = build_model_runner(artifact, batch_size=batch_size, threads=os.cpu_count() or 1)

    def embed(batch: np.ndarray) -> np.ndarray:
        chunks = [model(batch[i : i + batch_size])["embedding"] for i in range(0, len(batch), batch_size)]
        return np.concatenate(chunks).astype(np.float32)

    return embed


def job_backbone(model_uri: str, *, batch_size: int) -> Embed:
    """The profile's backbone (model.uri) as an embedder, loaded on first use: a run whose
    embeddings are all cached never loads it."""
    loaded: list[Embed] = []

    def embed(batch: np.ndarray) -> np.ndarray:
        if not loaded:
            from jobs.fetch import s3_client
            from model.artifact import load_artifact

            loaded.append(backbone_embedder(load_artifact(model_uri, s3_client=s3_client), batch_size=batch_size))
        return loaded[0](batch)

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


def cache_dir_for(cache: Path, backbone_version: str, split: str, seed: int, style: str, decode: DecodeSettings) -> Path:
    """Where one split's embeddings of one style live: renders depend on (seed, split, item, style, decode sizes)."""
    sizes = f"{decode.image_size}from{decode.resize_shorter}"
    return cache / f"fashion_embeddings_{backbone_version}_{split}_{style}_seed{seed}_{sizes}_render{RENDER_VERSION}"


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
# 3. the labelled embeddings the trainer takes; 4. the checks on the job's own path
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FashionOptions:
    """What the Fashion-MNIST images are: how many, which renders, where the cache is."""

    train_size: int = 50000
    test_size: int = 10000
    val_fraction: float = 0.1
    plain_share: float = 0.5
    gate: str = "plain"  # the test render the report's test split (and the target) uses
    cache: Path = Path("data/cache")
    seed: int = 7


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


def load_split(name: str, size: int, seed: int) -> Split:
    """A stratified subset of `size` items of a Fashion-MNIST split."""
    items, labels = fashion_mnist(name)
    return Split(name, items, labels, np.sort(stratified_subset(labels, size, seed)))


def split_embeddings(
    split: Split,
    indices: np.ndarray,
    style: str,
    *,
    options: FashionOptions,
    decode: DecodeSettings,
    embed: Embed,
    backbone_version: str,
    batch_size: int,
) -> np.ndarray:
    """Embeddings of split.items[indices] rendered in `style`: cached ones read, the others rendered and embedded."""

    def compute(missing: np.ndarray) -> np.ndarray:
        log.info("rendering (%s) and embedding %d %s items", style, len(missing), split.name)
        return embed_images(
            lambda pos: render_items(split.items, missing[pos], split=split.name, seed=options.seed, decode=decode, style=style),
            len(missing),
            embed,
            batch_size=batch_size,
        )

    directory = cache_dir_for(options.cache, backbone_version, split.name, options.seed, style, decode)
    return cached_embeddings(directory, indices, compute)


def fashion_embeddings(
    options: FashionOptions, *, decode: DecodeSettings, embed: Embed, backbone_version: str, batch_size: int
) -> tuple[LabelledEmbeddings, dict]:
    """The labelled embeddings of the rendered items, and what the report says of them ("labels", "counts", "renders")."""
    train, test = load_split("train", options.train_size, options.seed), load_split("t10k", options.test_size, options.seed)
    styles = assign_styles(len(train.indices), options.plain_share, options.seed)
    embedded = functools.partial(
        split_embeddings, options=options, decode=decode, embed=embed, backbone_version=backbone_version, batch_size=batch_size
    )
    x_train = np.empty((len(train.indices), HEAD_CHANNELS), np.float32)
    for style in RENDERS:
        chosen = styles == style
        if chosen.any():
            x_train[chosen] = embedded(train, train.indices[chosen], style)
    x_test = {style: embedded(test, test.indices, style) for style in RENDERS}
    train_pos, val_pos = train_val_split(train.y, options.val_fraction, options.seed)
    test_pos = len(x_train) + np.arange(len(test.indices))
    data = LabelledEmbeddings(
        x=np.concatenate([x_train, x_test[options.gate]]),
        y=np.concatenate([train.y, test.y]),
        class_names=list(FASHION_CLASSES),
        train=train_pos,
        val=val_pos,
        test=test_pos,
        split_rule=(
            f"a stratified {options.train_size} of the 60,000 training items, {options.val_fraction:.0%} of them "
            f"(stratified) validation; test: {options.test_size} test items rendered {options.gate} "
            f"(other_tests: the same items in the other renders)"
        ),
        input_normalisation="none",
        other_tests={style: (x, test.y) for style, x in x_test.items() if style != options.gate},
    )
    about = {
        "labels": f"Fashion-MNIST train split, rendered as catalogue or plain photos (seed {options.seed})",
        "counts": {"rows": len(train.indices), "used": len(train.indices), "dropped": 0},
        "renders": {
            "catalogue": "tinted object on an off-white backdrop, as tools.datasets.product_photo + jobs.decode.prepare",
            "plain": "inverted greyscale item on white (the usual Fashion-MNIST transfer setting)",
            "train_plain_share": options.plain_share,
            "train_by_render": {style: int((styles[train_pos] == style).sum()) for style in RENDERS},
            "decode": {"image_size": decode.image_size, "resize_shorter": decode.resize_shorter},
        },
    }
    return data, about


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def product_photo_check(model, embed: Embed, count: int, seed: int, *, decode: DecodeSettings) -> dict:
    """Accuracy on the job's own path: product_photo -> JPEG -> the job's decode -> backbone -> head (test items)."""
    items, labels = fashion_mnist("t10k")
    rng = np.random.default_rng(seed)
    positions = rng.choice(len(items), size=count, replace=False)
    images = [prepare_with(jpeg_bytes(product_photo(items[i], rng), int(rng.integers(85, 96))), decode) for i in positions]
    embeddings = np.concatenate([embed(np.stack(images[s : s + 16])) for s in range(0, count, 16)])
    predicted = predict(model, embeddings).argmax(axis=1)
    return {"count": count, "accuracy": round(float((predicted == labels[positions]).mean()), 4)}


def out_of_domain_embeddings(embed: Embed, *, decode: DecodeSettings) -> dict[str, np.ndarray]:
    """Raw embeddings of the shipped real photos, prepared by the job's decode (none without scikit-image)."""
    try:
        paths = [p for p in real_photo_paths() if p.is_file()]
    except SystemExit as exc:  # skimage_data_dir: scikit-image is missing
        log.warning("no out-of-domain check: %s", exc)
        return {}
    if not paths:
        return {}
    images = np.stack([prepare_with(p.read_bytes(), decode) for p in paths])
    return dict(zip((p.name for p in paths), embed(images), strict=True))
