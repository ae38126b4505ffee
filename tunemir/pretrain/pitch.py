"""Batched pitch shift by cents with per-example shifts, on the tensor's device.

torchaudio-augmentations 0.2.4 runs sox `pitch C` then `rate SR`: a WSOLA time stretch by
r = 2^(C/1200) followed by resampling by 1/r, so the duration is kept and every frequency is
multiplied by r. This module does the same two steps batched: a phase-vocoder time stretch by
r (librosa's `pitch_shift` method: STFT 2048 / hop 512, magnitudes interpolated between
frames, phases advanced by each bin's measured frequency, plus identity phase locking), then
windowed-sinc resampling on a per-example grid, low-passed at 95 % of the Nyquist frequency
(as sox's `rate`), times 1/r when shifting up. Nothing in it is random, and each row's result depends on that row alone.
The phase vocoder keeps steady partials' frequencies exactly (the tests measure a tone to a
small fraction of a cent) but smears transients over a frame, where WSOLA instead repeats or
drops whole waveform segments; tests/test_pitch.py measures the spectral distance between the two.
"""

from __future__ import annotations

import math

import torch

N_FFT = 2048
HOP = 512
ZEROS = 12  # zero crossings of the resampling kernel on each side
ROLLOFF = 0.95  # the resampler's cutoff over the Nyquist frequency: sox's `rate` -h (its default) passes 95 %


def cents_to_ratio(cents: torch.Tensor) -> torch.Tensor:
    """Frequency ratio 2^(cents / 1200), in float64."""
    return torch.exp2(cents.to(torch.float64) / 1200)


def pitch_shift(x: torch.Tensor, cents: torch.Tensor) -> torch.Tensor:
    """Shift each row of `x` (B, T) by its own `cents` (B,); the output is (B, T), the same length.

    A row shifted by 0 cents is returned unchanged, as sox returns it (its `tempo` and `rate`
    effects drop out at factor 1), and so is a row whose result is not finite, as 0.2.4 does.
    """
    if x.ndim != 2 or cents.shape != (x.shape[0],):
        raise ValueError(f"pitch_shift takes x (B, T) and cents (B,), not {tuple(x.shape)} and {tuple(cents.shape)}")
    if x.shape[0] == 0:
        return x.clone()
    ratio = cents_to_ratio(cents.to(x.device))
    stretched = time_stretch(x, ratio)
    out = resample(stretched, ratio, x.shape[1])
    keep = ~torch.isfinite(out).all(dim=1, keepdim=True) | (cents.to(x.device) == 0)[:, None]
    return torch.where(keep, x, out)


