"""Images of every awkward kind, made in memory for decode tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient_rgb(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.dstack([x, y, np.full_like(x, 128)]), "RGB")


def jpeg(width: int = 64, height: int = 48, **kwargs) -> bytes:
    return encode(gradient_rgb(width, height), "JPEG", quality=90, **kwargs)


def png_16bit_grey(value: int, size: int = 16) -> bytes:
    return encode(Image.fromarray(np.full((size, size), value, dtype=np.uint16)), "PNG")


def exif_rotated_jpeg(width: int = 60, height: int = 30, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(gradient_rgb(width, height), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 5, 10))  # left half red, right half transparent black
    return encode(img, "PNG", transparency=0)


def bomb_png(side: int = 20000) -> bytes:
    """A small file that claims side*side pixels (1-bit, compresses to almost nothing)."""
    return encode(Image.new("1", (side, side), 0), "PNG")
