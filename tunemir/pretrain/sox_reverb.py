"""sox's `reverb` effect (SoX 14.4, src/reverb.c) exactly: a per-sample reference and a batched version.

torchaudio-augmentations 0.2.4's `Reverb` runs the sox chain `reverb R D S` then `channels 1`
through `torchaudio.sox_effects` on each (1, T) view, R (reverberance), D (HF damping) and S
(room scale) each from `torch.randint(0, 100)`; sox's defaults fill the rest (stereo depth 100,
pre-delay 0 ms, wet gain 0 dB). The effect is freeverb (Jezar at Dreampoint) as SoX implements it:
per output channel, 8 parallel comb filters with a one-pole low-pass in their feedback loop, then 4
series "all-pass" filters; a mono input with stereo depth > 0 gives two channels whose filter
lengths differ by a stereo spread, and `channels 1` averages them.

For fixed parameters the wet path is linear and time-invariant, so `reverb` evaluates its
transfer function in closed form on an FFT grid and convolves (see `reverb` for the exactness
argument); `reference_reverb` is the plain recursion, sample by sample, for tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Filter lengths in samples at 44.1 kHz (reverb.c lines 52-55).
COMB_LENGTHS = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)
ALLPASS_LENGTHS = (225, 341, 441, 556)
STEREO_ADJUST = 12
#: Weight e^(-lambda n) with e^(-lambda N) = this, per compute precision (see `reverb`).
ALIASING = {torch.float32: 3e-5, torch.float64: 1e-10}


def _f32(value):
    """Round to float32 as reverb.c stores its coefficients (`float feedback, hf_damping, gain`)."""
    return np.float32(value).astype(np.float64) if np.ndim(value) else float(np.float32(value))


def feedback(reverberance):
    """Comb feedback, 0.3 at reverberance 0 to 0.98 at 100 (reverb.c lines 133-137)."""
    a = -1 / math.log(1 - 0.3)
    b = 100 / (math.log(1 - 0.98) * a + 1)
    return _f32(1 - np.exp((np.asarray(reverberance, np.float64) - b) / (a * b)))


def damping(hf_damping):
    """The one-pole coefficient in each comb's loop, 0.2 to 0.5 (reverb.c line 138)."""
    return _f32(np.asarray(hf_damping, np.float64) / 100 * 0.3 + 0.2)


def wet_gain(wet_gain_db: float) -> float:
    """The wet path's output gain: 0.015 at 0 dB (reverb.c line 139)."""
    return _f32(10 ** (wet_gain_db / 20) * 0.015)


def channel_offsets(stereo_depth: float) -> list[float]:
    """The stereo offset of each output channel's filter array: one array when the depth is 0,
    else two, the second spread by depth / 100 (reverb.c lines 132, 142-143)."""
    depth = stereo_depth / 100
    return [i * depth for i in range(math.ceil(depth) + 1)]


def filter_lengths(room_scale, sample_rate: int, offset: float) -> tuple[list, list]:
    """Comb and all-pass delays in samples for one channel; the offset's sign alternates from
    filter to filter, all-passes continuing the combs' sequence (reverb.c lines 62-80)."""
    scale = np.asarray(room_scale, np.float64) / 100 * 0.9 + 0.1
    r = sample_rate * (1 / 44100.0)
    combs, allpasses = [], []
    for length in COMB_LENGTHS:
        combs.append((scale * r * (length + STEREO_ADJUST * offset) + 0.5).astype(np.int64))
        offset = -offset
    for length in ALLPASS_LENGTHS:
        allpasses.append(int(r * (length + STEREO_ADJUST * offset) + 0.5))
        offset = -offset
    return combs, allpasses


def pre_delay_samples(pre_delay_ms: float, sample_rate: int) -> int:
    """The wet input's delay (reverb.c line 130)."""
    return int(pre_delay_ms / 1000 * sample_rate + 0.5)


def _check(stereo_depth: float, pre_delay_ms: float, wet_gain_db: float) -> None:
    # sox's own ranges (reverb.c lines 190-195); sox refuses anything outside them.
    for name, value, low, high in (("stereo_depth", stereo_depth, 0, 100), ("pre_delay_ms", pre_delay_ms, 0, 500),
                                   ("wet_gain_db", wet_gain_db, -10, 10)):
        if not low <= value <= high:
            raise ValueError(f"reverb {name}={value}: sox accepts {low} to {high}")