def time_stretch(x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Phase-vocoder stretch of each row by its `ratio` (B,): row b lasts `ratio[b]` times as
    long, its partials at the same frequencies. Rows are returned zero-padded to a common length."""
    batch, length = x.shape
    window = torch.hann_window(N_FFT, device=x.device, dtype=x.dtype)
    # Pad the end so that the frames cover every sample the resampler reads.
    spec = torch.stft(torch.nn.functional.pad(x, (0, N_FFT)), N_FFT, HOP, window=window,
                      center=True, return_complex=True)  # (B, F, N)
    frames = spec.shape[-1]
    out_frames = int(math.ceil((frames - 1) * float(ratio.max()))) + 1
    # Output frame m reads input frame position m / ratio (per example), clamped to the last pair.
    pos = torch.arange(out_frames, device=x.device, dtype=torch.float64)[None] / ratio[:, None]  # (B, M)
    pos = pos.clamp(max=frames - 1)
    left = pos.floor().long().clamp(max=frames - 2)
    frac = (pos - left).to(x.dtype)[:, None]  # (B, 1, M)
    bins = spec.shape[1]

    magnitudes, angles = spec.abs(), spec.angle()

    def take(values, index):
        return values.gather(2, index[:, None].expand(batch, bins, out_frames))  # (B, F, M)

    magnitude = (1 - frac) * take(magnitudes, left) + frac * take(magnitudes, left + 1)
    # Each bin's phase advance per hop: its expected advance plus the measured deviation from it.
    expected = (2 * math.pi * HOP / N_FFT) * torch.arange(bins, device=x.device, dtype=x.dtype)[None, :, None]
    step = angles[:, :, 1:] - angles[:, :, :-1] - expected  # (B, F, N - 1)
    step = step - 2 * math.pi * torch.round(step / (2 * math.pi)) + expected
    advance = take(step, left)
    phase = torch.cat([angles[:, :, :1], advance[:, :, :-1]], dim=2).cumsum(dim=2)
    # Identity phase locking (Laroche & Dolson 1999): each bin keeps, relative to the magnitude
    # peak of its region, the phase offset of the nearest input frame, so the bins of one partial
    # stay coherent instead of drifting apart (which halves a tone's level in the overlap-add
    # as soon as an input frame pair is read twice, i.e. whenever the shift is upward).
    nearest = take(angles, torch.where(frac[:, 0] < 0.5, left, left + 1))
    peak = _nearest_peak(magnitude)
    phase = phase.gather(1, peak) + nearest - nearest.gather(1, peak)
    stretched = torch.polar(magnitude, phase)
    return torch.istft(stretched, N_FFT, HOP, window=window, center=True,
                       length=(out_frames - 1) * HOP)  # (B, ~T * ratio)


def _nearest_peak(magnitude: torch.Tensor, climbs: int = 3) -> torch.Tensor:
    """For each bin of `magnitude` (B, F, M), the peak it climbs to along F: each step moves to
    the strongest of a bin and its two neighbours; `climbs` pointer doublings take 2^climbs steps
    (a partial's main lobe spans +-2 bins of a Hann window; bins further from any peak stop on
    the way, which only matters in valleys)."""
    batch, bins, frames = magnitude.shape
    rows = magnitude.transpose(1, 2).reshape(batch * frames, 1, bins)
    _, peak = torch.nn.functional.max_pool1d(rows, 3, 1, 1, return_indices=True)
    peak = peak[:, 0]  # (B M, F)
    for _ in range(climbs):
        peak = peak.gather(1, peak)
    return peak.view(batch, frames, bins).transpose(1, 2)


def resample(x: torch.Tensor, ratio: torch.Tensor, length: int) -> torch.Tensor:
    """Row b of `x` (B, S) read at positions n * ratio[b], n < `length`, by windowed-sinc
    interpolation (a Hann-windowed sinc over ZEROS of its zero crossings each side), low-passed
    at ROLLOFF x min(1, 1 / ratio) of the Nyquist frequency so that shifting up does not alias."""
    batch, size = x.shape
    cutoff = ROLLOFF * (1 / ratio).clamp(max=1)  # (B,) in units of the input's Nyquist frequency
    half = int(math.ceil(ZEROS / float(cutoff.min())))  # taps each side, for the lowest cutoff
    position = torch.arange(length, device=x.device, dtype=torch.float64)[None] * ratio[:, None]  # (B, L)
    base = position.floor()
    frac = (position - base).to(x.dtype)
    base = base.long()
    # sin and cos of the distance to tap k follow from those of `frac` by the angle-sum
    # identities, so the loop over taps needs no transcendental function of its own.
    cutoff = cutoff.to(torch.float64)[:, None]  # (B, 1)
    sinc_arg, window_arg = math.pi * cutoff, math.pi * cutoff / ZEROS  # per unit distance
    sin_f, cos_f = torch.sin(sinc_arg.to(x.dtype) * frac), torch.cos(sinc_arg.to(x.dtype) * frac)
    sin_w, cos_w = torch.sin(window_arg.to(x.dtype) * frac), torch.cos(window_arg.to(x.dtype) * frac)
    padded = torch.nn.functional.pad(x, (half, half + 1))
    out = torch.zeros(batch, length, device=x.device, dtype=x.dtype)
    for k in range(-half + 1, half + 1):
        t = frac - k  # distance from tap k, in input samples
        sin_t = sin_f * torch.cos(k * sinc_arg).to(x.dtype) - cos_f * torch.sin(k * sinc_arg).to(x.dtype)
        window = 0.5 + 0.5 * (cos_w * torch.cos(k * window_arg).to(x.dtype)
                              + sin_w * torch.sin(k * window_arg).to(x.dtype))
        # cutoff * sinc(cutoff * t) * Hann window, zero beyond ZEROS crossings. Only tap 0 can
        # sit at t = 0 (frac is in [0, 1)), and only taps past ZEROS can reach beyond the
        # window (|cutoff * t| <= ZEROS otherwise, where the window is >= 0).
        if k == 0:
            weight = torch.where(t == 0, cutoff.to(x.dtype), sin_t / (math.pi * torch.where(t == 0, 1.0, t)))
        else:
            weight = sin_t / (math.pi * t)
        weight = weight * window
        if not -ZEROS < k <= ZEROS:
            weight = torch.where((cutoff.to(x.dtype) * t).abs() < ZEROS, weight, 0.0)
        out += weight * padded.gather(1, (base + k + half).clamp(0, size + 2 * half))
    return out
