"""Models describe themselves: the registry's declarations drive extraction, and a model file outside
the package extracts, probes and reports end to end through the CLI."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from click.testing import CliRunner

from tunemir import models
from tunemir.cli import main
from tunemir.datasets.synth import write_synth
from tunemir.extract import MANIFEST_NAME, extract
from tunemir.models import ModelInfo, ModelSpec, SampleCNNConfig
from tunemir.testing import write_audio

#: A model of one's own, defined outside the package: 16 kHz, one-second frames, log energies of
#: 24 fixed frequency bands averaged over the frame (no training needed to carry key information).
MODEL_FILE = '''
import math
import torch
from torch import nn

SAMPLE_RATE = 16000


class Bands(nn.Module):
    """Log band energies of a frame: (B, samples) -> (B, 24); layer 1 is the 12 lowest bands."""

    def __init__(self, samples: int):
        super().__init__()
        freqs = torch.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
        edges = 110.0 * 2.0 ** (torch.arange(25) / 6.0)  # quarter-octave bands from 110 Hz
        weights = ((freqs[None] >= edges[:-1, None]) & (freqs[None] < edges[1:, None])).float()
        self.register_buffer("bands", weights / weights.sum(1, keepdim=True))
        self.scale = nn.Parameter(torch.ones(24))

    def forward(self, frames, layer=0):
        power = torch.fft.rfft(frames).abs() ** 2  # (B, F)
        out = torch.log1p(1e3 * power @ self.bands.T) * self.scale  # (B, 24)
        return out if layer == 0 else out[:, :12]


def build():
    return Bands(SAMPLE_RATE), {"sample_rate": SAMPLE_RATE, "frame_length": SAMPLE_RATE, "num_layers": 2}
'''

SAMPLECNN = "tunemir.models.samplecnn:SampleCNN"


def reference(path: Path, sample_rate: int, frame_length: int, model) -> np.ndarray:
    """The extraction contract the plain way: soundfile, channel mean, one-shot soxr HQ at the model's
    declared rate, non-overlapping frames of its declared length (tail dropped), encode, mean."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = soxr.resample(audio.mean(axis=1), rate, sample_rate, quality="HQ") if rate != sample_rate else audio.mean(1)
    n = len(mono) // frame_length
    frames = torch.from_numpy(np.ascontiguousarray(mono[: n * frame_length].reshape(n, frame_length)))
    with torch.no_grad():
        return model(frames.unsqueeze(1)).double().mean(dim=0).numpy()


def test_every_registry_entry_declares_what_its_model_has():
    for name in models.available_models():
        info = models.get_info(name)
        if info.spec.spectrogram:  # musicnn: its own patches (tests/test_musicnn_extract.py)
            assert info.spec.front_end == "spectrogram" and info.spec.num_layers == models.build_model(name).num_layers
            continue
        assert (info.spec.sample_rate, info.spec.frame_length, info.spec.hop) == (22050, 59049, 59049)
        if info.needs_weights:
            assert info.spec.front_end == "waveform" and info.spec.num_layers == models.build_model(name).num_layers
        else:
            assert info.spec.front_end == "whole_file" and info.spec.num_layers == 1


