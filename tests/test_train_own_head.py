"""A head on your own labelled images (tools/train_head.py, tools/head_training.py: the one trainer).

Rules and calibration on small arrays; the command with the job replaced by a fake output (no
Spark); and one end-to-end run: generated product photos + a broken URL, the real job
(spark-submit, real backbone), a head that load_bundle accepts.
"""

import csv
import json
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.infer import load_bundle
from jobs.manifest import stable_image_id
from model.artifact import load_artifact
from model.runtime import build_model_runner
from tools import head_training as ht
from tools import train_head as jt
from tools.datasets import FASHION_CLASSES
from tools.sample_data import make_labelled_dataset

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# class rules and the split
# --------------------------------------------------------------------------------------------
def test_a_class_with_too_few_images_is_refused_by_name():
    labels = ["cat"] * 8 + ["dog"] * 5 + ["bird"] * 4 + ["fish"] * 1
    with pytest.raises(ht.LabelError, match=r"too few usable images in class 'bird' \(4\), 'fish' \(1\): .*at least 5"):
        ht.check_classes(labels)
    assert ht.check_classes(["dog"] * 5 + ["cat"] * 5) == ["cat", "dog"]
    with pytest.raises(ht.LabelError, match=r"in class 'fish' \(1\): each class needs at least 4"):
        ht.check_classes(labels, minimum=4)  # bird's 4 are enough now


def test_a_single_class_or_nothing_is_refused():
    with pytest.raises(ht.LabelError, match=r"only one class, 'cat' \(40 images\): a head needs at least two classes"):
        ht.check_classes(["cat"] * 40)
    with pytest.raises(ht.LabelError, match="no usable labelled images"):
        ht.check_classes([])


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), [5, 20, 41])
    train, val, test = ht.split_by_class(labels, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(labels)))
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert np.bincount(labels[val]).tolist() == [1, 3, 6] and np.bincount(labels[test]).tolist() == [1, 3, 6]
    assert np.bincount(labels[train]).tolist() == [3, 14, 29]
    again = ht.split_by_class(labels, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test), strict=True))
    assert not np.array_equal(ht.split_by_class(labels, seed=2)[1], val)
    with pytest.raises(ValueError, match="sum below 1"):
        ht.split_by_class(labels, val_fraction=0.5, test_fraction=0.5)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def overconfident(n: int = 4000, classes: int = 4, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(true logits); the model reports scale * true logits (overconfident)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, (n, classes))
    labels = np.array([rng.choice(classes, p=p) for p in ht.softmax(true_logits)])
    return scale * true_logits, labels


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    logits, labels = overconfident()
    before = ht.expected_calibration_error(ht.softmax(logits), labels)
    temperature = ht.fit_temperature(logits, labels)
    after = ht.expected_calibration_error(ht.softmax(logits / temperature), labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    assert before > 0.1 and after < 0.03 and after < before / 4
    assert ht.nll(logits, labels, temperature) < ht.nll(logits, labels)
    separable = np.eye(3)[[0, 1, 2, 0]] * 5
    assert ht.fit_temperature(separable, np.array([0, 1, 2, 0])) == 1.0  # no evidence: T stays 1


def test_ece_of_known_bins():
    # Two predictions at 0.9 (one right), two at 0.6 (both right): |0.5-0.9|*2/4 + |1-0.6|*2/4 = 0.4.
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert ht.expected_calibration_error(p, np.array([0, 1, 1, 1])) == pytest.approx(0.4)
    assert ht.expected_calibration_error(np.eye(2), np.array([0, 1])) == 0.0


def test_baked_temperature_gives_softmax_of_logits_over_t():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1280)).astype(np.float32)
    for kind in ("linear", "mlp"):
        model = ht.build_head(kind, x, 3, hidden=16)
        logits = ht.head_logits(model, x)
        np.testing.assert_allclose(ht.softmax(logits), ht.predict(model, x), atol=1e-6)
        ht.bake_temperature(model, 2.5)
        np.testing.assert_allclose(ht.predict(model, x), ht.softmax(logits / 2.5), atol=1e-6)


def test_build_head_floors_the_std_of_constant_features():
    """A feature constant in training must not blow up on an unseen value."""
    x = np.random.default_rng(0).uniform(0, 1, (30, 1280)).astype(np.float32)
    x[:, 5] = 0
    model = ht.build_head("linear", x, 2)
    probe = x[:1].copy()
    probe[0, 5] = 1.0
    standardise = model.get_layer("standardise")
    import keras

    z = np.asarray(keras.Model(model.inputs, standardise.output).predict(probe, verbose=0))
    assert abs(z[0, 5]) < 50  # 1 / (0.1 * median std ~ 0.029) ~ 35, not 1 / 1e-7


