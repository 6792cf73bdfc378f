import json

import numpy as np
import pytest

from model import efficientnet_lite
from model.artifact import ArtifactError, content_version, load_artifact
from model.build import checkpoint_path
from model.checkpoint import CheckpointFormatError, read_state_dict


@pytest.fixture(scope="module")
def state():
    return read_state_dict(checkpoint_path())


def test_checkpoint_read_without_torch(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert np.isfinite(state["_blocks.15._bn2.running_var"]).all()


def test_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"\x80\x02K\x01.")  # a pickle of the integer 1
    with pytest.raises(CheckpointFormatError, match="bad magic"):
        read_state_dict(bad)


def test_every_checkpoint_tensor_is_ported(state):
    weights = efficientnet_lite.keras_weights_from_torch(state)
    used = sum(len(v) for v in weights.values())
    trainable_or_stats = [k for k in state if not k.endswith("num_batches_tracked")]
    assert used == len(trainable_or_stats)


def test_artifact_metadata(model_dir):
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["name"] == "efficientnet_lite0"
    assert len(meta["version"]) == 12
    assert meta["num_classes"] == 1000
    classes = (model_dir / "classes.txt").read_text().splitlines()
    assert classes[967] == "espresso" and len(classes) == 1000


def test_version_is_a_content_hash():
    a = [np.ones((2, 2), np.float32)]
    assert content_version(a, ["x"], "m") == content_version([np.ones((2, 2), np.float32)], ["x"], "m")
    assert content_version(a, ["x"], "m") != content_version([np.zeros((2, 2), np.float32)], ["x"], "m")
    assert content_version(a, ["x"], "m") != content_version(a, ["y"], "m")


def test_load_artifact_local_and_errors(model_dir, tmp_path):
    artifact = load_artifact(str(model_dir))
    assert artifact.class_names[0] == "tench"
    assert load_artifact(model_dir.as_uri()).version == artifact.version
    with pytest.raises(ArtifactError, match="model artifact file not found"):
        load_artifact(str(tmp_path))
    (tmp_path / "model.json").write_text('{"name": "x"}')
    with pytest.raises(ArtifactError, match="lacks the key 'version'"):
        load_artifact(str(tmp_path))


def test_load_artifact_from_s3(model_dir, aws_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws_endpoint)
    s3.create_bucket(Bucket="models")
    for path in model_dir.iterdir():
        s3.upload_file(str(path), "models", f"efficientnet_lite0/{path.name}")
    artifact = load_artifact("s3://models/efficientnet_lite0")  # a plain boto3 client
    assert artifact.version == load_artifact(str(model_dir)).version
    with pytest.raises(ArtifactError, match="cannot read model artifact file s3://models/nothing/model.json"):
        load_artifact("s3://models/nothing")
    made = []  # the caller's client (the job passes jobs.fetch.s3_client): made once for the artifact's files

    def client():
        made.append(1)
        return s3

    assert load_artifact("s3://models/efficientnet_lite0", s3_client=client).version == artifact.version
    assert made == [1]
    with pytest.raises(ArtifactError, match="cannot read model artifact file s3://models/nothing/model.json"):
        load_artifact("s3://models/nothing", s3_client=client)


@pytest.fixture(scope="module")
def tflite_artifact(model_dir):
    path = model_dir.parent / "efficientnet_lite0_tflite"
    if not (path / "model.json").exists():
        pytest.fail(f"TFLite artifact missing at {path}: run `make model`")
    return load_artifact(str(path))


def test_tflite_artifact_gives_the_same_tags(artifact, tflite_artifact, photos):
    """The optimised runtime must not change the tags: same top-1, scores within 1e-3."""
    from jobs.decode import prepare
    from model.runtime import build_model_runner

    assert tflite_artifact.meta["format"] == "tflite" and tflite_artifact.version != artifact.version
    assert tflite_artifact.meta["converted_from"] == artifact.version
    batch = np.stack([prepare(p.read_bytes(), max_pixels=10**8, resize_shorter=256, image_size=224) for p in photos.values()])
    keras_out = build_model_runner(artifact, batch_size=8)(batch)
    tflite_out = build_model_runner(tflite_artifact, batch_size=8)(batch)
    assert tflite_out["probabilities"].argmax(1).tolist() == keras_out["probabilities"].argmax(1).tolist()
    np.testing.assert_allclose(tflite_out["probabilities"], keras_out["probabilities"], atol=1e-3)
    np.testing.assert_allclose(tflite_out["embedding"], keras_out["embedding"], rtol=1e-3, atol=1e-3)
    assert keras_out["embedding"].shape == (len(photos), 1280)
