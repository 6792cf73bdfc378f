from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from jobs.config import load_settings
from jobs.infer import Head, ModelBundle, Tagger, tagger_for_worker, top_k, worker_model_loads
from jobs.schema import PATH_FULL
from jobs.tagging import STATUS_ERROR, STATUS_OK, start_loading, tag_batch
from tests import image_factory as f


def test_top_k_best_first():
    probabilities = np.array([[0.1, 0.5, 0.05, 0.35], [0.7, 0.1, 0.15, 0.05]])
    indices, scores = top_k(probabilities, 2)
    assert indices.tolist() == [[1, 3], [0, 2]]
    np.testing.assert_allclose(scores, [[0.5, 0.35], [0.7, 0.15]])


def test_top_k_larger_than_classes():
    indices, _ = top_k(np.array([[0.2, 0.8]]), 5)
    assert indices.tolist() == [[1, 0]]


class FakeModel:
    """Class i's probability follows the image's mean red value; records batch sizes."""

    def __init__(self, classes=4):
        self.classes = classes
        self.batches = []

    def __call__(self, batch):
        self.batches.append(len(batch))
        red = batch[..., 0].mean(axis=(1, 2))
        logits = -np.abs(np.linspace(0, 255, self.classes)[None, :] - red[:, None])
        e = np.exp(logits / 50)
        embedding = np.stack([red, 255 - red, np.ones_like(red)], axis=1)  # a 3-d "embedding"
        return {"probabilities": e / e.sum(axis=1, keepdims=True), "embedding": embedding}


def test_tagger_batches_and_keeps_order():
    model = FakeModel()
    tagger = Tagger(model, ["black", "dark", "light", "red"], top_k=2, batch_size=3)
    images = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 255, 90, 170, 250)])
    tags = [p.tags for p in tagger.tag(images)]
    assert model.batches == [3, 2]
    assert [t[0][0] for t in tags] == ["black", "red", "dark", "light", "red"]
    assert all(len(t) == 2 and t[0][1] >= t[1][1] for t in tags)


def test_heads_run_on_the_backbone_embedding_in_the_same_pass():
    model = FakeModel()
    seen = []

    def head_run(embedding):  # "bright" when the first embedding component dominates
        seen.append(embedding.copy())
        bright = (embedding[:, 0] > embedding[:, 1]).astype(float)
        return {"probabilities": np.stack([1 - bright * 0.9 - 0.05, bright * 0.9 + 0.05], axis=1)}

    head = Head("shade", head_run, ["dark", "bright"], l2_input=True)
    tagger = Tagger(model, ["a", "b", "c", "d"], top_k=1, batch_size=8, heads=[head], embedding=True)
    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 240)])
    predictions = tagger.tag(images)
    assert model.batches == [2] and len(seen) == 1  # backbone once, head once, per batch
    assert [p.heads[0][0] for p in predictions] == ["dark", "bright"]
    assert predictions[1].heads[0][1] == pytest.approx(0.95)
    np.testing.assert_allclose(np.linalg.norm(seen[0], axis=1), 1.0, rtol=1e-6)  # l2 input
    assert len(predictions[0].embedding) == 3 and np.linalg.norm(predictions[0].embedding) == pytest.approx(1.0)


def tag_full_batch(urls, tagger, settings, pool, timings) -> pd.DataFrame:
    """What the UDF (jobs/pipeline.py) does with an Arrow batch whose rows all take the full path."""
    batch = pd.DataFrame({"url": urls, "path": PATH_FULL})
    full = (batch["path"] == PATH_FULL).to_numpy()
    return tag_batch(batch, full, start_loading(batch["url"][full].tolist(), settings, pool), tagger, tagger.heads, timings)