def test_recommended_min_score_rule():
    # Scores, best first: 0.95 ok, 0.9 ok, 0.8 wrong, 0.7 ok, 0.6 wrong, 0.5 wrong.
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 0, 0], bool)
    p = np.stack([scores, 1 - scores], axis=1)
    labels = np.where(correct, 0, 1)
    # Precision of the kept: >=0.95 1.0, >=0.9 1.0, >=0.8 0.67, ...: 90% needs 0.9. Keep-correct floor: 0.7.
    assert ht.recommend_min_score(p, labels, precision=0.9, keep_correct=0.95) == 0.9
    assert ht.recommend_min_score(p, labels, precision=0.6, keep_correct=0.95) == 0.7  # the keep-correct floor
    assert ht.recommend_min_score(p, labels, precision=0.5, keep_correct=0.5) == 0.9  # 50% of correct reach 0.9
    assert ht.recommend_min_score(p, np.ones(6, int), precision=0.9) is None  # never 90% right
    effect = ht.floor_effect(p, labels, 0.9)
    assert effect == {"count": 6, "kept": 2, "kept_share": 0.3333, "kept_precision": 1.0}


def test_out_of_domain_report_counts_images_above_the_floor():
    report = ht.out_of_domain_report({"cat.png": np.array([0.2, 0.8]), "sky.png": np.array([0.55, 0.45])}, ["a", "b"], 0.6)
    assert report["images"] == 2 and report["labelled_above_min_score"] == 1
    assert report["per_image"][0] == {"image": "cat.png", "label": "b", "score": 0.8, "above_min_score": True}


# --------------------------------------------------------------------------------------------
# labels in, job output in
# --------------------------------------------------------------------------------------------
def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_read_labels_from_csv_drops_and_counts(tmp_path):
    path = write_csv(
        tmp_path / "l.csv",
        ["URL", "Label", "image_id"],
        [
            ("file:///a.jpg", "cat", "a"),
            ("file:///b.jpg", "dog", ""),
            ("file:///c.jpg", "", "c"),
            ("file:///a2.jpg", "cat", "a"),
        ],
    )
    labels = jt.read_labels(str(path))
    assert [(r.image_id, r.label) for r in labels.rows] == [("a", "cat"), (stable_image_id("file:///b.jpg"), "dog")]
    assert labels.read == 4 and dict(labels.dropped) == {"no url or label": 1, "duplicate image_id (first row kept)": 1}
    with pytest.raises(ht.LabelError, match=r"has no 'label' column \(columns: url, class\)"):
        jt.read_labels(str(write_csv(tmp_path / "bad.csv", ["url", "class"], [("u", "x")])))
    with pytest.raises(ht.LabelError, match="label file not found"):
        jt.read_labels(str(tmp_path / "none.csv"))


def test_read_labels_from_parquet_and_a_class_folder_tree(tmp_path):
    pq.write_table(pa.table({"url": ["file:///x.jpg"], "label": [3]}), tmp_path / "l.parquet")
    (row,) = jt.read_labels(str(tmp_path / "l.parquet")).rows
    assert (row.url, row.label, row.image_id) == ("file:///x.jpg", "3", stable_image_id("file:///x.jpg"))

    for name in ("cats/a.jpg", "cats/sub/b.PNG", "dogs/c.jpeg", "dogs/notes.txt", "dogs/.hidden.jpg", "top.jpg"):
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(b"x")
    rows = jt.read_labels(str(tmp_path / "tree")).rows
    assert [(Path(r.url).name, r.label) for r in rows] == [("a.jpg", "cats"), ("b.PNG", "cats"), ("c.jpeg", "dogs")]
    assert all(r.url.startswith("file:///") and r.image_id == stable_image_id(r.url) for r in rows)
    (tmp_path / "tree" / "empty").mkdir()
    with pytest.raises(ht.LabelError, match="class folder .*empty has no image files"):
        jt.read_labels(str(tmp_path / "tree"))


def test_read_labels_from_s3(aws_endpoint, tmp_path):
    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="labels")
    s3.put_object(Bucket="labels", Key="shop/labels.csv", Body=b"url,label\ns3://images/a.jpg,cat\ns3://images/b.jpg,dog\n")
    rows = jt.read_labels("s3://labels/shop/labels.csv").rows
    assert [(r.url, r.label) for r in rows] == [("s3://images/a.jpg", "cat"), ("s3://images/b.jpg", "dog")]
    with pytest.raises(ht.LabelError, match="cannot read the label file s3://labels/missing.csv"):
        jt.read_labels("s3://labels/missing.csv")


