"""A LiteRT node has no TensorFlow: the EMR profile's models tag a real photo in a Python where
`import tensorflow` fails, and a Keras artifact there fails with a message naming the runtime.

Each check runs in a subprocess whose sitecustomize (first on PYTHONPATH) installs a meta-path
finder that refuses tensorflow and keras, as on a node built from requirements-node-litert.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERAS_ARTIFACT = REPO / "model" / "artifacts" / "efficientnet_lite0"

BLOCKER = textwrap.dedent(
    """
    import sys

    class NoTensorFlow:
        # What a node installed from requirements-node-litert.txt looks like to Python.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: a LiteRT node)", name=name)
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    """
)

TAG_PHOTO = textwrap.dedent(
    """
    import json, sys
    from jobs.config import load_settings
    from jobs.decode import prepare_with
    from jobs.infer import load_bundle, tagger_for_worker

    try:
        import tensorflow  # noqa: F401
        sys.exit("tensorflow imported: the blocker did not work")
    except ImportError:
        pass
    settings = load_settings(sys.argv[1])
    models = load_bundle(settings.model.uri, settings.model.heads)
    tagger = tagger_for_worker(models, top_k=5, batch_size=4, threads=1)
    image = prepare_with(open(sys.argv[2], "rb").read(), settings.decode)
    (prediction,) = tagger.tag(image[None])
    print(json.dumps({"tags": prediction.tags, "heads": prediction.heads,
                      "tensorflow_loaded": any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)}))
    """
)

BUILD_KERAS = textwrap.dedent(
    """
    import sys
    from model.artifact import load_artifact
    from model.runtime import build_model_runner

    build_model_runner(load_artifact(sys.argv[1]), batch_size=4)
    """
)


def without_tensorflow(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_emr_profile_tags_a_real_photo_without_tensorflow(tmp_path, photos):
    proc = without_tensorflow(tmp_path, TAG_PHOTO, str(REPO / "conf" / "emr.yaml"), str(photos["coffee"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["tensorflow_loaded"]
    top_tags = [name for name, _ in result["tags"]]
    assert "espresso" in top_tags or "cup" in top_tags, top_tags
    (category,) = result["heads"]
    assert category[0], "the category head gave no answer"


@pytest.mark.skipif(not (KERAS_ARTIFACT / "model.json").is_file(), reason="make model builds the Keras artifact")
def test_a_keras_artifact_without_tensorflow_names_the_missing_runtime(tmp_path):
    proc = without_tensorflow(tmp_path, BUILD_KERAS, str(KERAS_ARTIFACT))
    assert proc.returncode != 0
    assert "ArtifactError" in proc.stderr
    assert "needs TensorFlow (tensorflow-cpu" in proc.stderr and "no 'tensorflow'" in proc.stderr, proc.stderr[-2000:]