def reference_reverb(x: np.ndarray, reverberance: float, hf_damping: float, room_scale: float,
                     sample_rate: int, stereo_depth: float = 100.0, pre_delay_ms: float = 0.0,
                     wet_gain_db: float = 0.0, wet_only: bool = False) -> np.ndarray:
    """sox `reverb [-w] R D S depth pre-delay wet-gain` on a mono signal (T,), with sox's defaults
    for the last three (reverb.c lines 183-184, 266-273), sample by sample as
    reverb.c's flow, filter_array_process, comb_process and allpass_process do, in float64.
    Returns (channels, T): 2 channels when stereo_depth > 0, each clipped to [-1, 1] as sox's
    float-to-sample conversion does. Slow (pure Python): for tests on short signals."""
    _check(stereo_depth, pre_delay_ms, wet_gain_db)
    x = np.clip(np.asarray(x, np.float64), -1, 1)  # the float-to-sample conversion on the way in
    fb, damp, gain = float(feedback(reverberance)), float(damping(hf_damping)), wet_gain(wet_gain_db)
    delay = pre_delay_samples(pre_delay_ms, sample_rate)
    wet_in = np.concatenate([np.zeros(delay), x])[: len(x)]  # the input fifo, primed with `delay` zeros
    out = []
    for offset in channel_offsets(stereo_depth):
        comb_sizes, allpass_sizes = filter_lengths(room_scale, sample_rate, offset)
        combs = [[np.zeros(int(n)), 0, 0.0] for n in comb_sizes]  # buffer, pointer, store
        allpasses = [[np.zeros(n), 0] for n in allpass_sizes]
        wet = np.empty(len(x))
        for t, sample in enumerate(wet_in):
            acc = 0.0
            for comb in reversed(combs):  # sox runs them from the last to the first
                buffer, ptr, store = comb
                output = buffer[ptr]
                store = output + (store - output) * damp
                buffer[ptr] = sample + store * fb
                comb[1], comb[2] = (ptr - 1) % len(buffer), store
                acc += output
            for allpass in reversed(allpasses):
                buffer, ptr = allpass
                output = buffer[ptr]
                buffer[ptr] = acc + output * 0.5
                allpass[1] = (ptr - 1) % len(buffer)
                acc = output - acc
            wet[t] = acc * gain
        out.append(np.clip((not wet_only) * x + wet, -1, 1))
    return np.stack(out)