def fake_job_output(path: Path, rows: list[tuple[str, str, str | None, list[float] | None]]) -> Path:
    """A Parquet dataset shaped like the job's output (only the columns train_head reads)."""
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "image_id": [r[0] for r in rows],
            "status": [r[1] for r in rows],
            "error": [r[2] for r in rows],
            "embedding": pa.array([r[3] for r in rows], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path / "part-0.parquet")
    (path / "_image_tagger").mkdir(exist_ok=True)  # the job's state: readers skip it
    return path


def test_failed_urls_are_counted_as_dropped(tmp_path):
    labels = jt.Labels(
        [jt.Labelled("a", "file:///a", "cat"), jt.Labelled("b", "file:///b", "dog"), jt.Labelled("c", "file:///c", "dog")],
        read=4,
        dropped=jt.Counter({"no url or label": 1}),
    )
    out = fake_job_output(
        tmp_path / "out",
        [
            ("a", "ok", None, [1.0, 0.0]),
            ("b", "error", "fetch: file not found: /b (permanent, 1 attempt)", None),
        ],
    )
    job = jt.read_job_output(str(out))
    assert set(job.embeddings) == {"a"} and job.errors == {"b": "fetch: file not found: /b (permanent, 1 attempt)"}
    x, names, counts = jt.join_embeddings(labels, job)
    assert x.shape == (1, 2) and names == ["cat"]
    assert counts["rows"] == 4 and counts["used"] == 1 and counts["dropped"] == 3
    assert counts["dropped_by_reason"] == {
        "no url or label": 1,
        "failed in the job (fetch or decode error)": 1,
        "missing from the job output": 1,
    }
    assert counts["failed_examples"] == [
        {"image_id": "b", "url": "file:///b", "label": "dog", "error": "fetch: file not found: /b (permanent, 1 attempt)"}
    ]


def test_job_output_is_read_from_s3(aws_endpoint, tmp_path):
    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="work")
    local = fake_job_output(tmp_path / "out", [("a", "ok", None, [0.6, 0.8])])
    s3.upload_file(str(local / "part-0.parquet"), "work", "emb/part-0.parquet")
    job = jt.read_job_output("s3://work/emb/")
    np.testing.assert_allclose(job.embeddings["a"], [0.6, 0.8])


def test_job_command_runs_the_tagging_job_for_embeddings_only(tmp_path):
    command = jt.job_command(
        "/m.parquet",
        "/out",
        profile="conf/local.yaml",
        overrides=["fetch.threads=4"],
        spark_submit="spark-submit",
        metrics=tmp_path / "m.json",
    )
    assert command[:3] == ["spark-submit", "--master", "local[*]"] and "spark.python.worker.reuse=true" in command
    script = command.index(str(REPO / "jobs" / "tag_images.py"))
    assert command[script + 1 :] == [
        "--manifest",
        "/m.parquet",
        "--output",
        "/out",
        "--profile",
        "conf/local.yaml",
        "--set",
        "fetch.threads=4",
        "--set",
        "model.heads=[]",
        "--set",
        "model.embedding=true",
        "--metrics-out",
        str(tmp_path / "m.json"),
    ]


