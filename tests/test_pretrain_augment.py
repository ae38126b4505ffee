"""CLMR augmentation chain: application rates, parameter ranges and each transform's effect."""

import math

import julius
import numpy as np
import pytest
import torch

from tunemir.pretrain.augment import DELAYS_MS, AugmentConfig, CLMRAugment, delay, sinc_filter
from tunemir.pretrain.sox_reverb import clmr_reverb

SR = 22050
CONFIG = AugmentConfig()


@pytest.fixture(scope="module")
def augment():
    return CLMRAugment(CONFIG)


def _params(augment, batch, **on):
    """Parameters with every transform off except those named (True) and the given values."""
    p = augment.sample(batch, "cpu", torch.Generator().manual_seed(0))
    for key in p:
        if key.startswith("apply_"):
            p[key] = torch.full((batch,), key[6:] in on)
    for key, value in on.items():
        if not isinstance(value, bool):
            p[key] = torch.as_tensor(value).expand(batch).clone()
    return p


def test_rates_and_ranges(augment):
    n = 40000
    p = augment.sample(n, "cpu", torch.Generator().manual_seed(1))
    for name, rate in [("polarity", 0.8), ("noise", 0.01), ("gain", 0.3), ("filter", 0.8), ("delay", 0.3),
                       ("pitch", 0.6), ("reverb", 0.6)]:
        observed = p[f"apply_{name}"].float().mean().item()
        assert abs(observed - rate) < 5 * math.sqrt(rate * (1 - rate) / n), name
    assert abs(p["highpass"].float().mean().item() - 0.5) < 0.02
    assert p["gain_db"].min() >= -20 and p["gain_db"].max() <= -1 and p["gain_db"].std() > 5
    high, low = p["cutoff_hz"][p["highpass"]], p["cutoff_hz"][~p["highpass"]]
    assert high.min() >= 200 and high.max() <= 1200 and low.min() >= 2200 and low.max() <= 4000
    assert set(p["delay_ms"].tolist()) == set(DELAYS_MS)
    assert p["noise_snr"].min() >= 1e-4 and p["noise_snr"].max() <= 0.01
    for key in ("reverberance", "damping", "room_size"):
        assert p[key].min() == 0 and p[key].max() == 99
    # 0.2.4: random.randint(-700, 700), every integer from -700 to 700 (tests/test_pitch.py checks uniformity).
    assert p["pitch_cents"].dtype == torch.int64
    assert p["pitch_cents"].min() == -700 and p["pitch_cents"].max() == 700


def test_nothing_applied_is_identity_and_each_transform_alone(augment):
    gen = torch.Generator().manual_seed(2)
    x = 0.1 * torch.randn(4, 8192, generator=gen)
    out, _ = augment(x, gen, _params(augment, 4))
    assert torch.equal(out, x)
    out, _ = augment(x, gen, _params(augment, 4, polarity=True))
    assert torch.equal(out, -x)
    out, _ = augment(x, gen, _params(augment, 4, gain=True, gain_db=-6.0))
    assert torch.allclose(out, x * 10 ** (-6 / 20), atol=1e-7)
    loud = torch.ones(1, 100) * 0.9
    out, _ = augment(loud, gen, _params(augment, 1, gain=True, gain_db=-1.0))
    assert torch.allclose(out, loud * 10 ** (-1 / 20))
    out, _ = augment(x, gen, _params(augment, 4, noise=True, noise_snr=0.01))
    residual_std = (out - x).std(dim=1) / x.std(dim=1)
    assert torch.allclose(residual_std, torch.full((4,), 0.01), rtol=0.05)


def test_filters_equal_julius_per_example():
    gen = torch.Generator().manual_seed(3)
    x = 0.1 * torch.randn(6, 59049, generator=gen)
    hz = torch.tensor([200.0, 700.0, 1200.0, 2200.0, 3100.0, 4000.0])
    highpass = torch.tensor([True, True, True, False, False, False])
    cutoffs = hz / SR
    out = sinc_filter(x, cutoffs, highpass)
    for i in range(6):
        f = julius.highpass_filter if highpass[i] else julius.lowpass_filter
        assert torch.allclose(out[i], f(x[i], cutoffs[i].item()), atol=1e-6)


def test_delay_matches_a_plain_loop():
    x = torch.randn(2, 20000)
    out = delay(x, torch.tensor([200, 450]), SR)
    for i, ms in enumerate((200, 450)):
        shift = int(ms * SR / 1000)
        ref = x[i].numpy().copy()
        ref[shift:] += 0.5 * x[i].numpy()[:-shift]
        np.testing.assert_allclose(out[i].numpy(), ref / 2, atol=1e-6)


def _peak_hz(signal):
    spectrum = np.abs(np.fft.rfft(signal.numpy() * np.hanning(len(signal))))
    return np.argmax(spectrum) * SR / len(signal)


def test_pitch_shift_moves_a_tone_by_its_cents(augment):
    t = torch.arange(59049) / SR
    x = (0.3 * torch.sin(2 * math.pi * 440 * t))[None].repeat(2, 1)
    cents = torch.tensor([-700, 700])
    out, _ = augment(x, torch.Generator(), _params(augment, 2, pitch=True, pitch_cents=cents))
    assert out.shape == x.shape and torch.isfinite(out).all()
    for row, c in enumerate(cents.tolist()):
        assert _peak_hz(out[row]) == pytest.approx(440 * 2 ** (c / 1200), rel=0.005)


def test_reverb_draws_are_0_2_4s(augment):
    """0.2.4's Reverb: each of reverberance, damping and room size from torch.randint(0, 100),
    every integer 0 to 99 equally likely (chi-square, 99 degrees of freedom, within 6 sd)."""
    n = 100_000
    p = augment.sample(n, "cpu", torch.Generator().manual_seed(5))
    for key in ("reverberance", "damping", "room_size"):
        counts = torch.bincount(p[key], minlength=100)
        assert len(counts) == 100 and p[key].min() == 0
        chi2 = ((counts - n / 100) ** 2 / (n / 100)).sum().item()
        assert chi2 < 99 + 6 * math.sqrt(2 * 99), key
    assert abs(p["apply_reverb"].float().mean().item() - 0.6) < 5 * math.sqrt(0.24 / n)


def test_chain_reverb_is_sox_reverb_per_row_batched_or_per_clip(augment):
    gen = torch.Generator().manual_seed(4)
    x = 0.1 * torch.randn(4, 8192, generator=gen)
    params = _params(augment, 4, reverb=True, reverberance=torch.tensor([0, 99, 40, 70]),
                     damping=torch.tensor([99, 0, 50, 20]), room_size=torch.tensor([0, 99, 60, 10]))
    params["apply_reverb"][2] = False
    out, _ = augment(x, gen, params)
    assert torch.equal(out[2], x[2])
    rows = [0, 1, 3]
    expected = clmr_reverb(x[rows], *(params[k][rows] for k in ("reverberance", "damping", "room_size")), SR)
    assert torch.allclose(out[rows], expected, atol=1e-6)
    tail = out[:, 4096:].pow(2).sum(dim=1) - x[:, 4096:].pow(2).sum(dim=1)
    assert tail[1] > tail[0] > 0  # reverberance 99 in a big room adds more than 0 in a small one
    # --augment_on cpu runs the same chain on one clip at a time.
    single = {k: v[1:2] for k, v in params.items()}
    alone, _ = augment(x[1:2], gen, single)
    assert torch.allclose(alone[0], out[1], atol=1e-6)
