"""CLMR's augmentation chain, batched on the training device with independent random
parameters per example (Spijkervet & Burgoyne 2021, torchaudio-augmentations 0.2.4 settings).

The chain, in CLMR's order, after each view's own random crop (done by the dataset):
polarity inversion (p 0.8), white noise (p 0.01), gain (p 0.3), high- or low-pass filter
(p 0.8), delay (p 0.3), pitch shift (p 0.6), reverb (p 0.6). All parameters of a batch are
drawn at once from one generator and returned, so tests can check rates and ranges.
Deviations from torchaudio-augmentations 0.2.4 (which cannot run on torchaudio >= 2.9) are
listed in the README; in short, pitch shift draws 0.2.4's integer cents but shifts with a
phase vocoder and sinc resampling (`tunemir.pretrain.pitch`) instead of sox's WSOLA, and
reverb is sox's own `reverb` (freeverb) computed exactly, batched by FFT (`tunemir.pretrain.sox_reverb`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from tunemir.audio import SAMPLE_RATE
from tunemir.pretrain.pitch import pitch_shift
from tunemir.pretrain.sox_reverb import clmr_reverb

DELAYS_MS = (200, 250, 300, 350, 400, 450)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the chain (CLMR v2 / TUNe defaults)."""

    sample_rate: int = SAMPLE_RATE
    p_polarity: float = 0.8
    p_noise: float = 0.01
    noise_snr: tuple[float, float] = (1e-4, 0.01)  # noise std as a fraction of the signal's std
    p_gain: float = 0.3
    gain_db: tuple[float, float] = (-20.0, -1.0)
    p_filter: float = 0.8
    highpass_hz: tuple[float, float] = (200.0, 1200.0)
    lowpass_hz: tuple[float, float] = (2200.0, 4000.0)
    p_delay: float = 0.3
    delay_volume: float = 0.5
    p_pitch: float = 0.6
    max_semitones: float = 7.0
    p_reverb: float = 0.6


