"""A 64-bit perceptual hash of an image, blind to left-right mirroring, and the distance between two.

The tagging job computes it per image from the model input it already holds (the decoded, resized and
cropped uint8 array), and jobs/similar_images.py uses it as a second signal for near-copies: a JPEG
re-save at quality 30 moves the embedding further than the hash (docs/similar.md, Quality).

The hash is a DCT hash (pHash): the grey image reduced to SIDE x SIDE, its 2-D DCT, and one bit per
coefficient of an 8 x 8 grid of frequencies (u horizontal, v vertical, each 0, STRIDE, 2 STRIDE, ...):
set when the coefficient is positive. Every STRIDE-th frequency rather than the lowest eight: on
tools/duplicate_set.py's product photos (one silhouette on white), the lowest frequencies of two
different products agree too often, and a JPEG quality 30 re-save still keeps these (docs/similar.md).
The DC term (u = v = 0) is always positive and carries no bit; its place, the top bit, stays 0, so
the hash is a non-negative int64. Mirroring the image left-right negates exactly the coefficients of
odd u, so the mirror's hash is the hash XOR MIRROR_MASK, and `distance` takes the smaller of the two
Hamming distances: a mirrored copy is at the distance of the copy itself.

Pure numpy and Pillow; no Spark. `copy_pair`, the duplicate rule, takes numpy arrays and Spark
Columns alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from jobs.config import SimilarSettings

SIDE = 32  # the grey thumbnail the DCT runs on
GRID = 8  # frequencies per axis: an 8 x 8 grid, 63 bits without the DC term
STRIDE = 3  # between the grid's frequencies: 0, 3, ..., 21 of SIDE (chosen on tools/duplicate_set.py's set)
DC_BIT = 63  # the bit the DC term would set: kept 0 (the int64's sign bit)
FREQUENCIES = np.arange(GRID) * STRIDE


def _bit(i: int, j: int) -> int:
    """The hash bit of the grid's coefficient (i: horizontal index, j: vertical); the DC term takes the top bit."""
    return DC_BIT if i == j == 0 else j * GRID + i - 1


# The bits whose coefficients change sign when the image is mirrored left-right (odd horizontal frequency).
MIRROR_MASK = sum(1 << _bit(i, j) for j in range(GRID) for i in range(GRID) if (i, j) != (0, 0) and FREQUENCIES[i] % 2)
MIRROR_BITS = MIRROR_MASK.bit_count()
# Bits of the hash that carry information (all but the DC term's).
HASH_BITS = GRID * GRID - 1

# The DCT-II rows of the grid's frequencies (unscaled: only signs matter).
_DCT = np.cos(np.pi * (2 * np.arange(SIDE)[None, :] + 1) * FREQUENCIES[:, None] / (2 * SIDE))
# Coefficient (j, i) of the grid, flattened row-major -> its bit's weight (the DC term's is 0).
_WEIGHTS = np.array([0 if i == j == 0 else 1 << _bit(i, j) for j in range(GRID) for i in range(GRID)], dtype=np.uint64)


def perceptual_hash(pixels: np.ndarray) -> int:
    """uint8 RGB (H, W, 3), or grey (H, W) -> the 63-bit DCT hash as a non-negative int."""
    grey = Image.fromarray(pixels).convert("L").resize((SIDE, SIDE), Image.Resampling.BOX)
    block = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T  # [j, i]: vertical, horizontal
    return int(_WEIGHTS[block.ravel() > 0].sum())


def distance(a: int, b: int) -> int:
    """Hamming distance between two hashes, or between a and b's mirror image if that is smaller."""
    differ = a ^ b
    mirrored = (differ & MIRROR_MASK).bit_count()
    return differ.bit_count() - mirrored + min(mirrored, MIRROR_BITS - mirrored)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`distance` elementwise over int64 arrays (broadcasting), as int64."""
    differ = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)).view(np.uint64)
    mirrored = np.bitwise_count(differ & np.uint64(MIRROR_MASK)).astype(np.int64)
    return np.bitwise_count(differ).astype(np.int64) - mirrored + np.minimum(mirrored, MIRROR_BITS - mirrored)


def copy_pair(cosine, hash_distance, rule: SimilarSettings):
    """Whether a candidate pair is one photo twice: cosine >= duplicate_threshold, or hashes at most
    phash_distance apart with cosine >= phash_min_cosine (jobs/config.py, docs/similar.md).

    Operands are numpy arrays or Spark Columns alike (only >=, <=, & and |): a null hash distance in
    Spark (a row without a hash) leaves the cosine alone to decide.
    """
    by_hash = (hash_distance <= rule.phash_distance) & (cosine >= rule.phash_min_cosine)
    return (cosine >= rule.duplicate_threshold) | by_hash
