"""Several models in one pass: the backbone's tags, a head's category, the embedding."""

import numpy as np
import pytest

from jobs.config import ConfigError, load_settings
from jobs.infer import load_bundle
from jobs.manifest import with_image_ids
from jobs.pipeline import tag_dataframe
from model.artifact import ArtifactError, save_keras_artifact


def make_head(out_dir, backbone_version, *, kind="head", classes=("light", "dark", "other"), name="test_head"):
    """A tiny real Keras head on the 1280-d embedding (random weights: we test plumbing here)."""
    import keras

    inputs = keras.Input((1280,), name="embedding")
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="category")(inputs)
    model = keras.Model(inputs, outputs, name=name)
    save_keras_artifact(
        model,
        out_dir,
        name=name,
        class_names=list(classes),
        extra_meta={
            "kind": kind,
            "input": "embedding",
            "input_normalisation": "l2",
            "backbone": "efficientnet_lite0",
            "backbone_version": backbone_version,
            "num_classes": len(classes),
        },
    )
    return out_dir


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory, artifact):
    return make_head(tmp_path_factory.mktemp("head") / "test_head", artifact.version)


def test_profile_lists_heads(head_dir):
    settings = load_settings(overrides=[f"model.heads=[{{name: category, uri: '{head_dir}'}}]", "model.embedding=true"])
    assert settings.model.heads == [{"name": "category", "uri": str(head_dir)}]
    for bad, message in [
        ("model.heads=[{name: tags, uri: x}]", "clashes with another output column"),
        ("model.heads=[{name: Bad-Name, uri: x}]", "use lower-case letters"),
        ("model.heads=[{name: a, uri: x}, {name: a, uri: y}]", "clashes"),
        ("model.heads=[{name: a}]", "the keys name and uri"),
        ("model.heads=[{name: a, uri: x, min_score: 2}]", "must be a probability between 0 and 1"),
        ("model.heads=[{name: a, uri: x, floor: 0.5}]", "the keys name and uri"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(overrides=[bad])


def test_head_must_match_backbone(model_dir, head_dir, tmp_path):
    bundle = load_bundle(str(model_dir), [{"name": "category", "uri": str(head_dir)}])
    assert bundle.versions()["test_head"] == bundle.heads[0][1].version
    tflite = model_dir.parent / "efficientnet_lite0_tflite"
    assert load_bundle(str(tflite), [{"name": "category", "uri": str(head_dir)}]).heads  # same weights
    other = make_head(tmp_path / "other", "0123456789ab")
    with pytest.raises(ArtifactError, match="trained on backbone efficientnet_lite0 0123456789ab"):
        load_bundle(str(model_dir), [{"name": "category", "uri": str(other)}])
    with pytest.raises(ArtifactError, match="is not a head artifact"):
        load_bundle(str(model_dir), [{"name": "category", "uri": str(model_dir)}])


@pytest.mark.spark
def test_one_pass_writes_tags_category_and_embedding(spark, model_dir, head_dir, photos):
    settings = load_settings(
        overrides=[
            f"model.uri={model_dir.parent / 'efficientnet_lite0_tflite'}",
            f"model.heads=[{{name: category, uri: '{head_dir}'}}]",
            "model.embedding=true",
        ]
    )
    bundle = load_bundle(settings.model.uri, settings.model.heads)
    manifest = with_image_ids(spark.createDataFrame([(photos["coffee"].as_uri(),), ("file:///missing.jpg",)], "url string"))
    out = tag_dataframe(manifest, bundle, settings, run_id="r")
    # The output schema (README): the fixed columns, each head's pair, the embedding, provenance.
    assert [(f.name, f.dataType.simpleString(), f.nullable) for f in out.schema] == [
        ("image_id", "string", True),
        ("url", "string", True),
        ("status", "string", True),
        ("error", "string", True),
        ("tags", "array<struct<label:string,score:float>>", True),
        ("category", "string", True),
        ("category_score", "float", True),
        ("embedding", "array<float>", True),
        ("embedding_norm", "float", True),
        ("phash", "bigint", True),
        ("path", "string", False),
        ("model_name", "string", False),
        ("model_version", "string", False),
        ("models", "map<string,string>", False),
        ("processed_at", "timestamp", False),
        ("run_id", "string", False),
    ]
    rows = {r.url.rsplit("/", 1)[-1]: r for r in out.collect()}
    coffee, missing = rows["coffee.png"], rows["missing.jpg"]
    assert coffee.tags[0].label == "espresso"
    assert coffee.category in {"light", "dark", "other"} and 0 < coffee.category_score <= 1
    assert len(coffee.embedding) == 1280 and np.linalg.norm(coffee.embedding) == pytest.approx(1.0, abs=1e-4)
    assert coffee.models == bundle.versions() and set(coffee.models) == {"efficientnet_lite0", "test_head"}
    assert missing.status == "error" and missing.category is None and missing.embedding is None


def test_head_converts_to_tflite_with_same_answers(head_dir, tmp_path, artifact):
    from model.artifact import load_artifact
    from model.convert import convert
    from model.runtime import build_model_runner

    meta = convert(head_dir, tmp_path / "tflite")
    keras_head, tflite_head = load_artifact(str(head_dir)), load_artifact(str(tmp_path / "tflite"))
    assert meta["kind"] == "head" and meta["converted_from"] == keras_head.version
    assert meta["backbone_version"] == artifact.version and tflite_head.class_names == keras_head.class_names
    vectors = np.random.default_rng(0).normal(size=(5, 1280)).astype(np.float32)
    a = build_model_runner(keras_head, batch_size=8)(vectors)["probabilities"]
    b = build_model_runner(tflite_head, batch_size=8)(vectors)["probabilities"]
    np.testing.assert_allclose(a, b, atol=1e-5)
