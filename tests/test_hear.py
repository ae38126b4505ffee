"""The HEAR adapter (`tunemir.hear`), checked by HEAR 2021's own validator (hearvalidator 2021.0.2)
for every kind of tunemir model, and its embeddings against `tunemir.embed`.

hearvalidator imports tensorflow at its top and uses it only to ask `isinstance(model, tf.Module)`
(and for its TensorFlow branch). For a torch module that question is all it needs, so the test runs
the validator, unchanged, from its wheel, with a stand-in `tensorflow` module whose `Module` no
torch module is an instance of, instead of installing tensorflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tunemir
from tunemir import hear
from tunemir.testing import hear_validator_wheel, save_tiny_checkpoint

from test_custom_model import MODEL_FILE

TF_STAND_IN = '''"""Stand-in for the two names hearvalidator takes from tensorflow; its torch checks use neither."""
class Module:
    pass
def device(name):
    raise RuntimeError("tensorflow stand-in: the validator took its TensorFlow branch for a torch module")
'''


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, str]:
    """kind -> what `hear.load_model` takes: a checkpoint, a registry name or a model file."""
    folder = tmp_path_factory.mktemp("hear")
    out = {}
    for name in ("tune", "tune_plus", "clmr", "musicnn"):
        out[name] = str(save_tiny_checkpoint(folder / f"{name}.safetensors", name, seed=4) and
                        folder / f"{name}.safetensors")
    (folder / "bands.py").write_text(MODEL_FILE)
    out["custom"] = f"{folder / 'bands.py'}:build"
    out["chroma"], out["mfcc"] = "chroma", "mfcc"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tune", "tune_plus", "clmr", "musicnn", "chroma", "mfcc", "custom"])
def test_the_hear_validator_passes(kind, references, tmp_path):
    stand_in = tmp_path / "stand-in"
    (stand_in / "tensorflow").mkdir(parents=True)
    (stand_in / "tensorflow" / "__init__.py").write_text(TF_STAND_IN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stand_in), str(hear_validator_wheel()),
                                                        *filter(None, [os.environ.get("PYTHONPATH")])]))
    run = subprocess.run([sys.executable, "-m", "hearvalidator.validate", "tunemir.hear", "--model", references[kind],
                          "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Received torch Module" in run.stdout and "Checking get_scene_embeddings" in run.stdout
    assert run.stdout.rstrip().endswith("Looks good!")
    assert "Traceback" not in run.stderr


def test_embeddings_are_tunemir_embed(references):
    model = hear.load_model(references["tune_plus"])
    assert model.sample_rate == 22050 and model.scene_embedding_size == model.timestamp_embedding_size == 16
    audio = torch.rand(3, 22050 * 7) * 2 - 1
    scene = hear.get_scene_embeddings(audio, model)
    frames, ms = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (3, 16) and scene.dtype == torch.float32
    assert frames.shape == (3, 2, 16) and ms.shape == (3, 2)  # 7 s: two 2.68-s frames
    direct = tunemir.load_model("tune_plus", references["tune_plus"], device="cpu")
    for i in range(3):
        np.testing.assert_array_equal(scene[i].numpy(), tunemir.embed(audio[i].numpy(), 22050, direct))
    np.testing.assert_allclose(ms[0].numpy(), 1000 * (np.arange(2) * 59049 + 59049 / 2) / 22050, rtol=1e-6)
    musicnn = hear.load_model(references["musicnn"])
    assert musicnn.sample_rate == 16000  # its declared rate
    with pytest.raises(ValueError, match="tensor \\(n_sounds, n_samples\\)"):
        hear.get_scene_embeddings(torch.zeros(16000), musicnn)
