"""Decode and preprocess stages: image bytes -> RGB Pillow image -> model input array.

Decode handles what real merchant images throw at us: EXIF orientation, every Pillow
mode (16-bit greys scaled, not clipped; transparency composited on white, the usual
product-photo background), animated images (first frame), decompression bombs (pixel
limit checked from the header, before any pixel is decoded). JPEG draft mode lets the
decoder skip detail we would throw away when resizing to the model input.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from jobs.config import DecodeSettings

# We enforce our own pixel limit with a clear message; Pillow's global one would warn.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

WHITE = (255, 255, 255)


class DecodeError(Exception):
    """The bytes are not an image we can use; the message says why."""


def _describe_not_image(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "not an image: the body is HTML/XML (an error page?)"
    return f"not an image: unrecognised format (first bytes {data[:8].hex()})"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or black backgrounds."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        # 16-bit data fills 0..65535; scale to 0..255 rather than clipping at 255.
        top = 65535.0 if array.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        grey = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK (Adobe-inverted handled by Pillow), YCbCr, LAB, HSV
    return img


def decode_image(data: bytes, *, max_pixels: int, min_size: int = 0) -> Image.Image:
    """Return the image (first frame, EXIF-oriented) as RGB.

    min_size lets JPEG decoding downscale by DCT while both sides stay >= min_size.
    """
    if not data:
        raise DecodeError("empty body (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over decode.max_pixels={max_pixels} "
                    "(decompression bomb guard)"
                )
            if width < 1 or height < 1:
                raise DecodeError(f"image has no pixels ({width}x{height})")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if img.format == "JPEG" and min_size and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                scale = min(width, height) / min_size
                if scale >= 2:
                    img.draft(img.mode, (max(1, round(width / scale)), max(1, round(height / scale))))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(_describe_not_image(data)) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") et al.
        raise DecodeError(f"corrupt or truncated image: {exc}") from None


def resize_and_crop(img: Image.Image, *, resize_shorter: int, image_size: int) -> np.ndarray:
    """Resize the shorter side to resize_shorter, centre-crop image_size^2; uint8 (H, W, 3)."""
    width, height = img.size
    scale = resize_shorter / min(width, height)
    new_size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
    img = img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (new_size[0] - image_size) // 2
    top = (new_size[1] - image_size) // 2
    cropped = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(cropped, dtype=np.uint8)


def prepare(data: bytes, *, max_pixels: int, resize_shorter: int, image_size: int, draft: bool = True) -> np.ndarray:
    """Bytes -> model input: decode (with JPEG draft at the resize target) then resize+crop."""
    img = decode_image(data, max_pixels=max_pixels, min_size=resize_shorter if draft else 0)
    return resize_and_crop(img, resize_shorter=resize_shorter, image_size=image_size)


def prepare_with(data: bytes, decode: DecodeSettings) -> np.ndarray:
    """prepare() with a profile's decode settings: the one place that spells them out."""
    return prepare(
        data, max_pixels=decode.max_pixels, resize_shorter=decode.resize_shorter, image_size=decode.image_size,
        draft=decode.draft,
    )  # fmt: skip
