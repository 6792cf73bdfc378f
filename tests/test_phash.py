"""The perceptual hash (jobs/phash.py) and the duplicate rule that uses it (jobs/similar_images.py)."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pyspark.sql.pandas.types import to_arrow_schema

from jobs.config import DecodeSettings, SimilarSettings
from jobs.decode import prepare_with
from jobs.phash import HASH_BITS, MIRROR_MASK, copy_pair, distance, distances, perceptual_hash
from jobs.schema import RESULT_TYPE, ResultRow
from jobs.tagging import result_frame

DECODE = DecodeSettings()


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def hash_of(data: bytes) -> int:
    """As the tagging job hashes an image: of its decoded model input."""
    return perceptual_hash(prepare_with(data, DECODE))


@pytest.fixture(scope="module")
def coffee(photos) -> Image.Image:
    return Image.open(photos["coffee"]).convert("RGB")


def test_the_same_image_has_the_same_hash_with_63_bits_and_the_sign_bit_clear(photos):
    first, again = hash_of(photos["coffee"].read_bytes()), hash_of(photos["coffee"].read_bytes())
    assert first == again and 0 <= first < 2**63
    assert distance(first, first) == 0
    assert HASH_BITS == 63 and MIRROR_MASK.bit_count() == 32  # 4 odd columns u of 8, on 8 rows


@pytest.mark.parametrize(
    ("copy", "at_most"),
    [
        (lambda image: Image.open(io.BytesIO(encoded(image, "JPEG", quality=30))), 4),
        (lambda image: image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR), 4),
        (lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 4),
    ],
    ids=["jpeg_q30", "half_size", "mirrored"],
)
def test_copies_are_a_few_bits_away(coffee, copy, at_most):
    assert distance(hash_of(encoded(coffee)), hash_of(encoded(copy(coffee)))) <= at_most


def test_different_photos_are_far_apart(photos):
    hashes = {name: hash_of(path.read_bytes()) for name, path in photos.items()}
    apart = [distance(hashes[a], hashes[b]) for a in hashes for b in hashes if a < b]
    assert len(apart) == 10 and min(apart) >= 16


def test_a_mirror_image_flips_exactly_the_mirror_bits_and_is_at_distance_zero():
    pixels = (np.random.default_rng(3).random((224, 224, 3)) * 255).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(pixels).resize((28, 28)).resize((224, 224), Image.Resampling.BICUBIC))
    plain, mirrored = perceptual_hash(pixels), perceptual_hash(pixels[:, ::-1].copy())
    assert mirrored == plain ^ MIRROR_MASK and (plain ^ mirrored).bit_count() == 32
    assert distance(plain, mirrored) == 0
    # Mirror-blind, not blind: flipping one bit outside the mask, or one inside, costs one bit either way.
    assert distance(plain, mirrored ^ 1 << 1) == 1 and distance(plain, mirrored ^ 1) == 1


def test_numpy_distances_equal_the_scalar_distance():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 2**63, size=200, dtype=np.int64) for _ in range(2))
    b[:20] = a[:20] ^ MIRROR_MASK  # mirror images
    b[20:40] = a[20:40] ^ 0b1011  # three bits apart
    assert distances(a, b).tolist() == [distance(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    assert set(distances(a[:20], b[:20])) == {0} and set(distances(a[20:40], b[20:40])) == {3}
    assert distances(a[:3, None], a[None, :3]).shape == (3, 3)


def test_the_udf_batch_keeps_every_bit_of_a_hash_beside_nulls():
    big = 2**62 + 12345  # float64, what pandas makes of ints mixed with nulls, would round it
    rows = [ResultRow("ok", phash=big), ResultRow("error", error="decode: empty body (0 bytes)"), ResultRow("ok", phash=7)]
    table = pa.Table.from_pandas(result_frame(rows), schema=to_arrow_schema(RESULT_TYPE), preserve_index=False)
    assert table.column("phash").to_pylist() == [big, None, 7]


RULE = SimilarSettings(duplicate_threshold=0.92, phash_distance=4, phash_min_cosine=0.7)
# Hand-built candidate pairs: (cosine, hash distance or None: a row without a hash, a copy?).
PAIRS = [
    (0.95, 30, True),  # cosine alone
    (0.95, None, True),  # cosine alone, no hash
    (0.80, 3, True),  # a heavy JPEG re-save: the hashes say copy, the cosine allows it
    (0.80, 4, True),  # at the hash bound
    (0.80, 5, False),  # one bit past it
    (0.80, None, False),  # no hash: the cosine alone decides
    (0.69, 0, False),  # identical hashes, but the embeddings disagree (a different product)
    (0.71, 0, True),  # just above the cosine bound
]


def test_copy_pair_on_hand_built_pairs_in_numpy():
    cosine = np.array([c for c, _, _ in PAIRS])
    apart = np.array([HASH_BITS + 1 if d is None else d for _, d, _ in PAIRS])
    assert copy_pair(cosine, apart, RULE).tolist() == [want for _, _, want in PAIRS]
    off = SimilarSettings(duplicate_threshold=0.92, phash_distance=4, phash_min_cosine=0.92)
    assert copy_pair(cosine, apart, off).tolist() == [c >= 0.92 for c, _, _ in PAIRS]


@pytest.mark.spark
def test_the_job_accepts_the_same_pairs_and_groups_them(spark):
    from pyspark.sql import functions as F

    from jobs.similar_images import copy_pairs, duplicates, hash_distance

    base = 2**62 + 2**40 + 99
    hashes, found = [], []
    for i, (cosine, apart, _want) in enumerate(PAIRS):
        a, b = f"a{i}", f"b{i}"
        # Bits apart at the low end, plus b mirrored: the mirror costs nothing.
        other = None if apart is None else (base ^ ((1 << apart) - 1)) ^ MIRROR_MASK
        hashes += [(a, base), (b, other)]
        found.append((a, b, cosine))
    hashes_df = spark.createDataFrame(hashes, "image_id string, phash long")
    found_df = spark.createDataFrame(found, "image_id string, neighbour_id string, score float")
    accepted = {row.image_id for row in copy_pairs(found_df, RULE, hashes_df).collect()}
    assert accepted == {f"a{i}" for i, (_c, _d, want) in enumerate(PAIRS) if want}
    pairs = found_df.join(hashes_df.withColumnRenamed("phash", "ha"), "image_id").join(
        hashes_df.withColumnsRenamed({"image_id": "neighbour_id", "phash": "hb"}), "neighbour_id"
    )
    apart = pairs.select("image_id", hash_distance(F.col("ha"), F.col("hb")).alias("apart")).collect()
    assert {row.image_id: row.apart for row in apart} == {f"a{i}": d for i, (_c, d, _w) in enumerate(PAIRS)}
    groups = {row.image_id: row.group_id for row in duplicates(found_df, RULE, hashes_df).collect()}
    assert groups == {name: f"a{i}" for i, (_c, _d, w) in enumerate(PAIRS) if w for name in (f"a{i}", f"b{i}")}


def test_the_defaults_are_the_rule_chosen_in_the_report():
    chosen = json.loads((Path(__file__).parent.parent / "reports" / "duplicates.json").read_text())["phash"]["chosen"]
    defaults = SimilarSettings()
    assert {key: getattr(defaults, key) for key in ("duplicate_threshold", "phash_distance", "phash_min_cosine")} == {
        key: chosen[key] for key in ("duplicate_threshold", "phash_distance", "phash_min_cosine")
    }
    assert chosen["recall"] >= 0.95 and chosen["impure_share"] <= 0.01