# --------------------------------------------------------------------------------------------
# the command, with the job's output faked (no Spark)
# --------------------------------------------------------------------------------------------
def clustered_embeddings(labels: list[int], seed: int = 0, noise: float = 0.6) -> np.ndarray:
    """L2-normalised, non-negative 1280-d vectors, one noisy cluster per class (like the job's embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (max(labels) + 1, 1280))
    x = np.clip(centres[labels] + rng.normal(0, noise, (len(labels), 1280)), 0, None)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fake_job(monkeypatch, tmp_path):
    """Replace the spark-submit run by an output with clustered embeddings for every row but the last."""
    calls = []

    def run_job(command, log_file):
        calls.append(command)
        manifest = pq.read_table(command[command.index("--manifest") + 1]).to_pylist()
        output = Path(command[command.index("--output") + 1])
        labelled = [r for r in manifest if not r["image_id"].startswith(jt.OOD_PREFIX)]
        classes = {name: i for i, name in enumerate(sorted({Path(r["url"]).parent.name for r in labelled}))}
        vectors = clustered_embeddings([classes[Path(r["url"]).parent.name] for r in labelled])
        rows = [(r["image_id"], "ok", None, v.tolist()) for r, v in zip(labelled, vectors, strict=True)]
        rows[-1] = (rows[-1][0], "error", "decode: not an image", None)  # the last class loses one
        ood = clustered_embeddings([0] * 6, seed=9, noise=3.0)
        rows += [
            (r["image_id"], "ok", None, v.tolist())
            for r, v in zip([r for r in manifest if r["image_id"].startswith(jt.OOD_PREFIX)], ood, strict=False)
        ]
        fake_job_output(output, rows)
        return 1.5

    monkeypatch.setattr(jt, "run_job", run_job)
    return calls


def class_tree(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.jpg").write_bytes(b"x")
    return root


def run_args(tmp_path: Path, labels: Path, name: str = "shop_type") -> list[str]:
    """The command's arguments with every output under tmp_path."""
    return [
        "--labels", str(labels), "--name", name,
        "--work", str(tmp_path / "work"), "--artifacts", str(tmp_path / "art"), "--reports", str(tmp_path / "reports"),
    ]  # fmt: skip


def cli_args(tmp_path: Path, labels: Path, name: str = "shop_type") -> list[str]:
    """run_args for the fake job: few epochs, any spark-submit."""
    return [*run_args(tmp_path, labels, name), "--epochs", "30", "--spark-submit", "spark-submit"]


