"""Start-up: the commands that need no encoder and no training (`--help`, `models`, `probe grid`,
`probe report`, `probe evaluate`, `data`) run without importing torch or the training stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.models import SampleCNNConfig, TuneConfig, available_models, build_model, get_info
from tunemir.probe.data import ProbeDirs
from tunemir.probe.runs import train_pending, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.testing import write_probe_dataset

#: What these commands must leave unimported: torch and what imports it, the training stack, and
#: matplotlib (but `probe report`, which draws).
HEAVY = ("torch", "safetensors.torch", "pytorch_lightning", "lightning", "torchaudio", "tensorboard", "sklearn",
         "matplotlib")

#: Runs `tunemir ARGS...` in this process and, at its exit, writes which HEAVY modules it imported.
WRAPPER = r"""
import atexit, json, sys
out, heavy = sys.argv[1], json.loads(sys.argv[2])
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(m for m in heavy if m in sys.modules))))
from tunemir.cli import main
main(sys.argv[3:], prog_name="tunemir")
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A cache with a processed dataset, its features and a trained smoke grid (trained here,
    in the test process: the subprocesses only write configs and read results)."""
    root = tmp_path_factory.mktemp("cache")
    write_probe_dataset(root, "gtzan_ff", "rep", BUILTIN_TASKS["gtzan_ff"], {"train": 60, "valid": 30, "test": 30},
                        dim=4)
    dirs = ProbeDirs.resolve(root / "processed", root / "representations", root / "probes")
    write_grid("gtzan_ff", "rep", dirs, "smoke")
    assert train_pending("gtzan_ff", "rep", dirs, device="cpu", progress=False).ok
    return root


def _run(args: list[str], cache: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    imported = tmp_path / "imported.json"
    run = subprocess.run([sys.executable, "-c", WRAPPER, str(imported), json.dumps(HEAVY), *args],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "TUNEMIR_CACHE_DIR": str(cache)})
    return run, json.loads(imported.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["--help"], "probe"),
    (["models"], "tune_plus"),
    (["probe", "grid", "gtzan_ff", "fresh", "--grid", "smoke"], "8 configs (smoke grid)"),
    (["probe", "report", "--output-dir", "report"], "| rep |"),
    (["probe", "evaluate", "gtzan_ff", "rep", "--expected-num-runs", "8"], '"num_runs": 8'),
    (["data", "--help"], "synth"),
], ids=["help", "models", "probe-grid", "probe-report", "probe-evaluate", "data-help"])
def test_light_commands_do_not_import_torch(args, expected, cache, tmp_path):
    run, imported = _run(args, cache, tmp_path)
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout
    allowed = ["matplotlib"] if args[:2] == ["probe", "report"] else []
    assert imported == allowed, f"`tunemir {' '.join(args)}` imported {imported}"
    if args[:2] == ["probe", "grid"]:
        assert len(list((cache / "probes" / "gtzan_ff" / "fresh").glob("*.json"))) == 8
    if args[:2] == ["probe", "report"]:
        assert (tmp_path / "report" / "valid_scores.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_wrapper_sees_torch_where_a_command_needs_it(cache, tmp_path):
    """The check above can fail: `probe train` (nothing left to train) still imports torch."""
    run, imported = _run(["probe", "train", "gtzan_ff", "rep", "--device", "cpu"], cache, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "nothing to do" in run.stdout
    assert "torch" in imported


def test_models_lists_the_layers_of_the_built_models():
    """`tunemir models` reads the layer counts from the registry; they are the built models'."""
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.output.splitlines())
    assert sorted(lines) == available_models()
    for name in available_models():
        info = get_info(name)
        if info.needs_weights:
            layers = build_model(name).num_layers
            assert info.config.num_layers == info.spec.num_layers == layers
            assert lines[name] == f"{info.summary} ({f'layers 0-{layers - 1}' if layers > 1 else 'layer 0 only'})"
        else:
            assert lines[name] == f"{info.summary} ({build_model(name).dim}-d, no layers)"


@pytest.mark.parametrize("name, config", [("clmr", SampleCNNConfig((4, 8, 16))), ("tune", TuneConfig(2, 8)),
                                          ("tune_plus", TuneConfig(3, 16, plus=True))])
def test_a_configuration_counts_the_layers_of_its_encoder(name, config):
    assert config.num_layers == build_model(name, config).num_layers


@pytest.mark.skipif(not hasattr(click, "NoSuchCommand"), reason="click < 8.4 suggests no command names")
@pytest.mark.parametrize("typo, command", [("extrakt", "extract"), ("prob", "probe"), ("weigths", "weights")])
def test_a_typo_is_matched_against_the_lazy_commands_too(typo, command):
    result = CliRunner().invoke(main, [typo])
    assert result.exit_code == 2
    assert f"No such command '{typo}'. Did you mean '{command}'?" in result.output
