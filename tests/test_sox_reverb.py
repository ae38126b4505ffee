"""sox's reverb against the `sox` command itself: the per-sample reference, the batched FFT version
and the chain's `channels 1` downmix, over parameter draws, signals, sox's options and clipping."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from tunemir.pretrain.sox_reverb import clmr_reverb, feedback, filter_lengths, reference_reverb, reverb
from tunemir.testing import synthetic_signal

SR = 22050
VIEW = 59049


def _sox_binary() -> str:
    path = shutil.which("sox")
    if path is None:
        message = "the `sox` command is not installed (Debian: apt-get install sox): the reverb tests compare with it"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run them, never skip")
        pytest.skip(message)
    return path


def run_sox(tmp_path, x: np.ndarray, *effect: str, channels_out: int = 1) -> tuple[np.ndarray, str]:
    """`sox` on a mono float32 signal, raw 32-bit float in and out (no header, no dither, no
    quantisation), the output file `channels_out` wide (sox would otherwise downmix to the
    input's one channel by itself): returns (channels, T) and sox's warnings."""
    source, target = tmp_path / "in.f32", tmp_path / "out.f32"
    x.astype("<f4").tofile(source)
    args = [_sox_binary(), "-D", "-r", str(SR), "-c", "1", str(source), "-c", str(channels_out), str(target),
            *effect]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    out = np.fromfile(target, "<f4").astype(np.float64)
    return out.reshape(-1, channels_out).T, done.stderr


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    return float(10 * np.log10((reference ** 2).sum() / max(((estimate - reference) ** 2).sum(), 1e-300)))


def signals(length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Low-level test signals (peaks under 0.5, so neither sox nor we clip at these settings)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    burst = np.zeros(length)
    burst[length // 20: length // 20 + 2000] = 0.05 * rng.standard_normal(2000)
    clicks = np.zeros(length)
    clicks[:: 5003] = 0.2
    return {
        "noise burst": burst,
        "sine": 0.05 * np.sin(2 * np.pi * 440 * t),
        "click train": clicks,
        "music": 0.2 * synthetic_signal(length / SR, SR, seed=seed)[:length, 0],
    }


#: 20 draws of (reverberance, HF damping, room scale): the corners and edges, then random ones.
DRAWS = [(0, 0, 0), (99, 99, 99), (99, 0, 99), (0, 99, 0), (99, 0, 0), (0, 0, 99), (50, 50, 50)] + [
    tuple(int(v) for v in row) for row in np.random.default_rng(7).integers(0, 100, (13, 3))]


def test_coefficients_follow_reverb_c():
    # reverb.c: feedback 0.3 at reverberance 0 and 0.98 at 100; comb 0 is 1116 samples at 44.1 kHz
    # and room scale 100, 10 % of that at room scale 0, plus 12 samples of stereo spread.
    assert feedback(0) == pytest.approx(0.3, abs=1e-7) and feedback(100) == pytest.approx(0.98, abs=1e-7)
    combs, allpasses = filter_lengths(100, 44100, 0.0)
    assert [int(c) for c in combs] == [1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617]
    assert allpasses == [225, 341, 441, 556]
    combs, allpasses = filter_lengths(0, 44100, 1.0)
    assert int(combs[0]) == round(0.1 * 1128) and int(combs[1]) == round(0.1 * 1176) and allpasses[0] == 237


@pytest.mark.parametrize("options", [
    ("50", "50", "100"),  # sox's defaults spelled out, two channels out
    ("99", "0", "99"),
    ("0", "99", "0"),
    ("-w", "70", "20", "60"),  # wet only
    ("40", "60", "80", "0"),  # stereo depth 0: one channel
    ("40", "60", "80", "37", "20", "-6"),  # spread, 20 ms pre-delay, -6 dB wet gain
    ("90", "10", "30", "100", "0", "6"),
])
def test_reference_recursion_equals_sox(tmp_path, options):
    x = signals(6000)["noise burst"]
    wet_only = options[0] == "-w"
    numbers = [float(v) for v in options[wet_only:]]
    names = ("stereo_depth", "pre_delay_ms", "wet_gain_db")
    extra = dict(zip(names, numbers[3:]))
    expected, warnings = run_sox(tmp_path, x, "reverb", *options,
                                 channels_out=1 if extra.get("stereo_depth", 100) == 0 else 2)
    assert "clip" not in warnings
    ours = reference_reverb(x, *numbers[:3], SR, wet_only=wet_only, **extra)
    assert ours.shape == expected.shape
    assert snr_db(expected, ours) > 110


@pytest.mark.parametrize("options", [
    dict(), dict(stereo_depth=0.0), dict(stereo_depth=37.0, pre_delay_ms=20.0, wet_gain_db=-6.0),
    dict(wet_only=True, wet_gain_db=6.0),
])
def test_batched_fft_equals_the_reference_recursion(options):
    x = signals(5000, seed=1)
    rows = np.stack([x["music"], x["click train"], x["noise burst"]])
    params = [(99, 0, 99), (0, 99, 0), (63, 27, 8)]
    r, d, s = (torch.tensor(v) for v in zip(*params))
    batched = reverb(torch.tensor(rows), r, d, s, SR, **options).numpy()  # float64 in, float64 out
    for i, (reverberance, damping, room) in enumerate(params):
        expected = reference_reverb(rows[i], reverberance, damping, room, SR, **options)
        assert snr_db(expected, batched[i]) > 150
    batched32 = reverb(torch.tensor(rows, dtype=torch.float32), r, d, s, SR, **options)
    assert batched32.dtype == torch.float32 and snr_db(batched, batched32.double().numpy()) > 85


def test_rows_do_not_depend_on_the_rest_of_the_batch():
    x = torch.tensor(np.stack(list(signals(4000, seed=2).values())), dtype=torch.float32)
    r, d, s = torch.tensor([5, 99, 40, 71]), torch.tensor([99, 3, 50, 20]), torch.tensor([0, 99, 12, 64])
    together = clmr_reverb(x, r, d, s, SR)
    for i in range(4):
        alone = clmr_reverb(x[i:i + 1], r[i:i + 1], d[i:i + 1], s[i:i + 1], SR)
        assert snr_db(alone[0].numpy(), together[i].numpy()) > 120


@pytest.mark.slow
def test_chain_reverb_equals_sox_over_draws_and_signals(tmp_path):
    """0.2.4's chain, `reverb R D S channels 1`, on full views: 20 draws x 4 signals."""
    results = {}
    for name, x in signals(VIEW).items():
        x = x.astype(np.float32)
        r, d, s = (torch.tensor(v) for v in zip(*DRAWS))
        ours = clmr_reverb(torch.tensor(x).expand(len(DRAWS), -1), r, d, s, SR).numpy()
        for i, draw in enumerate(DRAWS):
            expected, warnings = run_sox(tmp_path, x, "reverb", *map(str, draw), "channels", "1")
            assert "clip" not in warnings, (name, draw, warnings)
            results[name, draw] = snr_db(expected[0], ours[i])
    values = np.array(list(results.values()))
    worst = min(results, key=results.get)
    print(f"SNR against sox over {len(values)} views: min {values.min():.1f} dB ({worst}), "
          f"median {np.median(values):.1f} dB")
    assert values.min() > 95, worst
    assert np.median(values) > 105


def test_loud_input_clips_as_sox_does(tmp_path):
    """sox clips its input and each reverb channel to [-1, 1] before `channels 1` averages them."""
    rng = np.random.default_rng(3)
    x = np.zeros(8000, np.float32)
    x[500:4500] = 0.45 * rng.standard_normal(4000)
    x[600] = 1.5  # beyond full scale on the way in
    expected, warnings = run_sox(tmp_path, x, "reverb", "95", "10", "90", "channels", "1")
    assert "reverb clipped" in warnings and "input clipped" in warnings
    ours = clmr_reverb(torch.tensor(x)[None], torch.tensor([95]), torch.tensor([10]), torch.tensor([90]), SR)
    assert ours.abs().max() <= 1
    assert snr_db(expected[0], ours[0].numpy()) > 90
    plateau = np.abs(expected[0]) > 0.999  # both channels clipped: their mean sits at full scale
    assert plateau.sum() > 10 and np.abs(ours[0].numpy()[plateau]).min() > 0.999


@pytest.mark.gpu
def test_cuda_equals_cpu():
    x = torch.tensor(np.stack(list(signals(VIEW, seed=4).values())), dtype=torch.float32)
    r, d, s = torch.tensor([0, 99, 37, 80]), torch.tensor([99, 0, 50, 12]), torch.tensor([0, 99, 64, 5])
    cpu = clmr_reverb(x, r, d, s, SR)
    cuda = clmr_reverb(x.cuda(), r.cuda(), d.cuda(), s.cuda(), SR).cpu()
    for i in range(4):
        assert snr_db(cpu[i].numpy(), cuda[i].numpy()) > 95


@pytest.mark.parametrize("bad, message", [
    (dict(reverberance=torch.tensor([101])), "reverberance"),
    (dict(room_scale=torch.tensor([-1])), "room_scale"),
    (dict(hf_damping=torch.tensor([1, 2])), "hf_damping"),
    (dict(stereo_depth=120.0), "stereo_depth"),
    (dict(pre_delay_ms=600.0), "pre_delay_ms"),
    (dict(wet_gain_db=-11.0), "wet_gain_db"),
])
def test_out_of_range_parameters_are_refused_as_sox_does(bad, message):
    args = dict(reverberance=torch.tensor([50]), hf_damping=torch.tensor([50]), room_scale=torch.tensor([50]))
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        reverb(torch.zeros(1, 100), sample_rate=SR, **args)
