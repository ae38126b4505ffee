"""The install: what runs without the extras, librosa's numba cache on a first run, a real `pip install .`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import click
import numpy as np
import pytest

from tunemir.testing import write_audio

ROOT = Path(__file__).resolve().parents[1]
#: What the extras bring (with their own heavy dependencies) that the base install must never need.
EXTRA_MODULES = ["librosa", "lightning", "lightning_fabric", "llvmlite", "matplotlib", "mir_eval", "numba",
                 "pytorch_lightning", "scipy", "sklearn", "tensorboard", "torch_pitch_shift", "torchaudio",
                 "torchmetrics", "yaml"]

#: Runs tunemir commands (CliRunner, one process) with the extras' packages made unimportable, and
#: reports each command's exit code, output and which hidden packages it tried to import.
HIDDEN_EXTRAS = r"""
import importlib.abc, json, sys
hidden, commands = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
tried = []

class HideExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            tried.append(name.split(".")[0])
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, HideExtras())
from click.testing import CliRunner
from tunemir.cli import main
results = [{"args": ["import tunemir.cli"], "exit": 0, "output": "", "error": None, "tried": sorted(set(tried))}]
for args in commands:
    start = len(tried)
    result = CliRunner().invoke(main, args)
    error = result.exception if not isinstance(result.exception, (SystemExit, type(None))) else None
    results.append({"args": args, "exit": result.exit_code, "output": result.output,
                    "error": repr(error) if error else None, "tried": sorted(set(tried[start:]))})
print(json.dumps(results))
"""


def _wavs(folder: Path, count: int = 4) -> Path:
    for i in range(count):
        write_audio(folder / f"clip{i}.wav", 2.0 + i, 22050 if i % 2 else 44100, 1 + i % 2, seed=i)
    return folder


@pytest.mark.slow
def test_base_commands_work_without_the_extras(tmp_path: Path):
    wavs = _wavs(tmp_path / "in", 3)
    commands = [
        ["--help"], ["models"], ["data", "--help"], ["convert-checkpoint", "--help"], ["weights", "fetch", "--help"],
        ["extract", "tune_plus", str(wavs), str(tmp_path / "out"), "--random-init", "--workers", "0"],
        ["extract", "chroma", str(wavs), str(tmp_path / "chroma")],
        ["train", "--help"], ["evaluate", "linear", "x"], ["probe", "run"], ["demo", "--help"],
    ]
    run = subprocess.run([sys.executable, "-c", HIDDEN_EXTRAS, json.dumps(EXTRA_MODULES), json.dumps(commands)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    results = {" ".join(r["args"][:2]): r for r in json.loads(run.stdout)}
    for result in results.values():
        assert result["error"] is None, result
    assert results["import tunemir.cli"]["tried"] == []

    usage = results["--help"]
    assert usage["exit"] == 0
    for name in ["convert-checkpoint", "data", "demo", "evaluate", "extract", "models", "probe", "train", "weights"]:
        assert f"\n  {name} " in usage["output"], name
    assert "[needs: pip install 'tunemir[train]']" in usage["output"]
    assert "[needs: pip install 'tunemir[probe]']" in usage["output"]
    for key in ["models", "data --help", "convert-checkpoint --help", "weights fetch", "demo --help"]:
        assert results[key]["exit"] == 0, results[key]
        assert results[key]["tried"] == [], results[key]
    assert [line.split()[0] for line in results["models"]["output"].splitlines()] == [
        "chroma", "clmr", "mfcc", "musicnn", "musicnn_msd", "musicnn_mtt", "tune", "tune_plus"]

    extract = results["extract tune_plus"]
    assert extract["exit"] == 0 and extract["tried"] == [], extract
    vectors = [np.load(tmp_path / "out" / f"clip{i}.npy") for i in range(3)]
    assert all(v.shape == (512,) and np.isfinite(v).all() for v in vectors)

    chroma = results["extract chroma"]
    assert chroma["exit"] == 1 and "pip install 'tunemir[handcrafted]'" in chroma["output"], chroma
    assert not (tmp_path / "chroma").exists()  # refused before anything was written
    for key, extra in [("train --help", "train"), ("evaluate linear", "train"), ("probe run", "probe")]:
        assert results[key]["exit"] == 1, results[key]
        assert f"pip install 'tunemir[{extra}]'" in results[key]["output"], results[key]
        assert "Traceback" not in results[key]["output"]


def test_lazy_commands_help_matches_the_commands_and_takes_log_options():
    from tunemir.cli import LAZY_COMMANDS, main

    for name, (module, attribute, extra, text) in LAZY_COMMANDS.items():
        command = main.get_command(click.Context(main), name)
        assert command.get_short_help_str(1000) == text, name
        assert {"--verbose", "--quiet"} <= {opt for param in command.params for opt in getattr(param, "opts", ())}
        for sub in getattr(command, "commands", {}).values():
            assert "--quiet" in {opt for param in sub.params for opt in getattr(param, "opts", ())}, (name, sub.name)


def _librosa_cache_files() -> set[Path]:
    import importlib.util

    spec = importlib.util.find_spec("librosa")
    return set(Path(spec.origin).parent.rglob("*.nb[ic]"))


@pytest.mark.slow
def test_first_run_on_an_empty_numba_cache_with_several_workers(tmp_path: Path):
    """`make demo`'s segfault: decode workers compiling librosa's numba code at once corrupted its
    cache. Two extractions at once (chroma and mfcc, 3 workers each) on an empty cache, then again,
    must all succeed and agree with a run without workers; nothing is written into site-packages."""
    wavs = _wavs(tmp_path / "in", 5)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"HOME": str(home)}
    before = _librosa_cache_files()

    def extract(model: str, out: str, workers: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tunemir", "-q", "extract", model, str(wavs),
                                 str(tmp_path / out), "--workers", str(workers)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    for run in (1, 2):
        jobs = [extract(model, f"{model}-{run}", 3) for model in ("chroma", "mfcc")]
        for job in jobs:
            output = job.communicate(timeout=600)[0]
            assert job.returncode == 0, f"run {run}: exit {job.returncode}\n{output}"
    for model in ("chroma", "mfcc"):
        job = extract(model, f"{model}-serial", 0)
        assert job.wait(timeout=600) == 0, job.stdout.read()

    assert list((home / ".cache" / "tunemir" / "numba").rglob("*.nbi")), "tunemir's numba cache was not used"
    assert _librosa_cache_files() <= before, "numba cache files were written into site-packages"
    for model, dim in [("chroma", 72), ("mfcc", 120)]:
        for i in range(5):
            serial = np.load(tmp_path / f"{model}-serial" / f"clip{i}.npy")
            assert serial.shape == (dim,) and np.isfinite(serial).all()
            for run in (1, 2):
                np.testing.assert_array_equal(np.load(tmp_path / f"{model}-{run}" / f"clip{i}.npy"), serial)


#: A user's torch that `pip install .` must keep: the newest release in pyproject's range (its CPU
#: build lies on this workplace's disk, so CI installs it in seconds; elsewhere pip downloads it).
USER_TORCH = "2.13.0"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TUNEMIR_TEST_PIP_INSTALL") != "1",
                    reason="a real `pip install .` into a new venv (1-3 min): .ci/run sets TUNEMIR_TEST_PIP_INSTALL=1")
def test_pip_install_without_extras(tmp_path: Path):
    """Into a venv that already has a torch in the supported range, `pip install .` keeps that
    torch, installs no extra, and gives a working `tunemir --help`, `models` and `extract`; the
    commands of the extras say which one to install."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tunemir", source / "tunemir", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    try:
        _check_base_install(env_dir, source, tmp_path)
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)