def reverb(x: torch.Tensor, reverberance: torch.Tensor, hf_damping: torch.Tensor, room_scale: torch.Tensor,
           sample_rate: int, stereo_depth: float = 100.0, pre_delay_ms: float = 0.0, wet_gain_db: float = 0.0,
           wet_only: bool = False) -> torch.Tensor:
    """sox `reverb` per example, batched: x (B, T) and per-example parameters (B,) -> (B, C, T),
    C = 2 when stereo_depth > 0 (sox's mono-to-stereo reverb), clipped to [-1, 1] as sox does.

    Each channel's wet path is gain * sum(8 combs) * prod(4 all-passes), with, for a delay of M
    samples (z = delay of one sample):
      comb     z^M (1 - d z) / (1 - d z - g (1 - d) z^M)   (feedback g, damping d)
      all-pass (1.5 z^M - 1) / (1 - 0.5 z^M)
    These are evaluated at z = e^(-lambda) e^(-i w) on an N = 2T point grid and multiplied with
    the FFT of x e^(-lambda n): the product is the transform of (h * x) e^(-lambda n), time-aliased
    with period N, and multiplying its inverse by e^(lambda n) gives (h * x)[n] plus aliases
    (h * x)[n + mN] weighted by e^(-lambda m N) = ALIASING[dtype]^m. So the output is the exact
    infinite-impulse-response result up to that factor and rounding (amplified at most by
    e^(lambda T) = ALIASING^-1/2); the tests measure it against the sox command.
    """
    _check(stereo_depth, pre_delay_ms, wet_gain_db)
    batch, length = x.shape
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    size = 2 * length
    bins = size // 2 + 1
    lam = math.log(1 / ALIASING[dtype]) / size
    device = x.device
    x = x.to(dtype).clamp(-1, 1)
    n = torch.arange(length, device=device, dtype=dtype)
    spectrum = torch.fft.rfft(x * torch.exp(-lam * n), size)  # (B, F)
    grid = _Grid(size, bins, lam, device, dtype)

    def as_tensor(values):
        return torch.as_tensor(np.asarray(values), device=device)

    params = [p.detach().cpu().numpy() for p in (reverberance, hf_damping, room_scale)]
    for name, values in zip(("reverberance", "hf_damping", "room_scale"), params):
        if len(values) != batch or not ((values >= 0) & (values <= 100)).all():
            raise ValueError(f"reverb {name}: need {batch} values from 0 to 100 (sox's range), got {values}")
    g = as_tensor(feedback(params[0])).to(dtype)[:, None]
    d = as_tensor(damping(params[1])).to(dtype)[:, None]
    # A comb's response z^M / (1 - q z^M) = 1 / (z^-M - q), q = g (1 - d) / (1 - d z), shared by a
    # row's combs; an all-pass's (1.5 z^M - 1) / (1 - 0.5 z^M) = 1 / (z^-M - 0.5) - 1, the same for
    # every row (its lengths do not scale with the room).
    one = torch.ones(batch, dtype=torch.long, device=device)
    q = g * (1 - d) / (1 - d * grid.delay(one))
    delay = pre_delay_samples(pre_delay_ms, sample_rate)
    wet_factor = wet_gain(wet_gain_db) * (grid.delay(one * delay) if delay else 1)
    out = []
    for offset in channel_offsets(stereo_depth):
        comb_sizes, allpass_sizes = filter_lengths(params[2], sample_rate, offset)
        response = torch.zeros_like(spectrum)
        for m in comb_sizes:
            response += (grid.delay(-as_tensor(m)) - q).reciprocal_()
        for m in allpass_sizes:
            response *= (grid.delay(-one[:1] * m) - 0.5).reciprocal_() - 1
        wet = torch.fft.irfft(spectrum * response * wet_factor, size)[:, :length] * torch.exp(lam * n)
        out.append(((not wet_only) * x + wet).clamp(-1, 1))
    return torch.stack(out, dim=1)


def clmr_reverb(x: torch.Tensor, reverberance: torch.Tensor, hf_damping: torch.Tensor, room_scale: torch.Tensor,
                sample_rate: int) -> torch.Tensor:
    """torchaudio-augmentations 0.2.4's Reverb: sox `reverb R D S` then `channels 1` (the mean
    of the two channels), (B, T) -> (B, T) in x's dtype."""
    return reverb(x, reverberance, hf_damping, room_scale, sample_rate).mean(dim=1).to(x.dtype)


class _Grid:
    """z^M = e^(-lambda M) e^(-2 pi i k M / N) on the rfft bins k, for per-row delays M (B,)
    (negative M: advances, z^-|M|)."""

    STRIDE = 256  # z^M[k] = A[k // STRIDE] * B[k % STRIDE]: two small tables and one product per bin

    def __init__(self, size: int, bins: int, lam: float, device, dtype):
        self.size, self.bins, self.lam = size, bins, lam
        angle = torch.arange(size, device=device, dtype=torch.float64) * (-2 * math.pi / size)
        self.roots = torch.polar(torch.ones_like(angle), angle).to(
            torch.complex128 if dtype == torch.float64 else torch.complex64)  # e^(-2 pi i j / N)
        self.low = torch.arange(self.STRIDE, device=device)
        self.high = torch.arange(-(-bins // self.STRIDE), device=device) * self.STRIDE
        self.dtype = dtype

    def delay(self, m: torch.Tensor) -> torch.Tensor:
        m = m.to(torch.long)[:, None]
        decay = torch.exp(-self.lam * m.to(torch.float64)).to(self.dtype)
        low = torch.take(self.roots, (self.low[None] * m) % self.size) * decay  # (B, STRIDE)
        high = torch.take(self.roots, (self.high[None] * m) % self.size)  # (B, bins / STRIDE)
        return (high[:, :, None] * low[:, None, :]).reshape(len(m), -1)[:, : self.bins]
