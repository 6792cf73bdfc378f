"""Nearest neighbours by cosine with an inverted file (IVF): the numpy core of jobs/similar_images.py.

Pure numpy, no Spark, so each step tests on small arrays and the benchmark calls the same code:
- `kmeans`: the cells' centroids, learned on a sample the driver holds (spherical k-means: cosine);
- `nearest_cells`: each vector's `nprobe` nearest cells, nearest first. A vector is stored in the
  first (its base cell) and searched in all of them, so with nprobe == cells every query meets
  every vector: exact search;
- `search`: exact search of queries against one cell's vectors, in blocks of queries (one matrix
  product each), answering each query's top k and every pair at or above a duplicate threshold.
Vectors are rows of float32, made unit length by `unit_rows`, so a dot product is the cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ASSIGN_BLOCK = 8192  # rows per matrix product when assigning vectors to cells: bounds memory at rows x cells


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); a zero row stays zero (the job leaves such rows out before)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def default_cells(images: int) -> int:
    """About sqrt(images) cells (docs/similar.md: cost per image then grows as sqrt(n) * nprobe), at least 1."""
    return max(1, round(images**0.5))


def kmeans(sample: np.ndarray, cells: int, *, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (Lloyd on unit vectors, cosine): `cells` unit centroids (float32, cells x d).

    Starts from distinct sample rows; a cell left empty is re-seeded with a random sample row.
    """
    sample = unit_rows(sample)
    if not 1 <= cells <= len(sample):
        raise ValueError(f"cells={cells}: needs 1 <= cells <= sample rows ({len(sample)})")
    rng = np.random.default_rng(seed)
    centroids = sample[rng.choice(len(sample), cells, replace=False)].copy()
    for _ in range(iterations):
        nearest = nearest_cells(sample, centroids, 1)[:, 0]
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        empty = np.flatnonzero(np.bincount(nearest, minlength=cells) == 0)
        sums[empty] = sample[rng.choice(len(sample), len(empty), replace=False)]
        centroids = unit_rows(sums)
    return centroids


def nearest_cells(vectors: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """Each row's `nprobe` nearest centroids by cosine, nearest first (int32, rows x nprobe)."""
    nprobe = min(nprobe, len(centroids))
    out = np.empty((len(vectors), nprobe), dtype=np.int32)
    for start in range(0, len(vectors), ASSIGN_BLOCK):
        scores = vectors[start : start + ASSIGN_BLOCK] @ centroids.T
        out[start : start + len(scores)] = _best_first(scores, nprobe)
    return out


def _best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, highest first."""
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


@dataclass(frozen=True)
class Pairs:
    """Found pairs: query row, base row, cosine (parallel arrays)."""

    query: np.ndarray
    base: np.ndarray
    score: np.ndarray


def search(
    queries: np.ndarray,
    query_ids: np.ndarray,
    base: np.ndarray,
    base_ids: np.ndarray,
    *,
    k: int,
    min_score: float,
    block: int,
    base_floor: np.ndarray | None = None,
) -> Pairs:
    """Exact search of unit `queries` against unit `base`: per query its top k (an image never
    meets itself: equal ids are skipped; integer ids compare fastest) and every other pair scoring
    at least `min_score`, or at least the base vector's `base_floor` (an incremental run: the score
    a new image needs to enter that vector's kept top k; cosine is symmetric).

    Queries go `block` at a time (one block x base matrix product): memory is block x len(base) floats.
    """
    found_query, found_base, found_score = [], [], []
    k = min(k, len(base))
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ base.T
        scores[query_ids[start : start + block, None] == base_ids[None, :]] = -np.inf  # itself
        keep = scores >= min_score
        if base_floor is not None:
            keep |= scores >= base_floor[None, :]
        if k:
            top = _best_first(scores, k)
            np.put_along_axis(keep, top, True, axis=1)
        keep &= np.isfinite(scores)
        rows, columns = np.nonzero(keep)
        found_query.append(rows + start)
        found_base.append(columns)
        found_score.append(scores[rows, columns])
    if not found_query:
        empty = np.empty(0, dtype=np.int64)
        return Pairs(empty, empty, np.empty(0, dtype=np.float32))
    return Pairs(np.concatenate(found_query), np.concatenate(found_base), np.concatenate(found_score).astype(np.float32))


def top_k(pairs: Pairs, queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs -> each query's k best (base rows, scores), best first; -1 and -inf pad a short list."""
    rows = np.full((queries, k), -1, dtype=np.int64)
    scores = np.full((queries, k), -np.inf, dtype=np.float32)
    order = np.lexsort((-pairs.score, pairs.query))
    query, base, score = pairs.query[order], pairs.base[order], pairs.score[order]
    starts = np.searchsorted(query, np.arange(queries))
    rank = np.arange(len(query)) - starts[query]
    kept = rank < k
    rows[query[kept], rank[kept]] = base[kept]
    scores[query[kept], rank[kept]] = score[kept]
    return rows, scores


def brute_force(vectors: np.ndarray, *, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of every vector (row) against all the others: what the inverted file is measured against."""
    unit = unit_rows(vectors)
    rows = np.arange(len(unit))
    return top_k(search(unit, rows, unit, rows, k=k, min_score=np.inf, block=block), len(unit), k)


def ivf_neighbours(
    vectors: np.ndarray,
    centroids: np.ndarray,
    *,
    nprobe: int,
    k: int,
    block: int,
    queries: np.ndarray | None = None,
    base_cell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The inverted-file search in one process, cell by cell as the Spark job runs it: each vector
    stored in its nearest cell (`base_cell`, computed when not given: an index kept from an earlier
    run), each query (rows `queries`, default all) searched in its `nprobe` nearest. Answers
    `top_k`'s (rows, scores) per query. The benchmark's and the tests' reference."""
    unit = unit_rows(vectors)
    query_rows = np.arange(len(unit)) if queries is None else np.asarray(queries)
    base_cell = nearest_cells(unit, centroids, 1)[:, 0] if base_cell is None else base_cell
    probes = nearest_cells(unit[query_rows], centroids, nprobe)
    probe_query = np.repeat(query_rows, probes.shape[1])
    probe_cell = probes.ravel()
    by_cell = np.argsort(probe_cell, kind="stable")
    bases = np.argsort(base_cell, kind="stable")
    base_bounds = np.searchsorted(base_cell[bases], np.arange(len(centroids) + 1))
    probe_bounds = np.searchsorted(probe_cell[by_cell], np.arange(len(centroids) + 1))
    found = []
    for cell in range(len(centroids)):
        base_rows = bases[base_bounds[cell] : base_bounds[cell + 1]]
        cell_queries = probe_query[by_cell[probe_bounds[cell] : probe_bounds[cell + 1]]]
        if len(base_rows) and len(cell_queries):
            pairs = search(unit[cell_queries], cell_queries, unit[base_rows], base_rows, k=k, min_score=np.inf, block=block)
            found.append(Pairs(cell_queries[pairs.query], base_rows[pairs.base], pairs.score))
    position = np.full(len(unit), -1)
    position[query_rows] = np.arange(len(query_rows))
    merged = Pairs(*(np.concatenate([getattr(p, name) for p in found]) for name in ("query", "base", "score")))
    return top_k(Pairs(position[merged.query], merged.base, merged.score), len(query_rows), k)