def _check_base_install(env_dir: Path, source: Path, tmp_path: Path) -> None:
    python = env_dir / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={USER_TORCH}"], check=True, timeout=1800)
    subprocess.run([*pip, source], check=True, timeout=1800)
    listing = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                             check=True).stdout
    installed = {entry["name"].lower(): entry["version"] for entry in json.loads(listing)}
    assert installed["torch"].split("+")[0] == USER_TORCH, installed["torch"]  # kept, not replaced
    assert {"numpy", "soundfile", "soxr", "click", "safetensors", "tqdm", "tunemir"} <= set(installed)
    assert not set(installed) & {"librosa", "numba", "scipy", "scikit-learn", "pyyaml", "pytorch-lightning",
                                 "torchaudio", "matplotlib", "mir-eval"}, sorted(installed)

    tunemir = env_dir / "bin" / "tunemir"
    wavs = _wavs(tmp_path / "in", 2)
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tunemir, *args], capture_output=True, text=True, cwd=tmp_path, env=clean_env,
                              timeout=600)

    usage = run("--help")
    assert usage.returncode == 0 and "train" in usage.stdout and "extract" in usage.stdout, usage.stderr
    assert run("models").returncode == 0
    extract = run("extract", "clmr", str(wavs), str(tmp_path / "out"), "--random-init", "--workers", "2", "-q")
    assert extract.returncode == 0, extract.stderr
    assert all(np.load(tmp_path / "out" / f"clip{i}.npy").shape == (512,) for i in range(2))
    for args, extra in [(("train", "--help"), "train"), (("probe", "run"), "probe"),
                        (("extract", "chroma", str(wavs), str(tmp_path / "c")), "handcrafted")]:
        result = run(*args)
        assert result.returncode == 1 and f"pip install 'tunemir[{extra}]'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_extras_table_names_what_pyproject_installs():
    """tunemir.extras.EXTRAS (what the error messages check for) against pyproject's extras."""
    import importlib.metadata
    import re
    import tomllib

    from tunemir.extras import EXTRAS

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        names = {canonical(re.match(r"[A-Za-z0-9_.-]+", req).group()) for req in declared[extra]}
        for module in modules:
            assert {canonical(d) for d in providers[module]} & names, (extra, module)
    assert set(EXTRAS) == set(declared) - {"dev"}
