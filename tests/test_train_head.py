"""The built-in product-category head: its labelled images (Fashion-MNIST renders), the shared trainer, the command.

Everything here runs on tiny data (a few hundred items, fake embeddings) in seconds; the 90%
test-accuracy target is checked by `make train-head` itself (exit status 1 below it).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from jobs.config import DecodeSettings
from jobs.decode import prepare_with
from model.artifact import content_version, load_artifact
from model.efficientnet_lite import HEAD_CHANNELS
from tools import category_head as th
from tools import head_training as ht
from tools import train_head as jt
from tools.datasets import FASHION_CLASSES, fashion_mnist, product_photo

HEAD_DIR = Path(__file__).resolve().parent.parent / "model" / "artifacts" / "product_category"
TFLITE_HEAD_DIR = HEAD_DIR.parent / "product_category_tflite"
DECODE = DecodeSettings()  # the job's default decode: what conf/local.yaml gives


@pytest.fixture(scope="module")
def test_items():
    return fashion_mnist("t10k")


def job_input(item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the job feeds the backbone for a generated product photo."""
    buffer = io.BytesIO()
    product_photo(item, rng).save(buffer, "JPEG", quality=90)
    return prepare_with(buffer.getvalue(), DECODE)


def object_box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the pixels that differ clearly from the corner backdrop colour."""
    background = image[:8, :8].reshape(-1, 3).mean(axis=0)
    rows, cols = np.nonzero(np.abs(image - background).max(axis=2) > 40)
    return int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1


def test_render_item_is_a_seeded_catalogue_photo(test_items):
    items, _ = test_items
    a = th.render_item(items[0], th.item_rng(7, "t10k", 0), decode=DECODE)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a, th.render_item(items[0], th.item_rng(7, "t10k", 0), decode=DECODE))
    assert not np.array_equal(a, th.render_item(items[0], th.item_rng(7, "t10k", 1), decode=DECODE))
    assert a[:4, :4].min() > 180  # off-white backdrop in the corners
    batch = th.render_items(items, np.array([3, 0]), split="t10k", seed=7, decode=DECODE)
    assert np.array_equal(batch[1], a)


def test_render_item_frames_the_object_like_the_job_does(test_items):
    """The rendered object has the size the job's resize + centre crop gives a product photo."""
    items, labels = test_items
    rng = np.random.default_rng(0)
    for i in np.nonzero(labels == 1)[0][:4]:  # trousers: tall, thin, easy to measure
        rendered = object_box(th.render_item(items[i], rng, decode=DECODE))[0]
        photo = object_box(job_input(items[i], rng))[0]
        assert 0.75 < rendered / photo < 1.33, (i, rendered, photo)
        assert 130 < rendered <= 224


def test_render_plain_is_a_dark_item_on_white(test_items):
    items, _ = test_items
    a = th.render_plain(items[0], th.item_rng(7, "t10k", 0), decode=DECODE)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert (a[:4, :4] == 255).all() and a[112, 112].max() < 200
    assert (a[..., 0] == a[..., 2]).all()  # grey
    assert np.array_equal(th.render_items(items, np.array([0]), split="t10k", seed=7, decode=DECODE, style="plain")[0], a)


def test_assign_styles_is_seeded_and_mixed():
    styles = th.assign_styles(1000, 0.3, seed=1)
    assert set(styles.tolist()) == {"plain", "catalogue"}
    assert 0.25 < (styles == "plain").mean() < 0.35
    assert np.array_equal(styles, th.assign_styles(1000, 0.3, seed=1))
    assert (th.assign_styles(10, 0.0, seed=1) == "catalogue").all()


def test_stratified_subset_is_balanced_and_nested():
    labels = np.repeat(np.arange(10), [100, 50, 150, 100, 100, 100, 100, 100, 100, 100])
    subset = ht.stratified_subset(labels, 100, seed=1)
    assert len(set(subset.tolist())) == 100
    counts = np.bincount(labels[subset], minlength=10)
    np.testing.assert_allclose(counts, np.bincount(labels) / 10, atol=1)
    assert np.array_equal(ht.stratified_subset(labels, 40, seed=1), subset[:40])
    assert not np.array_equal(ht.stratified_subset(labels, 100, seed=2), subset)
    with pytest.raises(ValueError, match="cannot take"):
        ht.stratified_subset(labels, 1001, seed=1)


