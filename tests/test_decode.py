import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs.decode import DecodeError, decode_image, prepare, resize_and_crop
from tests import image_factory as f

LIMIT = 64_000_000


def rgb(img):
    return np.asarray(img)


def test_jpeg_decodes_to_rgb():
    img = decode_image(f.jpeg(), max_pixels=LIMIT)
    assert (img.mode, img.size) == ("RGB", (64, 48))


def test_jpeg_draft_mode_downscales_but_keeps_resize_target():
    img = decode_image(f.jpeg(1600, 1200), max_pixels=LIMIT, min_size=256)
    assert img.size[1] >= 256 and img.size[0] < 1600  # DCT-scaled, still big enough


def test_exif_orientation_applied():
    assert decode_image(f.exif_rotated_jpeg(60, 30, orientation=6), max_pixels=LIMIT).size == (30, 60)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0), (257, 1)])
def test_16bit_grey_is_scaled_not_clipped(value, expected):
    img = decode_image(f.png_16bit_grey(value), max_pixels=LIMIT)
    assert img.mode == "RGB"
    assert np.all(rgb(img) == expected)


def test_palette_png_transparency_composited_on_white():
    pixels = rgb(decode_image(f.palette_png_with_transparency(), max_pixels=LIMIT))
    assert tuple(pixels[5, 1]) == (255, 0, 0)
    assert tuple(pixels[5, 8]) == (255, 255, 255)


def test_rgba_transparent_becomes_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.all(rgb(decode_image(f.encode(img, "PNG"), max_pixels=LIMIT)) == 255)


def test_cmyk_jpeg_converted():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = rgb(decode_image(f.encode(cmyk, "JPEG"), max_pixels=LIMIT))[4, 4]
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["L", "1", "LA", "I", "F", "YCbCr"])
def test_other_modes_become_rgb(mode):
    img = Image.new(mode, (6, 6))
    fmt = {"YCbCr": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    assert decode_image(f.encode(img, fmt), max_pixels=LIMIT).mode == "RGB"


def test_animated_gif_uses_first_frame():
    pixels = rgb(decode_image(f.animated_gif(), max_pixels=LIMIT))
    assert tuple(pixels[10, 10]) == (255, 0, 0)


def test_webp_and_tiny_images():
    assert decode_image(f.encode(f.gradient_rgb(), "WEBP"), max_pixels=LIMIT).size == (64, 48)
    one = decode_image(f.encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), max_pixels=LIMIT)
    assert resize_and_crop(one, resize_shorter=256, image_size=224).shape == (224, 224, 3)


def test_decompression_bomb_refused_before_decoding():
    data = f.bomb_png(20000)
    assert len(data) < 200_000
    with pytest.raises(DecodeError, match=r"20000x20000 = 400000000 pixels, over decode.max_pixels"):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty body"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not an image: the body is HTML"),
        (b"\x00\x01\x02garbage" * 10, "not an image: unrecognised format"),
    ],
)
def test_not_images(data, message):
    with pytest.raises(DecodeError, match=message):
        decode_image(data, max_pixels=LIMIT)


def test_truncated_jpeg():
    data = f.jpeg(200, 200)
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_resize_and_crop_centres():
    wide = Image.new("RGB", (512, 256), (0, 0, 0))
    wide.paste((255, 255, 255), (128, 0, 384, 256))  # white centre square
    out = resize_and_crop(wide, resize_shorter=256, image_size=224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out.min() > 240  # only the white centre survives the crop


def test_prepare_gives_model_input():
    assert prepare(f.jpeg(800, 600), max_pixels=LIMIT, resize_shorter=256, image_size=224).shape == (224, 224, 3)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_give_an_image_or_a_decode_error(data):
    try:
        img = decode_image(data, max_pixels=1_000_000)
    except DecodeError:
        return
    assert img.mode == "RGB"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4000), st.integers(1, 400))
def test_corrupted_jpegs_never_escape(cut, flip):
    data = bytearray(f.jpeg(96, 64))
    data[min(cut, len(data) - 1)] ^= flip % 256
    try:
        prepare(bytes(data[: max(1, len(data) - cut // 4)]), max_pixels=LIMIT, resize_shorter=32, image_size=32)
    except DecodeError:
        pass


def test_draft_decode_changes_pixels_only_slightly(photos):
    """JPEG draft (DCT scaling) must give nearly the same model input as a full decode."""
    data = f.encode(Image.open(photos["rocket"]).convert("RGB").resize((960, 1280)), "JPEG", quality=92)
    full = prepare(data, max_pixels=LIMIT, resize_shorter=256, image_size=224, draft=False).astype(float)
    fast = prepare(data, max_pixels=LIMIT, resize_shorter=256, image_size=224, draft=True).astype(float)
    assert np.abs(full - fast).mean() < 4.0
