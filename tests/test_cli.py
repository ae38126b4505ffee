"""The `tunemir` command line: entry points, model listing, checkpoint conversion, the demo."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tunemir import __version__
from tunemir.checkpoints import read_encoder_weights
from tunemir.cli import main
from tunemir.models import available_models
from tunemir.testing import tiny_model, write_audio


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "tunemir", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in result.stdout


def test_models_lists_every_model_with_layers():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == available_models()
    assert any(line.startswith("tune_plus") and "layers 0-17" in line for line in lines)
    assert any(line.startswith("clmr") and "layers 0-10" in line for line in lines)


def test_unknown_model_is_a_usage_error(tmp_path: Path):
    result = CliRunner().invoke(main, ["extract", "jukebox", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 2 and "tune_plus" in result.output


def test_convert_lightning_checkpoint_then_extract(tmp_path: Path):
    model = tiny_model("clmr", seed=5)
    encoder = {f"model.encoder.{k}": v for k, v in model.state_dict().items()}
    ckpt = tmp_path / "clmr_epoch=10.ckpt"
    torch.save({"pytorch-lightning_version": "1.5.10", "epoch": 10, "global_step": 100,
                "state_dict": {**encoder, **{k.removeprefix("model."): v for k, v in encoder.items()},
                               "model.projector.0.weight": torch.randn(16, 16)},
                "hyper_parameters": {"model": "SampleCNN", "batch_size": 48}}, ckpt)
    converted = tmp_path / "clmr.safetensors"
    result = CliRunner().invoke(main, ["convert-checkpoint", str(ckpt), str(converted)])
    assert result.exit_code == 0, result.output
    weights = read_encoder_weights(converted)
    assert weights.format == "tunemir" and weights.metadata["model"] == "clmr"
    assert weights.metadata["source"]["format"] == "lightning"
    for key, value in model.state_dict().items():
        assert torch.equal(weights.state_dict[key], value)

    write_audio(tmp_path / "in" / "x.wav", 6.0, 44100, 2)
    for name, path in [("a", ckpt), ("b", converted)]:
        result = CliRunner().invoke(main, ["extract", "clmr", str(tmp_path / "in"), str(tmp_path / name),
                                           "--checkpoint", str(path), "--workers", "0"])
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "x.npy"), np.load(tmp_path / "b" / "x.npy"))

    result = CliRunner().invoke(main, ["convert-checkpoint", str(ckpt), str(tmp_path / "t.safetensors"), "--model", "tune"])
    assert result.exit_code == 1 and "'clmr'" in result.output and "'tune'" in result.output


@pytest.mark.slow
def test_demo_extraction_tour(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tunemir.demo.DEMO_MODELS", ("tune_plus", "chroma"))
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "untrained" in result.output
    assert len(list((tmp_path / "demo" / "vectors" / "tune_plus-untrained").rglob("*.npy"))) == 6
    assert len(list((tmp_path / "demo" / "vectors" / "chroma").rglob("*.npy"))) == 6


def test_log_options_work_before_and_after_the_subcommand(tmp_path: Path, caplog):
    """-v/-q are accepted by the root and by every command; of the two, the last one given wins."""
    write_audio(tmp_path / "in" / "x.wav", 0.5, 22050, 1)
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    extract = ["extract", "tune_plus", str(tmp_path / "in"), str(tmp_path / "out"), "--random-init", "--workers", "0"]
    for before, after, shown in [([], [], True), (["-q"], [], False), ([], ["-q"], False), (["--quiet"], ["-v"], True),
                                 ([], ["-v", "-q"], False), (["-v", "-q"], [], False), (["-q", "-v"], [], True)]:
        caplog.clear()
        result = CliRunner().invoke(main, [*before, *extract, *after])
        assert result.exit_code == 0, result.output
        skipped = [r for r in caplog.records if "skipping notes.txt" in r.getMessage()]
        assert bool(skipped) == shown, (before, after)
    for args in (["-v", "models"], ["models", "-v"]):
        caplog.clear()
        assert CliRunner().invoke(main, args).exit_code == 0
        assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    for args in (["weights", "fetch", "--help"], ["demo", "--help"], ["data", "synth", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and "--quiet" in result.output and "--verbose" in result.output, args


@pytest.mark.slow
def test_help_lists_every_command_without_importing_the_training_stack():
    code = ("import sys; from click.testing import CliRunner; from tunemir.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "print(sorted(m for m in ('yaml', 'pytorch_lightning', 'sklearn', 'matplotlib', 'librosa') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ["convert-checkpoint", "data", "demo", "evaluate", "extract", "models", "probe", "train", "weights"]:
        assert f"\n  {name} " in result.stdout, name
    assert result.stdout.strip().splitlines()[-1] == "[]"
    usage = subprocess.run([sys.executable, "-m", "tunemir", "nope"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage: tunemir " in usage.stderr
