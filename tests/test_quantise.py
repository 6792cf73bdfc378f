"""The int8 backbone: quality-gate arithmetic by hand, and the artifact `make model` builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.config import load_settings
from model import quantise

REPO = Path(__file__).resolve().parent.parent
INT8_DIR = REPO / "model/artifacts/efficientnet_lite0_int8"
FLOAT_DIR = REPO / "model/artifacts/efficientnet_lite0_tflite"


def probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_agreement_counts_only_confident_rows():
    float_p = probs([[0.9, 0.1, 0.0], [0.2, 0.25, 0.55], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])
    int8_p = probs([[0.8, 0.2, 0.0], [0.2, 0.5, 0.3], [0.30, 0.36, 0.34], [0.1, 0.1, 0.8]])
    # Confident (top-1 >= 0.3): rows 0, 1, 2, 3 -> rows 0 and 3 agree, 1 and 2 do not.
    assert quantise.agreement(float_p, int8_p, 0.3) == (0.5, 4)
    assert quantise.agreement(float_p, int8_p, 0.5) == (pytest.approx(2 / 3), 3)  # rows 0, 1, 3
    assert quantise.agreement(float_p, int8_p, 0.95) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_top1_within_top_k():
    float_p = probs([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]])
    int8_p = probs([[0.1, 0.5, 0.3, 0.1], [0.4, 0.3, 0.2, 0.1]])
    assert quantise.in_top_k(float_p, int8_p, k=2) == 0.0  # row 0: class 0 is 3rd; row 1: class 3 is last
    assert quantise.in_top_k(float_p, int8_p, k=3) == 0.5
    assert quantise.in_top_k(float_p, int8_p, k=4) == 1.0


def test_cosine_by_hand():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, -1.0], [1.0, 0.0]])
    assert quantise.cosine(a, b).tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_gate_measurements_and_verdict():
    rng = np.random.default_rng(0)
    float_p = (0.1 + rng.uniform(-0.01, 0.01, size=(200, 10))).astype(np.float32)  # near-uniform: not confident
    float_p[:100] = np.eye(10, dtype=np.float32)[np.arange(100) % 10] * 0.9 + 0.01  # 100 confident rows
    int8_p = float_p.copy()
    int8_p[0] = np.roll(int8_p[0], 1)  # one confident row flips its top-1 (and keeps it 2nd: still in the top 5)
    embedding = rng.normal(size=(200, 16))
    photo_rows = np.zeros(200, bool)
    photo_rows[[5, 6]] = True
    measured = quantise.gate_measurements(
        {"probabilities": float_p, "embedding": embedding}, {"probabilities": int8_p, "embedding": embedding * 2}, photo_rows
    )
    assert measured["confident_images"] == 100 and measured["top1_agreement_confident"] == pytest.approx(0.99)
    assert measured["top1_in_top5"] == 1.0 and measured["real_photos_top1_kept"] == measured["real_photos_kept"] == 1.0
    assert measured["embedding_cosine_median"] == pytest.approx(1.0)
    verdict = quantise.judge(measured, {"float": 0.87, "int8": 0.865})
    assert verdict["adopted"] and len(verdict["gates"]) == 5
    assert not quantise.judge(measured, {"float": 0.87, "int8": 0.85})["adopted"]  # the head lost 2 points
    flipped = {**measured, "real_photos_kept": 5 / 6}
    failed = quantise.judge(flipped, None)
    assert not failed["adopted"] and [g["gate"] for g in failed["gates"] if not g["passed"]] == ["real_photos_kept"]


def test_a_near_tie_may_swap_its_two_best_but_a_clear_answer_must_stay():
    float_p = np.array(
        [
            [0.3735, 0.3710, 0.2555],  # chelsea.png's near-tie: a 0.0025 lead
            [0.30, 0.27, 0.43],  # a close call the other way round: top-1 is class 2 by 0.13
            [0.60, 0.30, 0.10],  # a clear answer
        ]
    )
    swapped = np.array([[0.371, 0.372, 0.257], [0.30, 0.27, 0.43], [0.60, 0.30, 0.10]])
    assert quantise.photos_kept(float_p, swapped) == 1.0  # the near-tie kept within int8's top-2
    third = swapped.copy()
    third[0] = [0.30, 0.31, 0.39]  # the near-tie's answer falls to int8's third place
    assert quantise.photos_kept(float_p, third) == pytest.approx(2 / 3)
    clear_flip = swapped.copy()
    clear_flip[2] = [0.30, 0.60, 0.10]  # a 0.30 lead lost: not a near-tie
    assert quantise.photos_kept(float_p, clear_flip) == pytest.approx(2 / 3)
    assert quantise.photos_kept(float_p, swapped, near_tie=0.0) == pytest.approx(2 / 3)  # no tolerance: the swap fails


def test_layers_kept_float_are_those_erring_by_more_than_a_step():
    csv_text = (
        "op_name,tensor_idx,mean_squared_error,scale,zero_point,tensor_name\n"
        "CONV_2D,1,0.0064,0.0235,-128,stem\n"  # sqrt(0.0064) / 0.0235 = 3.4 steps
        "CONV_2D,2,0.00001,0.0235,-128,block1\n"  # 0.13 steps
        "DEPTHWISE_CONV_2D,3,0.0009,0.0235,-128,block0_dw\n"  # 1.28 steps
        "MEAN,4,,0.01,0,pool\n"  # no error measured
    )
    stats = quantise.layer_stats_from_csv(csv_text)
    assert quantise.rms_error_steps(stats["stem"]) == pytest.approx(0.08 / 0.0235)
    assert quantise.layers_to_keep_float(stats) == ["stem", "block0_dw"]


@pytest.fixture(scope="module")
def int8_meta() -> dict:
    if not (INT8_DIR / "model.json").is_file():
        pytest.fail(f"{INT8_DIR} is missing: `make model` builds it")
    return json.loads((INT8_DIR / "model.json").read_text())


def test_int8_artifact_format(int8_meta):
    from ai_edge_litert.interpreter import Interpreter

    float_meta = json.loads((FLOAT_DIR / "model.json").read_text())
    assert int8_meta["format"] == "tflite" and int8_meta["name"] == float_meta["name"] + "_int8"  # rows say int8
    assert int8_meta["version"] != float_meta["version"]  # its own version: its answers differ from float's
    assert int8_meta["converted_from"] == float_meta["converted_from"]  # the same Keras weights
    assert int8_meta["quantisation"] == quantise.SCHEME
    assert set(int8_meta["quality"]) >= {"gates", "adopted", "measured", "head_accuracy"}
    interpreter = Interpreter(model_path=str(INT8_DIR / int8_meta["model_file"]))
    signature = interpreter.get_signature_runner("serving_default")
    (image,) = signature.get_input_details().values()
    outputs = signature.get_output_details()
    assert image["dtype"] == np.uint8 and list(image["shape"][1:]) == [224, 224, 3]
    assert {name: detail["dtype"] for name, detail in outputs.items()} == {"probabilities": np.float32, "embedding": np.float32}
    assert outputs["embedding"]["shape"][-1] == int8_meta["outputs"]["embedding"]
    tensors = interpreter.get_tensor_details()
    int8_weights = [t for t in tensors if t["dtype"] == np.int8 and t["quantization_parameters"]["scales"].size > 1]
    # Per-channel int8 weights in every convolution and the dense layer (50 weighted layers in
    # EfficientNet-Lite0) but the ones kept float.
    assert len(int8_weights) == 50 - len(int8_meta["kept_float"]) and 0 < len(int8_meta["kept_float"]) <= 4
    assert (INT8_DIR / int8_meta["model_file"]).stat().st_size < (FLOAT_DIR / "model.tflite").stat().st_size / 3


def test_int8_tags_a_real_photo_as_float_does(int8_meta):
    from PIL import Image

    from jobs.decode import resize_and_crop
    from model.artifact import load_artifact
    from model.runtime import build_model_runner
    from tools.datasets import skimage_data_dir

    image = resize_and_crop(Image.open(skimage_data_dir() / "coffee.png").convert("RGB"), resize_shorter=256, image_size=224)
    answers = {}
    for directory in (FLOAT_DIR, INT8_DIR):
        artifact = load_artifact(str(directory))
        out = build_model_runner(artifact, batch_size=1)(image[None])
        answers[directory.name] = (artifact.class_names[int(out["probabilities"].argmax())], out["embedding"][0])
    (float_label, float_emb), (int8_label, int8_emb) = answers.values()
    assert float_label == int8_label == "espresso"
    assert quantise.cosine(float_emb[None], int8_emb[None])[0] > 0.98


def test_emr_profile_names_int8_exactly_when_its_gates_passed(int8_meta):
    uses_int8 = load_settings(REPO / "conf/emr.yaml").model.uri.rstrip("/").endswith("efficientnet_lite0_int8")
    assert uses_int8 == int8_meta["quality"]["adopted"], (
        "conf/emr.yaml must name the int8 backbone when (and only when) its quality gates passed"
    )