def test_registry_declarations_drive_decoding_and_framing(tmp_path: Path, monkeypatch):
    """A registry entry declaring 8 kHz and 2,000-sample frames is decoded and framed so, and its
    manifest says so; the same network under the default declarations gives other vectors."""
    config = SampleCNNConfig((4, 6, 8, 5))
    spec = ModelSpec(sample_rate=8000, frame_length=2000, num_layers=config.num_layers)
    monkeypatch.setitem(models._REGISTRY, "tiny8k", ModelInfo("tiny8k", "test", config, spec=spec, builder=SAMPLECNN))
    monkeypatch.setitem(models._REGISTRY, "tiny22k",
                        ModelInfo("tiny22k", "test", config, spec=ModelSpec(num_layers=config.num_layers),
                                  builder=SAMPLECNN))
    write_audio(tmp_path / "in" / "a.wav", 5.3, 44100, 2, "pcm16", seed=1)
    summary = extract("tiny8k", tmp_path / "in", tmp_path / "out", random_init=True, workers=0, progress=False)
    assert summary.ok and summary.written == 1
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert (manifest["sample_rate"], manifest["frame_length"], manifest["spec"]["pooling"]) == (8000, 2000, "mean")
    model = models.load_model("tiny8k", random_init=True)
    got = np.load(tmp_path / "out" / "a.npy")
    np.testing.assert_allclose(got, reference(tmp_path / "in" / "a.wav", 8000, 2000, model), atol=1e-5, rtol=0)
    extract("tiny22k", tmp_path / "in", tmp_path / "out22", random_init=True, workers=0, progress=False)
    default = np.load(tmp_path / "out22" / "a.npy")
    np.testing.assert_allclose(default, reference(tmp_path / "in" / "a.wav", 22050, 59049, model), atol=1e-5, rtol=0)
    assert not np.allclose(default, got, atol=1e-4, rtol=0)


def test_folders_written_before_the_declarations_still_resume(tmp_path: Path, tiny_checkpoint):
    """A manifest without `spec` and `model_source` (older tunemir) has the same settings for the
    registry's models: the folder resumes instead of being refused."""
    ckpt, _ = tiny_checkpoint
    write_audio(tmp_path / "in" / "a.wav", 3.0, 22050, 1, "pcm16", seed=7)
    extract("tune_plus", tmp_path / "in", tmp_path / "out", checkpoint=ckpt, workers=0, progress=False)
    path = tmp_path / "out" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    assert manifest["framing"] == "non-overlapping; incomplete tail dropped; shorter than one frame: zero-padded to one"
    assert (manifest["sample_rate"], manifest["frame_length"], manifest["model_source"]) == (22050, 59049, None)
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("spec", "model_source")}))
    summary = extract("tune_plus", tmp_path / "in", tmp_path / "out", checkpoint=ckpt, workers=0, progress=False)
    assert (summary.skipped, summary.written) == (1, 0)


def test_max_pooling_is_declared_not_forked(tmp_path: Path, monkeypatch):
    config = SampleCNNConfig((4, 6, 8, 5))
    spec = ModelSpec(sample_rate=8000, frame_length=2000, pooling="max", num_layers=config.num_layers)
    monkeypatch.setitem(models._REGISTRY, "tinymax", ModelInfo("tinymax", "test", config, spec=spec, builder=SAMPLECNN))
    write_audio(tmp_path / "in" / "a.wav", 2.2, 8000, 1, "pcm16", seed=2)
    extract("tinymax", tmp_path / "in", tmp_path / "out", random_init=True, workers=0, frames_per_batch=3,
            progress=False)
    model = models.load_model("tinymax", random_init=True)
    audio, _ = sf.read(tmp_path / "in" / "a.wav", dtype="float32")
    frames = torch.from_numpy(audio[: 8 * 2000].reshape(8, 1, 2000).copy())
    with torch.no_grad():
        expected = model(frames).max(dim=0).values.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / "a.npy"), expected, atol=1e-5, rtol=0)
    assert "pooled by max" in json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["framing"]


