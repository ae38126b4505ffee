"""The batched pitch shift: a tone's frequency moves by 2^(cents/1200), the length is kept,
the output is compared with the `sox` command (what torchaudio-augmentations 0.2.4 runs), and
the chain draws 0.2.4's cents: random.randint(-700, 700) for 60 % of views."""

import math
import os
import random
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from tunemir.datasets.synth import synth_clips, synth_signal
from tunemir.pretrain.augment import AugmentConfig, CLMRAugment
from tunemir.pretrain.data import augment_seed
from tunemir.pretrain.pitch import pitch_shift

SR = 22050
LENGTH = 59049
CENTS = (-700, -699, -350, -1, 0, 1, 123, 699, 700)


def tone(hz: float, length: int = LENGTH, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(length) / SR)).astype(np.float32)


def frequency(signal: np.ndarray) -> float:
    """A pure tone's frequency in Hz: the peak of a Hann-windowed, 8x zero-padded FFT, refined by
    a parabola through the log magnitudes of the peak bin and its neighbours."""
    n = len(signal)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(n), 8 * n))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1:k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (8 * n)


def cents_between(hz: float, reference: float) -> float:
    return 1200 * math.log2(hz / reference)


def test_frequency_estimate_is_exact_to_a_thousandth_of_a_cent():
    for hz in (293.66, 440.0, 659.26, 5000.0):
        assert abs(cents_between(frequency(tone(hz)), hz)) < 1e-3


