"""Data that ships in packages, for training and checking heads: Fashion-MNIST and real photos.

- Fashion-MNIST (Debian package dataset-fashion-mnist): 28x28 greyscale items in ten classes,
  read from its gzipped IDX files; `product_photo` makes a catalogue-style photo of an item
  (tools/category_head.py renders the same geometry straight at the backbone's input size);
- real photos from the scikit-image wheel (coffee, chelsea the cat, a rocket, ...), found
  without importing scikit-image: the out-of-domain check of a trained head.

The sample datasets built from them (manifests of JPEGs for the job) are tools/sample_data.py's.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REAL_PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"]


def skimage_data_dir() -> Path:
    """scikit-image's bundled photos, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-image is not installed (make install puts it in .venv)")
    return Path(spec.origin).parent / "data"


def real_photo_paths() -> list[Path]:
    return [skimage_data_dir() / name for name in REAL_PHOTOS]


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (images: 16-byte header; labels: 8-byte header)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) for split 'train' or 't10k'."""
    images = FASHION_MNIST_DIR / f"{split}-images-idx3-ubyte.gz"
    if not images.exists():
        raise SystemExit(f"{images} is missing: install the Debian package dataset-fashion-mnist (make install)")
    return read_idx(images), read_idx(FASHION_MNIST_DIR / f"{split}-labels-idx1-ubyte.gz")


def product_photo(item: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A catalogue-style photo of one Fashion-MNIST item: object on white, 600-1000 px."""
    long_side = int(rng.integers(600, 1001))
    short_side = int(long_side * rng.uniform(0.75, 1.0))
    width, height = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    canvas = np.full((height, width, 3), 255.0) - rng.uniform(0, 18, size=3)  # off-white backdrop
    # Vertical light falloff, as in a photo booth.
    canvas *= np.linspace(1.0, rng.uniform(0.85, 0.97), height)[:, None, None]
    side = int(min(width, height) * rng.uniform(0.6, 0.85))
    mask = np.asarray(Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    colour = rng.uniform(20, 230, size=3)
    texture = np.asarray(
        Image.fromarray((rng.random((side // 8 + 1, side // 8 + 1)) * 255).astype(np.uint8)).resize((side, side)),
        dtype=np.float64,
    )[..., None]
    obj = colour * (0.75 + texture / 1000.0)
    top, left = (height - side) // 2, (width - side) // 2
    shadow = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(side / 40))
    shadow_alpha = np.asarray(shadow, dtype=np.float64)[..., None] / 255.0 * 0.25
    region = canvas[top + side // 40 : top + side // 40 + side, left : left + side]
    region *= 1 - shadow_alpha[: region.shape[0], : region.shape[1]]
    alpha = mask[..., None]
    patch = canvas[top : top + side, left : left + side]
    canvas[top : top + side, left : left + side] = patch * (1 - alpha) + obj * alpha
    canvas += rng.normal(0, 3.0, canvas.shape)  # sensor noise keeps JPEG sizes realistic
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