def test_model_file_extracts_with_its_declarations(tmp_path: Path):
    model_file = tmp_path / "elsewhere" / "bands.py"
    model_file.parent.mkdir()
    model_file.write_text(MODEL_FILE)
    write_audio(tmp_path / "in" / "a.wav", 3.4, 44100, 2, "pcm16", seed=4)
    write_audio(tmp_path / "in" / "b.flac", 2.5, 22050, 1, "pcm16", seed=5)
    ref = f"{model_file}:build"
    runner = CliRunner()
    result = runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest["model_source"] == {"file": str(model_file.resolve()), "function": "build",
                                        "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()}
    assert (manifest["sample_rate"], manifest["frame_length"], manifest["dim"]) == (16000, 16000, 24)

    namespace: dict = {}
    exec(compile(MODEL_FILE, "bands", "exec"), namespace)
    module = namespace["Bands"](16000)
    for name in ("a.wav", "b.flac"):
        expected = reference(tmp_path / "in" / name, 16000, 16000, lambda x: module(x[:, 0]))
        np.testing.assert_allclose(np.load(tmp_path / "out" / Path(name).with_suffix(".npy")), expected,
                                   atol=1e-4, rtol=1e-5)

    layer1 = runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "l1"), "--layer", "1"])
    assert layer1.exit_code == 0, layer1.output
    assert np.load(tmp_path / "l1" / "a.npy").shape == (12,)
    assert runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "l2"), "--layer", "2"]
                         ).exit_code == 2

    shards = runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "out"),
                                  "--batch_size", "1", "--list-shards"])
    assert shards.output == "0 done\n1 done\n"
    model_file.write_text(MODEL_FILE.replace("1e3 * power", "1e4 * power"))  # the model changed
    shards = runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "out"),
                                  "--batch_size", "1", "--list-shards"])
    assert shards.output == "0 todo\n1 todo\n"
    again = runner.invoke(main, ["extract", ref, str(tmp_path / "in"), str(tmp_path / "out")])
    assert again.exit_code == 2 and "model_source" in again.output and "other settings" in again.output


@pytest.mark.slow
def test_model_file_extracts_probes_and_reports_end_to_end(tmp_path: Path):
    """The synthetic corpus, extracted by a model file, probed with the smoke grid on the key task,
    evaluated and tabulated, every step through the CLI."""
    cache = tmp_path / "cache"
    write_synth(cache / "processed", clips=20, seconds=2.0, sample_rate=22050, seed=1)
    model_file = tmp_path / "bands.py"
    model_file.write_text(MODEL_FILE)
    runner = CliRunner()
    env = {"TUNEMIR_CACHE_DIR": str(cache)}

    def tunemir(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, f"{args}: {result.output}"
        return result.output

    tunemir("extract", f"{model_file}:build", str(cache / "processed" / "synth" / "wav"),
            str(cache / "representations" / "synth" / "bands"), "--workers", "0")
    vectors = sorted((cache / "representations" / "synth" / "bands").glob("*.npy"))
    assert len(vectors) == 20 and all(np.load(p).shape == (24,) for p in vectors)
    tunemir("probe", "grid", "synth_key", "bands", "--grid", "smoke")
    tunemir("probe", "train", "synth_key", "bands", "--device", "cpu")
    out = tunemir("probe", "evaluate", "synth_key", "bands", "--grid", "smoke",
                  "--output", str(tmp_path / "best.json"))
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["num_runs"] == 8
    assert best["metrics"] and all(math.isfinite(v) for v in best["metrics"].values())
    assert json.loads(out) == best
    tunemir("probe", "report", "--output-dir", str(tmp_path / "report"))
    table = (tmp_path / "report" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| bands |"))
    assert any(f"{100 * v:.1f}" in row for v in best["metrics"].values()), (row, best)


def test_installed_entry_point_extracts(tmp_path: Path, monkeypatch):
    """A package declaring `[project.entry-points."tunemir.models"] bands = "bands_pkg:build"`, installed
    as its dist-info metadata on sys.path, is a model name `tunemir extract` accepts."""
    site = tmp_path / "site"
    (site / "bands_pkg").mkdir(parents=True)
    (site / "bands_pkg" / "__init__.py").write_text(MODEL_FILE)
    info = site / "bands_pkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bands-pkg\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[tunemir.models]\nbands = bands_pkg:build\n")
    monkeypatch.syspath_prepend(str(site))
    write_audio(tmp_path / "in" / "a.wav", 2.0, 16000, 1, "pcm16", seed=6)
    result = CliRunner().invoke(main, ["extract", "bands", str(tmp_path / "in"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest["model_source"] == {"entry_point": "bands", "value": "bands_pkg:build",
                                        "distribution": "bands-pkg 1.2"}
    assert np.load(tmp_path / "out" / "a.npy").shape == (24,)