@pytest.mark.job
def test_command_writes_head_and_evaluation(fake_job, tmp_path, model_dir):
    tree = class_tree(tmp_path / "tree", {"bags": 20, "boots": 20, "hats": 20})
    assert jt.main(cli_args(tmp_path, tree)) == 0
    (command,) = fake_job
    metrics = str(tmp_path / "work" / "shop_type" / "metrics.json")
    assert command[-4:] == ["--set", "model.embedding=true", "--metrics-out", metrics]
    record = json.loads((tmp_path / "reports" / "shop_type" / "evaluation.json").read_text())
    assert record["classes"] == ["bags", "boots", "hats"] and record["head"] == "shop_type"
    assert record["counts"]["rows"] == 60 and record["counts"]["used"] == 59 and record["counts"]["dropped"] == 1
    assert record["counts"]["failed_examples"][0]["error"] == "decode: not an image"
    assert record["split"]["train"] + record["split"]["validation"] + record["split"]["test"] == 59
    assert record["split"]["test"] == 9 and record["test_accuracy"] >= 0.8
    assert {c["class"] for c in record["test"]["per_class"]} == {"bags", "boots", "hats"}
    assert all({"precision", "recall"} <= set(c) for c in record["test"]["per_class"])
    calibration = record["calibration"]
    assert calibration["temperature"] > 0 and calibration["ece_bins"] == 15
    for split in ("validation", "test"):
        assert {"ece_before", "ece_after"} <= set(calibration[split])
    assert record["recommended_min_score"] is None or 0 <= record["recommended_min_score"] <= 1
    assert record["out_of_domain"]["images"] == 6 and len(record["out_of_domain"]["per_image"]) == 6
    assert record["input_normalisation"] == "l2" and record["head_type"] in {"linear", "mlp"}
    assert record["profile_entry"].startswith(f"model.heads: [{{name: shop_type, uri: {tmp_path / 'art' / 'shop_type_tflite'}")
    assert (tmp_path / "reports" / "shop_type" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    keras_head = load_artifact(str(tmp_path / "art" / "shop_type"))
    tflite_head = load_artifact(str(tmp_path / "art" / "shop_type_tflite"))
    backbone_version = json.loads((model_dir / "model.json").read_text())["version"]
    for head in (keras_head, tflite_head):
        assert head.class_names == ["bags", "boots", "hats"]
        assert {k: head.meta[k] for k in ("kind", "input", "input_normalisation", "backbone", "backbone_version")} == {
            "kind": "head",
            "input": "embedding",
            "input_normalisation": "l2",
            "backbone": "efficientnet_lite0",
            "backbone_version": backbone_version,
        }
    assert tflite_head.meta["converted_from"] == keras_head.version == record["head_version"]
    x = clustered_embeddings([0, 1, 2])
    a = build_model_runner(keras_head, batch_size=4)(x)["probabilities"]
    b = build_model_runner(tflite_head, batch_size=4)(x)["probabilities"]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    ("counts", "name", "message"),
    [
        ({"bags": 20, "boots": 3}, "shop_type", "too few usable images in class 'boots' (3)"),
        ({"bags": 20}, "shop_type", "only one class, 'bags' (20 images)"),
        ({"bags": 20, "boots": 20}, "Shop-Type", "NAME='Shop-Type': use 1-41 lower-case letters"),
        ({"bags": 20, "boots": 20}, "product_category", "a shipped model's artifact"),
        ({"bags": 20, "boots": 20}, "url", "clashes with an output column"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(fake_job, tmp_path, capsys, counts, name, message):
    tree = class_tree(tmp_path / "tree", counts)
    assert jt.main(cli_args(tmp_path, tree, name)) == 2
    assert message in capsys.readouterr().err
    assert not fake_job  # refused before any Spark work
    assert not (tmp_path / "art").exists()


def test_too_few_after_failed_urls_exits_2(fake_job, tmp_path, capsys):
    tree = class_tree(tmp_path / "tree", {"bags": 20, "boots": 5})  # the fake job fails one image
    assert jt.main(cli_args(tmp_path, tree)) == 2
    said = capsys.readouterr().err
    assert "too few usable images in class" in said and len(fake_job) == 1


# --------------------------------------------------------------------------------------------
# the labelled sample, and the whole thing with the real job
# --------------------------------------------------------------------------------------------
def test_labelled_sample_manifest(tmp_path):
    manifest = make_labelled_dataset(tmp_path, 7, classes=["Bag", "Trouser"], seed=3)
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["url", "label"] and len(rows) == 7
    assert sorted(r["label"] for r in rows) == ["Bag"] * 4 + ["Trouser"] * 3
    assert all(Path(r["url"].removeprefix("file://")).is_file() for r in rows)
    assert make_labelled_dataset(tmp_path, 7, classes=["Bag", "Trouser"], seed=3) == manifest  # cached
    with pytest.raises(ValueError, match="distinct Fashion-MNIST classes"):
        make_labelled_dataset(tmp_path, 7, classes=["Bag", "Hat"])
    assert set(FASHION_CLASSES) >= {"Bag", "Trouser"}


@pytest.mark.e2e
def test_train_own_head_end_to_end(tmp_path, model_dir):
    """Generated photos of 3 classes + a broken URL -> the real job -> a head the job accepts."""
    manifest = make_labelled_dataset(tmp_path / "labelled", 45, classes=["Trouser", "Bag", "Sneaker"], seed=5)
    with manifest.open("a", newline="") as f:
        csv.writer(f).writerow([(tmp_path / "gone.jpg").as_uri(), "Bag"])
    tflite_backbone = model_dir.parent / "efficientnet_lite0_tflite"
    sets = ["--set", "spark.master=local[2]", "--set", f"model.uri={tflite_backbone}", "--set", "spark.partitions=2"]
    assert jt.main([*run_args(tmp_path, manifest), *sets]) == 0
    record = json.loads((tmp_path / "reports" / "shop_type" / "evaluation.json").read_text())
    assert record["classes"] == ["Bag", "Sneaker", "Trouser"]
    assert record["counts"]["rows"] == 46 and record["counts"]["used"] == 45 and record["counts"]["dropped"] == 1
    assert record["counts"]["failed_examples"][0]["error"].startswith("fetch: file not found")
    assert record["test_accuracy"] >= 0.8  # trousers, bags and sneakers are easy to tell apart
    assert record["out_of_domain"]["images"] == 6 and not record["out_of_domain"]["failed"]
    assert (tmp_path / "reports" / "shop_type" / "confusion_matrix.png").is_file()

    head = {"name": "shop_type", "uri": str(tmp_path / "art" / "shop_type_tflite")}
    for backbone in (model_dir, tflite_backbone):
        bundle = load_bundle(str(backbone), [head])
        assert bundle.heads[0][1].meta["input_normalisation"] == "l2"
    keras_head = {"name": "shop_type", "uri": str(tmp_path / "art" / "shop_type")}
    assert load_bundle(str(tflite_backbone), [keras_head]).heads[0][1].version == record["head_version"]
    # The head scores the job's own embeddings as the evaluation did: the output is still there.
    job = jt.read_job_output(record["embedding_job"]["output"])
    model = build_model_runner(load_artifact(head["uri"]), batch_size=8)
    vectors = np.stack([v for k, v in job.embeddings.items() if not k.startswith(jt.OOD_PREFIX)][:8])
    np.testing.assert_allclose(model(vectors)["probabilities"].sum(axis=1), 1, atol=1e-5)
