"""`tunemir data synth`: a small deterministic music-like corpus in the processed layout.

Each clip is a loop of a chord progression in one of the 24 keys at one tempo, played by a
random band of wavetable instruments (piano-like keys, organ, pad, bell, bass, drums), with a
melody on the beat that leans on the tonic triad. Three tasks share the audio, each in its
own folder with meta.json and task.json (`"audio_from": "synth"`, so features are extracted once):

- `synth_key`: 24-way key, jukemir's GiantSteps label set (multiclass);
- `synth_tags`: which instruments play (multilabel, 6 tags);
- `synth_tempo`: tempo in BPM, z-scored with the train clips' mean and std (regression).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from tunemir.fileio import atomic_path
from tunemir.probe.tasks import KEY_LABELS

AUDIO_DATASET = "synth"
INSTRUMENTS = ("keys", "organ", "pad", "bell", "bass", "drums")
_CHORDAL = ("keys", "organ", "pad", "bell")
TEMPO_RANGE = (70.0, 160.0)
# Scale degrees (semitones above the tonic) of the chord roots and qualities of each progression.
_MAJOR_PROGRESSIONS = (((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")), ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")))
_MINOR_PROGRESSIONS = (((0, "min"), (5, "min"), (7, "maj"), (0, "min")), ((0, "min"), (8, "maj"), (5, "min"), (7, "maj")))
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7)}
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}  # harmonic minor
# Harmonic amplitudes of each pitched timbre (one period is tabulated) and its envelope.
_TIMBRES = {
    "keys": ((1, 0.5, 0.33, 0.25, 0.2, 0.16, 0.14, 0.12), "pluck"),
    "organ": ((1, 0.8, 0.6, 0, 0.3, 0, 0.2, 0.15), "hold"),
    "pad": ((1, 0.3, 0.15, 0.05), "swell"),
    "bell": ((1, 0, 0.4, 0, 0.25, 0, 0, 0.3), "pluck"),
    "bass": ((1, 0.6, 0.3, 0.15), "hold"),
}
_TABLE = 4096
#: Bounds of `write_synth`'s arguments (longer clips or higher rates than these make no sense here
#: and would only exhaust memory).
MIN_CLIPS, MIN_SECONDS, MAX_SECONDS = 20, 1.0, 600.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
_SPLIT_OF = ["train"] * 14 + ["valid"] * 3 + ["test"] * 3  # by clip index mod 20: 70/15/15


@dataclasses.dataclass(frozen=True)
class SynthClip:
    uid: str
    split: str
    key: str
    tempo: float
    instruments: tuple[str, ...]


def _wavetable(amplitudes) -> np.ndarray:
    phase = np.arange(_TABLE) / _TABLE
    table = sum(a * np.sin(2 * np.pi * (k + 1) * phase) for k, a in enumerate(amplitudes) if a)
    return (table / np.abs(table).max()).astype(np.float32)


_TABLES = {name: _wavetable(amps) for name, (amps, _) in _TIMBRES.items()}


def _envelope(kind: str, n: int, rate: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / rate
    attack = {"pluck": 0.005, "hold": 0.01, "swell": 0.25}[kind]
    env = np.minimum(t / attack, 1.0)
    if kind == "pluck":
        env *= np.exp(-t / 0.35)
    release = min(n, int(0.03 * rate))
    env[n - release:] *= np.linspace(1, 0, release, dtype=np.float32)
    return env


def _note(out: np.ndarray, timbre: str, midi: float, start: int, n: int, gain: float, rate: int) -> None:
    n = min(n, len(out) - start)
    if n <= 0:
        return
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    index = (np.arange(n) * (freq * _TABLE / rate)).astype(np.int64) % _TABLE
    out[start:start + n] += gain * _TABLES[timbre][index] * _envelope(_TIMBRES[timbre][1], n, rate)


def _drums(out: np.ndarray, beat: int, rng: np.random.Generator, rate: int) -> None:
    kick_n, snare_n, hat_n = int(0.15 * rate), int(0.12 * rate), int(0.03 * rate)
    t = np.arange(kick_n) / rate
    kick = np.sin(2 * np.pi * np.cumsum(50 + 90 * np.exp(-t / 0.03)) / rate) * np.exp(-t / 0.05)
    snare = rng.standard_normal(snare_n) * np.exp(-np.arange(snare_n) / rate / 0.04)
    hat = np.diff(rng.standard_normal(hat_n + 1)) * np.exp(-np.arange(hat_n) / rate / 0.008)
    for b, start in enumerate(range(0, len(out), beat)):
        hit = kick if b % 2 == 0 else snare
        gain = 0.9 if b % 2 == 0 else 0.35
        n = min(len(hit), len(out) - start)
        out[start:start + n] += gain * hit[:n]
        for half in (start, start + beat // 2):
            n = min(hat_n, len(out) - half)
            if n > 0:
                out[half:half + n] += 0.12 * hat[:n]


def synth_signal(clip: SynthClip, seconds: float, rate: int, seed: int) -> np.ndarray:
    """The float32 mono signal of one clip (peak 0.5 to 0.9), a pure function of its arguments."""
    rng = np.random.default_rng([seed, int(clip.uid.rsplit("-", 1)[1])])
    tonic_name, mode = clip.key.split()
    tonic = [k.split()[0] for k in KEY_LABELS[:12]].index(tonic_name)
    progression = (_MAJOR_PROGRESSIONS if mode == "major" else _MINOR_PROGRESSIONS)[rng.integers(2)]
    scale = _SCALES[mode]
    out = np.zeros(int(round(seconds * rate)), np.float32)
    beat = int(round(60.0 / clip.tempo * rate))
    octave = 48 + rng.integers(0, 13)  # tonic somewhere in C3..C4
    base = octave + ((tonic - octave) % 12)
    chordal = [i for i in clip.instruments if i in _CHORDAL]
    for b, start in enumerate(range(0, len(out), beat)):
        root, quality = progression[(b // 4) % len(progression)]
        chord = [base + root + iv for iv in _TRIADS[quality]]
        for instrument in chordal:
            if instrument == "keys" or b % 4 == 0:  # keys strike every beat, the others hold a bar
                length = beat if instrument == "keys" else 4 * beat
                for pitch in chord:
                    _note(out, instrument, pitch + (12 if instrument == "bell" else 0), start, length, 0.18, rate)
        if "bass" in clip.instruments and b % 2 == 0:
            _note(out, "bass", base + root - 24, start, 2 * beat, 0.35, rate)
        # Melody: mostly tonic-triad degrees, on the beat, an octave up.
        degree = rng.choice([0, 0, 0, 2, 2, 4, 4, 1, 3, 5, 6])
        _note(out, chordal[b % len(chordal)], base + 12 + scale[degree], start, beat, 0.22, rate)
    if "drums" in clip.instruments:
        _drums(out, beat, rng, rate)
    out += 0.003 * rng.standard_normal(len(out)).astype(np.float32)
    return (out * (rng.uniform(0.5, 0.9) / np.abs(out).max())).astype(np.float32)


def synth_clips(clips: int, seed: int = 0) -> list[SynthClip]:
    """The clips' labels: keys cycle through a seeded order of all 24, tempi are uniform in
    `TEMPO_RANGE`, and within each split the first two clips have complementary bands (so
    every tag is both present and absent in every split) and later ones random bands."""
    rng = np.random.default_rng(seed)
    keys = rng.permutation(len(KEY_LABELS))
    first = (0b011001, 0b100110)  # keys+bell+bass / organ+pad+drums: each tag differs
    seen: dict[str, int] = {}
    out = []
    for i in range(clips):
        split = _SPLIT_OF[i % len(_SPLIT_OF)]
        k = seen[split] = seen.get(split, -1) + 1
        if k < 2:
            band = first[k]
        else:
            band = 0
            while not band & 0b1111:  # at least one chordal instrument
                band = int(rng.integers(1, 64))
        instruments = tuple(name for bit, name in enumerate(INSTRUMENTS) if band >> bit & 1)
        tempo = round(float(rng.uniform(*TEMPO_RANGE)), 1)
        out.append(SynthClip(f"synth-{i:05d}", split, KEY_LABELS[keys[i % len(keys)]], tempo, instruments))
    return out


def write_synth(processed_root: Path, clips: int = 240, seconds: float = 8.0, sample_rate: int = 22050,
                seed: int = 0, progress: bool = False) -> dict[str, Path]:
    """Write the corpus under `processed_root` (`synth/wav`, `synth/meta.json` and the three task
    folders); existing WAVs are kept, since the audio is a pure function of the arguments.
    Returns the folder of each dataset name."""
    if clips < MIN_CLIPS:  # fewer leave a split without a clip of some tag
        raise ValueError(f"clips must be at least {MIN_CLIPS}, got {clips}")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:  # also False for NaN
        raise ValueError(f"seconds must be from {MIN_SECONDS:g} to {MAX_SECONDS:g}, got {seconds}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    specs = synth_clips(clips, seed)
    audio = processed_root / AUDIO_DATASET
    params = {"clips": clips, "seconds": seconds, "sample_rate": sample_rate, "seed": seed}
    stamp = audio / "synth.json"
    fresh = not stamp.is_file() or json.loads(stamp.read_text()) != params
    for clip in tqdm(specs, desc="synth", unit="clip", disable=not progress):
        path = audio / "wav" / f"{clip.uid}.wav"
        if fresh or not path.exists():
            with atomic_path(path) as tmp:
                sf.write(str(tmp), synth_signal(clip, seconds, sample_rate, seed), sample_rate, subtype="PCM_16",
                         format="WAV")
    _write_json(stamp, params)
    train_tempi = np.array([c.tempo for c in specs if c.split == "train"])
    mean, std = float(train_tempi.mean()), float(train_tempi.std()) or 1.0
    extra = {c.uid: {"key": c.key, "tempo_bpm": c.tempo, "instruments": list(c.instruments)} for c in specs}
    tasks = {
        AUDIO_DATASET: ({c.uid: c.key for c in specs}, None),
        "synth_key": ({c.uid: c.key for c in specs},
                      {"output_type": "multiclass", "labels": list(KEY_LABELS)}),
        "synth_tags": ({c.uid: list(c.instruments) for c in specs},
                       {"output_type": "multilabel", "labels": list(INSTRUMENTS)}),
        "synth_tempo": ({c.uid: [(c.tempo - mean) / std] for c in specs},
                        {"output_type": "regression", "labels": ["tempo"], "num_outputs": 1}),
    }
    folders = {}
    for name, (labels, task) in tasks.items():
        folder = processed_root / name
        meta = {c.uid: {"split": c.split, "y": labels[c.uid], "extra": extra[c.uid]} for c in specs}
        _write_json(folder / "meta.json", meta)
        if task is not None:
            _write_json(folder / "task.json", {**task, "audio_from": AUDIO_DATASET})
        folders[name] = folder
    return folders


def _write_json(path: Path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
