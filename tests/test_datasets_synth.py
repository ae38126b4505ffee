"""The synthetic corpus: deterministic, in the processed layout, three tasks, and real signal."""

import hashlib
import json

import librosa
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tunemir.cli import main
from tunemir.datasets.synth import INSTRUMENTS, write_synth
from tunemir.extract import extract
from tunemir.probe import ProbeDirs, load_task, select_best, train_pending, write_grid
from tunemir.probe.data import load_probe_data
from tunemir.probe.tasks import KEY_LABELS

# Krumhansl & Kessler (1982) key profiles, an independent key finder for the signal check.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("processed")
    return root, write_synth(root, clips=48, seconds=4.0, sample_rate=22050, seed=3)


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_layout_and_labels(corpus):
    root, folders = corpus
    assert set(folders) == {"synth", "synth_key", "synth_tags", "synth_tempo"}
    wavs = sorted((root / "synth" / "wav").glob("*.wav"))
    assert len(wavs) == 48
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", 4 * 22050)
    metas = {name: json.loads((folder / "meta.json").read_text()) for name, folder in folders.items()}
    splits = [e["split"] for e in metas["synth"].values()]
    # clip index mod 20: 0-13 train, 14-16 valid, 17-19 test
    assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (36, 6, 6)
    assert all(m.keys() == metas["synth"].keys() for m in metas.values())
    assert {e["y"] for e in metas["synth_key"].values()} == set(KEY_LABELS)  # 48 clips cycle all 24 keys
    for split in ("train", "valid", "test"):  # every tag present and absent in every split
        bands = [set(e["y"]) for e in metas["synth_tags"].values() if e["split"] == split]
        assert all(any(t in b for b in bands) and any(t not in b for b in bands) for t in INSTRUMENTS)
    tempo = {u: e["extra"]["tempo_bpm"] for u, e in metas["synth"].items()}
    train = np.array([tempo[u] for u, e in metas["synth"].items() if e["split"] == "train"])
    uid = next(iter(tempo))
    assert metas["synth_tempo"][uid]["y"] == pytest.approx([(tempo[uid] - train.mean()) / train.std()])
    for name, kind in (("synth_key", "multiclass"), ("synth_tags", "multilabel"), ("synth_tempo", "regression")):
        task = load_task(name, folders[name])
        assert task.output_type == kind and task.audio_from == "synth"


@pytest.mark.slow
def test_deterministic_and_seeded(corpus, tmp_path):
    root, _ = corpus
    again = write_synth(tmp_path / "a", clips=48, seconds=4.0, sample_rate=22050, seed=3)
    assert _digest(again["synth"] / "wav") == _digest(root / "synth" / "wav")
    assert (again["synth_key"] / "meta.json").read_text() == (root / "synth_key" / "meta.json").read_text()
    other = write_synth(tmp_path / "b", clips=48, seconds=4.0, sample_rate=22050, seed=4)
    assert _digest(other["synth"] / "wav") != _digest(root / "synth" / "wav")
    # Changing the parameters in place rewrites the audio rather than mixing two corpora.
    shorter = write_synth(tmp_path / "a", clips=48, seconds=2.0, sample_rate=22050, seed=3)
    assert sf.info(str(shorter["synth"] / "wav" / "synth-00000.wav")).frames == 2 * 22050


@pytest.mark.slow
def test_key_and_tempo_are_audible(corpus):
    """An independent key finder (chroma + key profiles) and librosa's tempo estimate recover
    the labels far above chance (1/24 for the key)."""
    root, _ = corpus
    meta = json.loads((root / "synth" / "meta.json").read_text())
    profiles = np.array([np.roll(MAJOR, k) for k in range(12)] + [np.roll(MINOR, k) for k in range(12)])
    keys_right = tempo_right = 0
    for uid, entry in meta.items():
        signal, rate = sf.read(str(root / "synth" / "wav" / f"{uid}.wav"), dtype="float32")
        chroma = librosa.feature.chroma_cqt(y=signal, sr=rate).mean(1)
        guess = np.argmax([np.corrcoef(chroma, p)[0, 1] for p in profiles])
        keys_right += KEY_LABELS[guess] == entry["y"]
        bpm = librosa.feature.tempo(y=signal, sr=rate)[0]
        ratio = np.log2(bpm / entry["extra"]["tempo_bpm"])
        tempo_right += min(abs(ratio - o) for o in (-1, 0, 1)) < 0.06  # within 4 %, octave errors allowed
    assert keys_right / len(meta) > 0.6
    assert tempo_right / len(meta) > 0.6


@pytest.mark.slow
def test_probe_end_to_end_on_chroma(tmp_path):
    """The three tasks read the features extracted once from the shared audio, and a chroma
    probe finds the key far above chance (1/24)."""
    root = tmp_path / "processed"
    write_synth(root, clips=120, seconds=3.0, seed=1)
    dirs = ProbeDirs(root, tmp_path / "representations", tmp_path / "probes")
    summary = extract("chroma", root / "synth" / "wav", dirs.features("synth", "chroma"), progress=False)
    assert summary.ok and summary.written == 120
    data = load_probe_data("synth_tags", "chroma", dirs)
    assert data.dim == 72 and len(data.splits["test"].uids) == 18
    write_grid("synth_key", "chroma", dirs, "smoke")
    train_pending("synth_key", "chroma", dirs, device="cpu", progress=False)
    best = select_best("synth_key", "chroma", dirs, split="test")
    assert best["metrics"]["accuracy"] > 0.25


def test_cli_synth(tmp_path):
    result = CliRunner().invoke(main, ["data", "synth", "--cache-dir", str(tmp_path), "--clips", "20",
                                       "--seconds", "1.5"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "processed" / "synth" / "wav").glob("*.wav"))) == 20
    assert "synth_tempo" in result.output


@pytest.mark.parametrize("arguments", [dict(seconds=float("nan")), dict(seconds=float("inf")), dict(seconds=0.5),
                                       dict(clips=19), dict(sample_rate=7999), dict(sample_rate=10**9),
                                       dict(seed=-1)], ids=str)
def test_bad_arguments_write_nothing(tmp_path, arguments):
    with pytest.raises(ValueError, match=next(iter(arguments))):
        write_synth(tmp_path / "processed", **{"clips": 20, "seconds": 1.0, **arguments})
    assert not (tmp_path / "processed").exists()
