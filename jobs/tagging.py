"""One batch of URLs -> one row of results per URL: fetch, decode, preprocess, infer.

Pure Python (no Spark session): per Arrow batch, the pandas_udf in jobs/pipeline.py starts the loads
of its full-path rows (`start_loading`, a few batches ahead) and turns the batch into result
rows with `tag_batch`. Downloads and decodes run in a thread pool (I/O and Pillow release the
GIL); the model then sees the good images as one batch (`tag_loaded`); rows on the
stored-embedding path go through the heads alone. A row that fails at any stage gets status
"error" and a message naming the stage; it never fails the batch.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs import metrics as M
from jobs.config import Settings
from jobs.decode import DecodeError, prepare_with
from jobs.fetch import FetchError, fetch
from jobs.infer import Head, Prediction, Tagger, heads_on_stored
from jobs.phash import perceptual_hash
from jobs.schema import ResultRow

STATUS_OK = "ok"
STATUS_ERROR = "error"


def error_row(message: str) -> ResultRow:
    """The result of a failed image: the status, the message, no results."""
    return ResultRow(STATUS_ERROR, error=message)


@dataclass
class Loaded:
    """One URL after fetch + decode + preprocess: an image array and its perceptual hash, or an error message."""

    image: np.ndarray | None
    error: str | None
    fetch_s: float
    decode_s: float
    phash: int | None = None


def load_image(url: str, settings: Settings) -> Loaded:
    """Fetch and prepare one image, hash the prepared pixels (counted as decode time); every failure
    becomes a message, never an exception."""
    started = time.perf_counter()
    try:
        data = fetch(url, settings.fetch).data
    except FetchError as exc:
        return Loaded(None, f"fetch: {exc}", time.perf_counter() - started, 0.0)
    except Exception as exc:  # a library bug on a hostile URL must not fail the task
        return Loaded(None, f"fetch: unexpected {type(exc).__name__}: {exc}", time.perf_counter() - started, 0.0)
    fetched = time.perf_counter()
    try:
        image = prepare_with(data, settings.decode)
        phash, error = perceptual_hash(image), None
    except DecodeError as exc:
        image, phash, error = None, None, f"decode: {exc}"
    except Exception as exc:  # a Pillow bug on hostile bytes must not fail the task
        image, phash, error = None, None, f"decode: unexpected {type(exc).__name__}: {exc}"
    return Loaded(image, error, fetched - started, time.perf_counter() - fetched, phash)


def start_loading(urls: list[str], settings: Settings, pool: Executor) -> list[Future]:
    """Submit fetch + decode of every URL to the pool; returns futures in input order."""
    return [pool.submit(load_image, url, settings) for url in urls]


def tag_batch(
    batch: pd.DataFrame, full: np.ndarray, futures: list[Future], tagger: Tagger | None, heads: list[Head], timings: Counter
) -> pd.DataFrame:
    """One Arrow batch: full rows (their loads in `futures`) through the backbone and heads,
    stored-embedding rows through the heads they need alone. One ResultRow per row, in input order.

    `timings` accumulates seconds per stage (fetch and decode summed over threads)."""
    rows: list = [None] * len(batch)
    if full.any():
        for i, row in zip(np.flatnonzero(full), tag_loaded(futures, tagger, timings), strict=True):
            rows[i] = row
    stored = np.flatnonzero(~full)
    if len(stored):
        try:
            results = stored_embedding_rows(batch.iloc[stored], heads, timings)
        except Exception as exc:  # e.g. out of memory: the rows say so, the task lives on
            results = [error_row(f"heads: {type(exc).__name__}: {exc}")] * len(stored)
        for i, row in zip(stored, results, strict=True):
            rows[i] = row
    return result_frame(rows)


def result_frame(rows: list[ResultRow]) -> pd.DataFrame:
    """Result rows as the UDF's pandas batch. The hash column is nullable int64: pandas would make ints
    mixed with nulls float64, which keeps 53 of a hash's 63 bits."""
    frame = pd.DataFrame(rows, columns=ResultRow._fields)
    frame["phash"] = pd.array([row.phash for row in rows], dtype="Int64")
    return frame


def stored_embedding_rows(batch: pd.DataFrame, heads: list[Head], timings: Counter) -> list[ResultRow]:
    """Result rows of heads run on embeddings the output already holds: no fetch, decode or backbone."""
    started = time.perf_counter()
    unit = np.stack(batch["embedding"].to_numpy()).astype(np.float32)
    norms = pd.to_numeric(batch["embedding_norm"]).to_numpy(dtype=np.float32, na_value=np.nan)
    answers = heads_on_stored(heads, unit, norms, [set(needed) for needed in batch["needed"]])
    timings[M.STORED_EMBEDDING_ROWS] += len(batch)
    timings[M.STORED_EMBEDDING_S] += time.perf_counter() - started
    missing = (None, None)
    return [
        ResultRow(
            STATUS_OK,
            head_labels=[answer.get(head.name, missing)[0] for head in heads],
            head_scores=[answer.get(head.name, missing)[1] for head in heads],
        )
        for answer in answers
    ]


def tag_loaded(futures: list[Future], tagger: Tagger, timings: Counter) -> list[ResultRow]:
    """Wait for a batch's loads, run the model on the good images, build the result rows."""
    waited = time.perf_counter()
    loaded = [future.result() for future in futures]
    timings[M.LOAD_WAIT_S] += time.perf_counter() - waited  # the model idling for input
    timings[M.FETCH_S] += sum(item.fetch_s for item in loaded)
    timings[M.DECODE_S] += sum(item.decode_s for item in loaded)
    good = [i for i, item in enumerate(loaded) if item.image is not None]
    predictions: dict[int, Prediction] = {}
    infer_error = None
    if good:
        started = time.perf_counter()
        try:
            batch = tagger.tag(np.stack([loaded[i].image for i in good]))
            predictions = dict(zip(good, batch, strict=True))
        except Exception as exc:  # e.g. out of memory: the rows say so, the task lives on
            infer_error = f"infer: {type(exc).__name__}: {exc}"
        timings[M.INFER_S] += time.perf_counter() - started
    timings[M.IMAGES] += len(loaded)
    rows = []
    for i, item in enumerate(loaded):
        if i in predictions:
            p = predictions[i]
            rows.append(
                ResultRow(
                    STATUS_OK,
                    tag_labels=[label for label, _ in p.tags],
                    tag_scores=[score for _, score in p.tags],
                    embedding=p.embedding,
                    embedding_norm=p.embedding_norm,
                    head_labels=[label for label, _ in p.heads],
                    head_scores=[score for _, score in p.heads],
                    phash=item.phash,
                )
            )
        else:
            rows.append(error_row(item.error or infer_error))
    return rows
