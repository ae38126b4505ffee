"""`tunemir weights fetch`: released weights found locally or downloaded from a 127.0.0.1 server,
checked against the pinned sha256 and converted to tunemir's format (the images' build step)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tunemir.checkpoints import read_encoder_weights
from tunemir.cli import main
from tunemir.testing import write_released_weights
from tunemir.testing.http import FileServer
from tunemir.weights import RELEASES, WeightsError, fetch_weights, read_pin


def clmr_release_zip(folder: Path) -> tuple[Path, torch.nn.Module, str]:
    """CLMR's release zip (folder + .ckpt inside), its encoder and its sha256."""
    path, model = write_released_weights(folder, "clmr", seed=4)
    return path, model, hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_encoder(path: Path, model: torch.nn.Module) -> None:
    weights = read_encoder_weights(path)
    assert weights.format == "tunemir"
    expected = model.state_dict()
    assert set(weights.state_dict) == set(expected)
    for key, value in expected.items():
        assert torch.equal(weights.state_dict[key], value), key


def test_download_verify_convert_and_skip(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    _, model, digest = clmr_release_zip(served)
    pin = tmp_path / "weights.sha256"
    pin.write_text(f"# CLMR release 2.1\n{digest}  {RELEASES['clmr'].filename}\n")
    out = tmp_path / "weights" / "clmr.safetensors"
    with FileServer(served) as server:
        url = f"{server.url}/{RELEASES['clmr'].filename}"
        assert fetch_weights("clmr", pin_file=pin, urls=(url,), output=out) == out
        assert_same_encoder(out, model)
        assert read_encoder_weights(out).metadata["source"]["release"] == {
            "file": "clmr_magnatagatune_mlp.zip", "sha256": digest}
        fetch_weights("clmr", pin_file=pin, urls=(url,), output=out)  # already converted: no request
        assert len(server.requests) == 1


def test_checksum_mismatch_converts_nothing(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    clmr_release_zip(served)
    out = tmp_path / "clmr.safetensors"
    with FileServer(served) as server, pytest.raises(WeightsError, match="does not match"):
        fetch_weights("clmr", sha256="0" * 64, urls=(f"{server.url}/{RELEASES['clmr'].filename}",),
                      output=out)
    assert not out.exists()


def test_build_context_file_is_used_and_checked(tmp_path: Path) -> None:
    """TUNe's files have no direct URL: they are taken from the search folder (the build context)."""
    context = tmp_path / "containers" / "tune_plus"
    _, model = write_released_weights(context, "tune_plus", seed=2)
    digest = hashlib.sha256((context / RELEASES["tune_plus"].filename).read_bytes()).hexdigest()
    out = tmp_path / "tune_plus.safetensors"
    fetch_weights("tune_plus", sha256=digest, search_dirs=(tmp_path / "empty", context), output=out)
    assert_same_encoder(out, model)
    with pytest.raises(WeightsError, match=f"has sha256 {digest}, but {'1' * 64} is pinned"):
        fetch_weights("tune_plus", sha256="1" * 64, search_dirs=(context,), output=tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="no direct download URL.*drive.google.com"):
        fetch_weights("tune", sha256=digest, search_dirs=(context,), output=tmp_path / "t.safetensors")


def test_pin_file_rules(tmp_path: Path) -> None:
    pin = tmp_path / "weights.sha256"
    pin.write_text("# only comments: nothing pinned yet\n")
    assert read_pin(pin, "tune_plus_epoch_10000.ckpt") is None
    with pytest.raises(WeightsError, match="no sha256 is pinned for tune_plus_epoch_10000.ckpt.*sha256sum"):
        fetch_weights("tune_plus", pin_file=pin, search_dirs=(tmp_path,), output=tmp_path / "x.safetensors")
    pin.write_text(f"{'A' * 64} *containers/x/tune_plus_epoch_10000.ckpt\n{'b' * 64}  other.ckpt\n")
    assert read_pin(pin, "tune_plus_epoch_10000.ckpt") == "a" * 64  # sha256sum's binary marker, any folder
    pin.write_bytes(f"\ufeff{'c' * 64}  tune_plus_epoch_10000.ckpt\r\n".encode())  # a Windows editor's BOM and CRLF
    assert read_pin(pin, "tune_plus_epoch_10000.ckpt") == "c" * 64
    pin.write_text("abc  tune_plus_epoch_10000.ckpt\n")
    with pytest.raises(WeightsError, match="weights.sha256:1: not a sha256sum line"):
        read_pin(pin, "tune_plus_epoch_10000.ckpt")


def test_cli_fetch_then_extract_uses_the_weights(tmp_path: Path, monkeypatch) -> None:
    """What an extractor image does: fetch at build time, then `tunemir extract` finds the file."""
    from tunemir.testing import write_audio

    served = tmp_path / "served"
    served.mkdir()
    _, model, digest = clmr_release_zip(served)
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "weights"))
    write_audio(tmp_path / "in" / "a.wav", 3.0, 22050, 1, "pcm16", seed=1)
    with FileServer(served) as server:
        monkeypatch.setenv("TUNEMIR_URL_WEIGHTS_CLMR", f"{server.url}/{RELEASES['clmr'].filename}")
        result = CliRunner().invoke(main, ["weights", "fetch", "clmr", "--sha256", digest])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "weights" / "clmr.safetensors").is_file()
    result = CliRunner().invoke(main, ["extract", "clmr", str(tmp_path / "in"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest = (tmp_path / "out" / "tunemir-manifest.json").read_text()
    assert read_encoder_weights(tmp_path / "weights" / "clmr.safetensors").metadata["weights_sha256"] in manifest
    result = CliRunner().invoke(main, ["weights", "fetch", "tune", "--sha256", "2" * 64])
    assert result.exit_code == 1 and "drive.google.com" in result.output