class CLMRAugment(torch.nn.Module):
    """The chain as one module: `forward(x (B, T), generator)` -> (augmented (B, T), parameters)."""

    def __init__(self, config: AugmentConfig = AugmentConfig()):
        super().__init__()
        self.config = config
        # As 0.2.4's PitchShift: cents ~ random.randint(int(-7.0 * 100), int(7.0 * 100)), both ends included.
        self.max_cents = int(config.max_semitones * 100)

    def sample(self, batch: int, device, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random choice of the chain for `batch` examples: `apply_*` masks and values."""
        c = self.config

        def uniform(low, high):
            return low + (high - low) * torch.rand(batch, generator=gen, device=device)

        def coin(p):
            return torch.rand(batch, generator=gen, device=device) < p

        highpass = coin(0.5)
        return {
            "apply_polarity": coin(c.p_polarity),
            "apply_noise": coin(c.p_noise), "noise_snr": uniform(*c.noise_snr),
            "apply_gain": coin(c.p_gain), "gain_db": uniform(*c.gain_db),
            "apply_filter": coin(c.p_filter), "highpass": highpass,
            "cutoff_hz": torch.where(highpass, uniform(*c.highpass_hz), uniform(*c.lowpass_hz)),
            "apply_delay": coin(c.p_delay),
            "delay_ms": torch.tensor(DELAYS_MS, device=device)[
                torch.randint(len(DELAYS_MS), (batch,), generator=gen, device=device)],
            "apply_pitch": coin(c.p_pitch),
            "pitch_cents": torch.randint(-self.max_cents, self.max_cents + 1, (batch,), generator=gen,
                                         device=device),
            "apply_reverb": coin(c.p_reverb),
            "reverberance": torch.randint(100, (batch,), generator=gen, device=device),
            "damping": torch.randint(100, (batch,), generator=gen, device=device),
            "room_size": torch.randint(100, (batch,), generator=gen, device=device),
        }

    @torch.no_grad()
    def forward(self, x: torch.Tensor, gen: torch.Generator,
                params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        p = self.sample(x.shape[0], x.device, gen) if params is None else params
        sr = self.config.sample_rate
        x = torch.where(p["apply_polarity"][:, None], -x, x)
        noise_std = p["noise_snr"][:, None] * x.std(dim=1, keepdim=True)
        noise = torch.randn(x.shape, generator=gen, device=x.device) * noise_std
        x = torch.where(p["apply_noise"][:, None], x + noise, x)
        gained = (x * 10 ** (p["gain_db"][:, None] / 20)).clamp(-1, 1)  # torchaudio Vol(db) clamps
        x = torch.where(p["apply_gain"][:, None], gained, x)
        x = _apply_rows(x, p["apply_filter"],
                        lambda rows: sinc_filter(x[rows], p["cutoff_hz"][rows] / sr, p["highpass"][rows]))
        x = _apply_rows(x, p["apply_delay"], lambda rows: delay(x[rows], p["delay_ms"][rows], sr,
                                                               self.config.delay_volume))
        x = _apply_rows(x, p["apply_pitch"], lambda rows: pitch_shift(x[rows], p["pitch_cents"][rows]))
        # As 0.2.4's Reverb: sox `reverb R D S` (its defaults otherwise), then `channels 1`.
        x = _apply_rows(x, p["apply_reverb"], lambda rows: clmr_reverb(
            x[rows], p["reverberance"][rows], p["damping"][rows], p["room_size"][rows], sr))
        return x, p


def _apply_rows(x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    rows = torch.nonzero(mask).flatten()
    if len(rows) == 0:
        return x
    out = x.clone()
    out[rows] = fn(rows)
    return out


def sinc_filter(x: torch.Tensor, cutoff: torch.Tensor, highpass: torch.Tensor, zeros: float = 8) -> torch.Tensor:
    """Per-example low-pass (or high-pass = x - low-pass) windowed-sinc filters, as julius's
    `lowpass_filter` / `highpass_filter` with `cutoff` in cycles per sample, by one batched
    FFT convolution (B, T) -> (B, T). Edges are padded by replication, as julius does."""
    batch, length = x.shape
    cutoff = cutoff.to(torch.float64)  # julius takes Python floats: the half sizes must floor alike
    halves = (zeros / cutoff / 2).floor().long()  # each example's own half size, as julius
    half = int(halves.max())
    t = torch.arange(-half, half + 1, device=x.device, dtype=torch.float64)  # (K,)
    inside = t.abs()[None] <= halves[:, None]
    n = (2 * halves + 1)[:, None].to(torch.float64)
    # Symmetric Hann window of each example's length, centred on 0 (julius: periodic=False).
    window = torch.where(inside, 0.5 + 0.5 * torch.cos(2 * math.pi * t[None] / (n - 1)), 0.0)
    arg = 2 * cutoff[:, None] * math.pi * t[None]
    sinc = torch.where(arg == 0, 1.0, torch.sin(arg) / torch.where(arg == 0, 1.0, arg))
    kernels = 2 * cutoff[:, None] * window * sinc
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(x.dtype)  # (B, K)
    padded = F.pad(x[:, None], (half, half), mode="replicate")[:, 0]  # (B, T + 2 half)
    size = padded.shape[1] + kernels.shape[1] - 1
    spectrum = torch.fft.rfft(padded, size) * torch.fft.rfft(kernels, size)
    low = torch.fft.irfft(spectrum, size)[:, 2 * half: 2 * half + length]
    return torch.where(highpass[:, None], x - low, low)


def delay(x: torch.Tensor, delay_ms: torch.Tensor, sample_rate: int, volume: float = 0.5) -> torch.Tensor:
    """(x + volume * x delayed by `delay_ms`, zero-filled) / 2, per example (torchaudio-augmentations' Delay)."""
    shift = (delay_ms * sample_rate / 1000).long()  # floor, as int(ms * sr / 1000)
    index = torch.arange(x.shape[1], device=x.device)[None] - shift[:, None]
    delayed = torch.where(index >= 0, x.gather(1, index.clamp(min=0)), 0.0)
    return (x + volume * delayed) / 2