def test_train_val_split_is_disjoint_and_stratified():
    labels = np.repeat(np.arange(10), 20)
    train, val = ht.train_val_split(labels, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180
    assert not set(train.tolist()) & set(val.tolist())
    assert np.bincount(labels[val], minlength=10).tolist() == [2] * 10
    with pytest.raises(ValueError, match="val_fraction"):
        ht.train_val_split(labels, 1.5, seed=3)


def test_cached_embeddings_compute_only_what_is_missing(tmp_path):
    calls = []

    def compute(indices):
        calls.append(indices.tolist())
        return np.repeat(indices[:, None].astype(np.float32), HEAD_CHANNELS, axis=1)

    first = th.cached_embeddings(tmp_path / "c", np.array([5, 1, 3]), compute, part_size=2)
    assert calls == [[5, 1], [3]]
    assert first[:, 0].tolist() == [5, 1, 3]
    again = th.cached_embeddings(tmp_path / "c", np.array([3, 8, 5]), compute)
    assert calls[-1] == [8]
    assert again[:, 0].tolist() == [3, 8, 5] and again.dtype == np.float32
    assert len(list((tmp_path / "c").glob("part-*.npz"))) == 3


def fake_embeddings(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Non-negative, 1280-d, one noisy cluster per class (like GAP features, but separable)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 2, (10, HEAD_CHANNELS))
    return (centres[labels] + rng.normal(0, 0.8, (len(labels), HEAD_CHANNELS))).clip(0, 6).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_heads():
    labels = np.tile(np.arange(10), 20)
    x = fake_embeddings(labels)
    train, val = ht.train_val_split(labels, 0.2, seed=0)
    heads = {
        kind: ht.train_head(
            kind,
            x[train],
            labels[train],
            x[val],
            labels[val],
            num_classes=10,
            seed=0,
            epochs=5,
            batch_size=32,
            learning_rate=3e-3,
        )
        for kind in ("linear", "mlp")
    }
    return heads, x[val], labels[val]


def test_train_head_learns_and_reports(tiny_heads):
    heads, val_x, val_y = tiny_heads
    for kind, (model, info) in heads.items():
        assert model.output_shape == (None, 10)
        assert {"epochs_run", "best_epoch", "train_s"} <= info.keys() and 1 <= info["best_epoch"] <= 5
        probabilities = ht.predict(model, val_x)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
        assert (probabilities.argmax(axis=1) == val_y).mean() > 0.8, kind
    assert "hidden" in [layer.name for layer in heads["mlp"][0].layers]
    with pytest.raises(ValueError, match="head kind"):
        ht.build_head("forest", val_x, 10)


def test_evaluate_counts_precision_and_recall():
    labels = np.array([0, 0, 1, 1, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 0]]
    record = ht.evaluate(probabilities, labels, ["a", "b", "c"])
    assert record["accuracy"] == 0.6 and record["count"] == 5
    assert record["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    a, b, c = record["per_class"]
    assert (a["precision"], a["recall"]) == (0.5, 0.5)
    assert (b["precision"], b["recall"], b["support"]) == (0.6667, 1.0, 2)
    assert (c["precision"], c["recall"]) == (None, 0.0)


def test_choose_head_prefers_linear_unless_mlp_clearly_wins():
    assert ht.choose_head({"linear": 0.90, "mlp": 0.903}, margin=0.005) == "linear"
    assert ht.choose_head({"linear": 0.88, "mlp": 0.90}, margin=0.005) == "mlp"
    assert ht.choose_head({"linear": 0.88}, margin=0.005) == "linear"
    assert ht.choose_head({"mlp": 0.5}, margin=0.005) == "mlp"


def test_plot_confusion_writes_png(tmp_path):
    path = tmp_path / "cm.png"
    ht.plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_head_artifact_round_trip(tiny_heads, tmp_path):
    import keras

    model, _ = tiny_heads[0]["mlp"]
    backbone = {"name": "efficientnet_lite0", "version": "abcdefabcdef"}
    meta = ht.write_head_artifact(
        model, tmp_path, name="product_category", class_names=FASHION_CLASSES, backbone_meta=backbone, head_kind="mlp"
    )
    on_disk = json.loads((tmp_path / "model.json").read_text())
    assert on_disk == meta
    assert on_disk["name"] == "product_category" and on_disk["kind"] == "head" and on_disk["format"] == "keras"
    assert on_disk["input"] == "embedding" and on_disk["input_normalisation"] == "none"
    assert (on_disk["backbone"], on_disk["backbone_version"]) == ("efficientnet_lite0", "abcdefabcdef")
    assert on_disk["version"] == content_version(model.get_weights(), FASHION_CLASSES, "product_category")
    assert (tmp_path / "classes.txt").read_text().splitlines() == FASHION_CLASSES
    assert load_artifact(str(tmp_path)).class_names == FASHION_CLASSES
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert not any(layer.name.startswith("_") for layer in loaded.layers)
    x = tiny_heads[1]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def fake_backbone(seen: list[tuple[int, ...]]):
    """A stand-in for the profile's backbone: pixels as 'embeddings'; the shape of every batch it gets goes to seen."""

    def embedder(*_args, **_kwargs):
        def embed(batch: np.ndarray) -> np.ndarray:
            seen.append(batch.shape)
            return batch.reshape(len(batch), -1)[:, ::7][:, :HEAD_CHANNELS].astype(np.float32)

        return embed

    return embedder


def built_in_args(tmp_path: Path, *more: str) -> list[str]:
    """make train-head without LABELS, on 120 + 40 items: the same command as an own-data head."""
    return [
        "--train-size", "120", "--test-size", "40", "--epochs", "3", "--pipeline-check", "4",
        "--cache", str(tmp_path / "cache"), "--reports", str(tmp_path / "reports"), "--artifacts", str(tmp_path / "art"),
        *more,
    ]  # fmt: skip


@pytest.mark.job
def test_built_in_head_goes_through_the_one_trainer_and_gates_on_target(tmp_path, monkeypatch, model_dir):
    monkeypatch.setattr(th, "backbone_embedder", fake_backbone([]))
    assert jt.main(built_in_args(tmp_path, "--target", "1.01")) == 1
    reports = tmp_path / "reports" / "product_category"
    record = json.loads((reports / "evaluation.json").read_text())
    assert not record["passed"] and record["head_version"] is None and not (tmp_path / "art").exists()
    assert {k: record["split"][k] for k in ("train", "validation", "test")} == {"train": 108, "validation": 12, "test": 40}
    assert sum(record["renders"]["train_by_render"].values()) == 108 and set(record["other_tests"]) == {"catalogue"}
    assert record["target_test_accuracy"] == 1.01 and record["input_normalisation"] == "none"
    assert set(record["candidates"]) == {"linear", "mlp"} and record["head_type"] in record["candidates"]
    assert len(record["test"]["confusion_matrix"]) == 10 and record["product_photo_check"]["count"] == 4
    # The same evaluation as an own-data head: calibration, min_score, the out-of-domain check.
    assert {"validation", "test", "catalogue"} <= set(record["calibration"]) and "recommended_min_score" in record
    assert record["out_of_domain"]["images"] == 6 and set(record["min_score_effect"]) == {"validation", "test", "catalogue"}
    assert (reports / "confusion_matrix.png").is_file()

    assert jt.main(built_in_args(tmp_path, "--target", "0", "--heads", "linear")) == 0  # second run: embeddings cached
    record = json.loads((reports / "evaluation.json").read_text())
    meta = json.loads((tmp_path / "art" / "product_category" / "model.json").read_text())
    tflite_meta = json.loads((tmp_path / "art" / "product_category_tflite" / "model.json").read_text())
    assert record["passed"] and record["head_version"] == meta["version"] == tflite_meta["converted_from"]
    assert meta["head"] == "linear" and meta["input_normalisation"] == "none" and meta["temperature"] > 0


def test_built_in_head_trains_on_the_profiles_decode(tmp_path, monkeypatch, model_dir):
    """A profile's decode.image_size / resize_shorter reach the renders, the checks and the cache: nothing is hard-coded."""
    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(th, "backbone_embedder", fake_backbone(seen))
    decode = ["--set", "decode.image_size=96", "--set", "decode.resize_shorter=110"]
    assert jt.main(built_in_args(tmp_path, "--target", "1.01", "--heads", "linear", *decode)) == 1
    assert seen and {shape[1:] for shape in seen} == {(96, 96, 3)}
    assert sum(shape[0] for shape in seen) == 120 + 2 * 40 + 4 + 6  # train, test in two renders, photo check, out-of-domain
    record = json.loads((tmp_path / "reports" / "product_category" / "evaluation.json").read_text())
    assert record["renders"]["decode"] == {"image_size": 96, "resize_shorter": 110}
    assert {p.name.split("_seed7_")[1] for p in (tmp_path / "cache").iterdir()} == {"96from110_render1"}


def test_built_in_head_takes_no_other_name(tmp_path, capsys):
    assert jt.main(built_in_args(tmp_path, "--name", "shop_type")) == 2
    assert "NAME='shop_type' needs LABELS" in capsys.readouterr().err


def test_trained_head_names_product_photos(model_dir, test_items):
    """The committed head, as the job runs it: product_photo -> JPEG -> prepare -> backbone -> head."""
    from jobs.infer import ModelBundle, tagger_for_worker
    from model.artifact import load_artifact

    if not (TFLITE_HEAD_DIR / "model.json").is_file():
        pytest.fail(f"no trained head at {TFLITE_HEAD_DIR}: run `make train-head`")
    head = load_artifact(str(TFLITE_HEAD_DIR))
    backbone = load_artifact(str(model_dir.parent / "efficientnet_lite0_tflite"))
    assert head.meta["backbone_version"] == json.loads((model_dir / "model.json").read_text())["version"]
    tagger = tagger_for_worker(ModelBundle(backbone, (("category", head),)), top_k=1, batch_size=20, threads=0)
    items, labels = test_items
    rng = np.random.default_rng(2024)
    chosen = rng.choice(len(items), size=20, replace=False)
    images = np.stack([job_input(items[i], rng) for i in chosen])
    names = [prediction.heads[0][0] for prediction in tagger.tag(images)]
    predicted = np.array([FASHION_CLASSES.index(name) for name in names])
    assert (predicted == labels[chosen]).mean() >= 0.75, list(zip(predicted, labels[chosen], strict=True))