def test_a_tone_moves_by_the_ratio_and_keeps_its_length_and_level():
    x = torch.from_numpy(tone(440.0))[None].repeat(len(CENTS), 1)
    out = pitch_shift(x, torch.tensor(CENTS))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    edge = 2048  # the estimate ignores the first and last frame, where the STFT sees zero padding
    for row, cents in enumerate(CENTS):
        y = out[row].numpy()
        error = cents_between(frequency(y[edge:-edge]), 440.0 * 2 ** (cents / 1200))
        assert abs(error) < 0.01, (cents, error)  # measured: < 1e-4 cents; the issue asks for 1
        # The tone lasts the whole clip at its level: no silence or fade left by the stretch.
        blocks = np.sqrt(np.mean(y[: (LENGTH // 1024) * 1024].reshape(-1, 1024) ** 2, axis=1))
        assert blocks[1:-1].min() > 0.9 * 0.3 / math.sqrt(2) and blocks.max() < 1.1 * 0.3 / math.sqrt(2), cents


def test_zero_cents_is_the_identity_as_in_sox():
    x = torch.from_numpy(np.stack([synth_signal(c, LENGTH / SR, SR, 0)[:LENGTH] for c in synth_clips(2)]))
    out = pitch_shift(x, torch.tensor([0, 700]))
    assert torch.equal(out[0], x[0]) and not torch.allclose(out[1], x[1], atol=1e-2)


def test_shifting_up_does_not_alias_and_high_tones_keep_their_level():
    # 9 kHz up 700 cents would be 13.5 kHz, above the 11,025 Hz Nyquist frequency: it must be
    # filtered away, not folded back to 8.5 kHz.
    x = torch.from_numpy(np.stack([tone(9000.0), tone(5000.0), tone(5000.0)]))
    out = pitch_shift(x, torch.tensor([700, 700, -700])).numpy()[:, 2048:-2048]
    level = np.sqrt(np.mean(out ** 2, axis=1)) / (0.3 / math.sqrt(2))
    assert level[0] < 10 ** (-40 / 20)
    assert np.allclose(level[1:], 1, atol=0.03)  # 7.5 and 3.3 kHz: inside the pass band


def test_an_example_does_not_depend_on_the_rest_of_its_batch():
    clips = synth_clips(3)
    x = torch.from_numpy(np.stack([synth_signal(c, LENGTH / SR, SR, 0)[:LENGTH] for c in clips]))
    cents = torch.tensor([-700, 5, 700])
    together = pitch_shift(x, cents)
    for row in range(3):
        alone = pitch_shift(x[row:row + 1], cents[row:row + 1])[0]
        assert torch.allclose(together[row], alone, atol=1e-6), row


def test_non_finite_rows_come_back_unchanged_and_bad_shapes_are_refused():
    x = torch.from_numpy(np.stack([tone(440.0), tone(440.0)]))
    x[1, 100] = float("nan")
    out = pitch_shift(x, torch.tensor([300, 300]))
    assert torch.isfinite(out[0]).all() and not torch.equal(out[0], x[0])
    assert torch.equal(out[1].nan_to_num(), x[1].nan_to_num()) and out[1].isnan().sum() == 1
    with pytest.raises(ValueError, match="cents"):
        pitch_shift(x, torch.tensor([300]))


# --- the chain's draws, as torchaudio-augmentations 0.2.4 ---

def test_cents_are_drawn_as_randint_minus_700_to_700_for_60_percent_of_views():
    augment = CLMRAugment(AugmentConfig())
    n = 1401 * 200
    p = augment.sample(n, "cpu", torch.Generator().manual_seed(0))
    applied = p["apply_pitch"].float().mean().item()
    assert abs(applied - 0.6) < 5 * math.sqrt(0.6 * 0.4 / n)
    counts = torch.bincount(p["pitch_cents"] + 700, minlength=1401).numpy()
    assert len(counts) == 1401 and counts.min() > 0  # every integer from -700 to 700, nothing else
    chi2 = ((counts - n / 1401) ** 2 / (n / 1401)).sum()
    assert chi2 < 1400 + 5 * math.sqrt(2 * 1400)  # uniform: chi-square with 1400 degrees of freedom
    # 0.2.4's own draw (PitchShift.process) over as many draws: the same support and moments.
    rng = random.Random(0)
    reference = np.array([rng.randint(int(-7.0 * 100), int(7.0 * 100)) for _ in range(n)])
    drawn = p["pitch_cents"].numpy()
    assert (reference.min(), reference.max()) == (drawn.min(), drawn.max()) == (-700, 700)
    assert abs(drawn.mean() - reference.mean()) < 5 * 405 * math.sqrt(2 / n)
    assert abs(drawn.std() / reference.std() - 1) < 0.01


@pytest.mark.parametrize("semitones,cents", [(7.0, 700), (2.5, 250), (0.123, 12), (0.019, 1)])
def test_the_range_follows_max_semitones_as_0_2_4_truncates_it(semitones, cents):
    p = CLMRAugment(AugmentConfig(max_semitones=semitones)).sample(20000, "cpu", torch.Generator().manual_seed(1))
    assert (p["pitch_cents"].min().item(), p["pitch_cents"].max().item()) == (-cents, cents)


def test_the_chain_is_deterministic_under_its_seed():
    """The device chain's generator is seeded by (seed, step, rank): the same step repeats its
    views bit for bit, pitch shifts included; the next step draws other cents."""
    augment = CLMRAugment(AugmentConfig())
    x = torch.from_numpy(np.stack([synth_signal(c, 1.0, SR, 0) for c in synth_clips(4)]))

    def run(step):
        return augment(x, torch.Generator().manual_seed(augment_seed(0, step, 0)))

    (a, pa), (b, pb), (other, po) = run(3), run(3), run(4)
    assert pa["apply_pitch"].any()  # the repeat covers shifted views
    assert torch.equal(a, b) and torch.equal(pa["pitch_cents"], pb["pitch_cents"])
    assert not torch.equal(pa["pitch_cents"], po["pitch_cents"]) and not torch.equal(a, other)


@pytest.mark.gpu
def test_the_device_result_equals_the_cpu_result():
    x = torch.from_numpy(np.stack([synth_signal(c, LENGTH / SR, SR, 0)[:LENGTH] for c in synth_clips(4)]))
    cents = torch.tensor([-700, -1, 350, 700])
    cpu = pitch_shift(x, cents)
    cuda = pitch_shift(x.cuda(), cents.cuda()).cpu()
    assert torch.allclose(cpu, cuda, atol=1e-4)


# --- against the sox command (what 0.2.4 runs through torchaudio.sox_effects) ---

def sox_binary() -> str:
    found = shutil.which("sox")
    if found is None:
        message = ("the `sox` command is not installed: the pitch shift is compared with it "
                   "(install it: apt-get install sox)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def sox_pitch(x: np.ndarray, cents: int, tmp_path) -> np.ndarray:
    """0.2.4's effect chain [["pitch", cents], ["rate", 22050]] run by the sox command, padded or
    cut to the input's length as 0.2.4 does."""
    source, target = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(source, x, SR, subtype="FLOAT")
    subprocess.run([sox_binary(), "-V1", "-D", str(source), "-e", "floating-point", "-b", "32", str(target),
                    "pitch", str(cents), "rate", str(SR)], check=True)
    y, rate = sf.read(target, dtype="float32")
    assert rate == SR and abs(len(y) - len(x)) <= 2
    out = np.zeros_like(x)
    out[:min(len(x), len(y))] = y[:len(x)]
    return out


def mel_bank(bands: int = 96, bins: int = 1025) -> torch.Tensor:
    """(bins, bands) triangular filters equally spaced on the HTK mel scale from 0 Hz to Nyquist."""
    mel = np.linspace(0, 2595 * np.log10(1 + SR / 2 / 700), bands + 2)
    edges = 700 * (10 ** (mel / 2595) - 1)  # Hz
    hz = np.linspace(0, SR / 2, bins)[:, None]
    rising = (hz - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[None, 2:] - hz) / (edges[2:] - edges[1:-1])
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0, None))


def log_mel(y: np.ndarray) -> torch.Tensor:
    """(96 mel bands, frames) power, STFT 2048 / hop 512."""
    bank = mel_bank()
    window = torch.hann_window(2048, dtype=torch.float64)
    power = torch.stft(torch.as_tensor(y, dtype=torch.float64), 2048, 512, window=window,
                       return_complex=True).abs() ** 2
    return (power.T @ bank).T


def mel_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(frame-wise, long-term) RMS log-mel distance in dB, both floored 60 dB below the louder peak."""
    ma, mb = log_mel(a), log_mel(b)
    floor = max(ma.max(), mb.max()) * 1e-6
    cells = 10 * (ma.clamp(min=floor).log10() - mb.clamp(min=floor).log10())
    longterm = 10 * (ma.mean(1).clamp(min=floor).log10() - mb.mean(1).clamp(min=floor).log10())
    return cells.pow(2).mean().sqrt().item(), longterm.pow(2).mean().sqrt().item()


SOX_CENTS = (-700, -300, -1, 1, 250, 700)


@pytest.mark.slow
def test_sox_moves_a_tone_as_we_do_and_the_spectra_agree(tmp_path):
    sox_binary()  # first: without it the test fails (CI) or skips before computing anything
    x = tone(440.0)
    ours = pitch_shift(torch.from_numpy(x)[None].repeat(len(SOX_CENTS), 1), torch.tensor(SOX_CENTS)).numpy()
    for row, cents in enumerate(SOX_CENTS):
        theirs = sox_pitch(x, cents, tmp_path)
        target = 440.0 * 2 ** (cents / 1200)
        assert abs(cents_between(frequency(theirs[2048:-2048]), target)) < 0.2  # sox: measured <= 0.09
        assert abs(cents_between(frequency(ours[row][2048:-2048]), target)) < 0.01
        cells, longterm = mel_distance(ours[row], theirs)
        assert cells < 2.0 and longterm < 2.5, (cents, cells, longterm)  # measured: <= 0.9 and 1.4 dB


@pytest.mark.slow
def test_music_is_close_to_sox_and_far_from_unshifted(tmp_path):
    """On synthetic music (chords, bass, drums) our phase-vocoder shift and sox's WSOLA shift
    agree to a few dB per mel band and frame (transients are where they differ most), against
    15-19 dB between sox's output and the unshifted input."""
    sox_binary()  # first: without it the test fails (CI) or skips before computing anything
    clips = synth_clips(2)
    distances = []
    for clip in clips:
        x = synth_signal(clip, LENGTH / SR, SR, 0)[:LENGTH]
        ours = pitch_shift(torch.from_numpy(x)[None].repeat(len(SOX_CENTS), 1), torch.tensor(SOX_CENTS)).numpy()
        for row, cents in enumerate(SOX_CENTS):
            theirs = sox_pitch(x, cents, tmp_path)
            cells, longterm = mel_distance(ours[row], theirs)
            unshifted, _ = mel_distance(x, theirs)
            distances.append(cells)
            assert cells < 7.0 and longterm < 4.0, (clip.uid, cents, cells, longterm)
            if abs(cents) >= 250:
                assert cells < 0.4 * unshifted, (clip.uid, cents, cells, unshifted)
    assert np.mean(distances) < 3.5  # measured: 2.5 dB on these clips