def test_a_batch_gives_one_row_per_url_with_stage_errors(tmp_path):
    settings = load_settings(overrides=["decode.image_size=16", "decode.resize_shorter=16"])
    good = tmp_path / "good.jpg"
    good.write_bytes(f.jpeg())
    html = tmp_path / "page.jpg"
    html.write_bytes(b"<html>not found</html>")
    urls = [good.as_uri(), (tmp_path / "missing.jpg").as_uri(), html.as_uri(), good.as_uri()]
    tagger = Tagger(FakeModel(), ["a", "b", "c", "d"], top_k=3, batch_size=8)
    timings = Counter()
    with ThreadPoolExecutor(4) as pool:
        out = tag_full_batch(urls, tagger, settings, pool, timings)
    assert out["status"].tolist() == [STATUS_OK, STATUS_ERROR, STATUS_ERROR, STATUS_OK]
    assert out["error"][1].startswith("fetch: file not found")
    assert out["error"][2].startswith("decode: not an image: the body is HTML")
    assert out["error"][0] is None and out["tag_labels"][1] is None
    assert len(out["tag_labels"][0]) == 3 and out["tag_scores"][0] == sorted(out["tag_scores"][0], reverse=True)
    assert timings["images"] == 4 and timings["infer_s"] > 0


def test_inference_failure_marks_rows_not_task(tmp_path):
    settings = load_settings(overrides=["decode.image_size=16", "decode.resize_shorter=16"])
    good = tmp_path / "good.jpg"
    good.write_bytes(f.jpeg())

    def broken(batch):
        raise MemoryError("out of memory")

    with ThreadPoolExecutor(2) as pool:
        out = tag_full_batch([good.as_uri()], Tagger(broken, ["a"], 1, 4), settings, pool, Counter())
    assert out["status"].tolist() == [STATUS_ERROR]
    assert out["error"][0] == "infer: MemoryError: out of memory"


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_real_model_tags_real_photos(artifact, photos, name):
    from jobs.decode import prepare

    tagger = tagger_for_worker(ModelBundle(artifact), top_k=5, batch_size=4, threads=0)
    image = prepare(photos[name].read_bytes(), max_pixels=10**8, resize_shorter=256, image_size=224)
    tags = tagger.tag(image[None])[0].tags
    labels = [label for label, _ in tags]
    if name == "coffee":
        assert labels[0] == "espresso" and tags[0][1] > 0.8
    else:
        assert {"tiger cat", "Egyptian cat", "tabby"} <= set(labels[:3])
    assert sum(score for _, score in tags) <= 1.0001


def test_worker_builds_model_once(artifact):
    first = tagger_for_worker(ModelBundle(artifact), top_k=5, batch_size=4, threads=0)
    loads = worker_model_loads()
    assert tagger_for_worker(ModelBundle(artifact), top_k=5, batch_size=4, threads=0) is first
    assert worker_model_loads() == loads


def test_heads_on_stored_embeddings_run_only_the_heads_each_row_needs():
    from jobs.infer import heads_on_stored

    calls = []

    def run(batch):
        calls.append(len(batch))
        return {"probabilities": np.tile([[0.2, 0.8]], (len(batch), 1))}

    unit = np.eye(5, 4, dtype=np.float32)
    raw_head = Head("raw", run, ["x", "y"], l2_input=False, min_score=0.9, batch_size=2)
    unit_head = Head("unit", run, ["p", "q"], l2_input=True, batch_size=2)
    needed = [{"raw"}, {"unit"}, {"raw", "unit"}, set(), {"unit"}]
    answers = heads_on_stored([raw_head, unit_head], unit, np.full(5, 3.0, np.float32), needed)
    assert answers[0] == {"raw": (None, pytest.approx(0.8))}  # under min_score: no label, the score kept
    assert answers[2] == {"raw": (None, pytest.approx(0.8)), "unit": ("q", pytest.approx(0.8))}
    assert answers[3] == {}
    assert calls == [2, 2, 1]  # two rows need raw (one call), three need unit (a batch of 2, then 1)
