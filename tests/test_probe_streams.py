"""Counter-based probe streams: the tensor hash against its Python reference, and what each draw depends on."""

import math

import numpy as np
import pytest
import torch

from tunemir.probe.streams import MASK32, Streams, config_key, mix32, mix32_reference


def test_the_tensor_hash_is_the_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, MASK32] + rng.integers(0, 1 << 32, 5000).tolist()
    signed = torch.tensor([v - (1 << 32) if v >= 1 << 31 else v for v in values], dtype=torch.int32)
    for n in (1, 3, 17, len(values)):  # short tensors take the scalar path, long ones the vector path
        got = (mix32(signed[:n]).to(torch.int64) & MASK32).tolist()
        assert got == [mix32_reference(v) for v in values[:n]]


def test_a_row_draws_the_same_words_whatever_rows_stand_beside_it():
    keys = [config_key(f"uid{i}") for i in range(9)]
    alone = Streams(keys[4:5], "cpu")
    stacked = Streams(keys, "cpu")
    subset = stacked.select(torch.tensor([False, True, False, False, True, False, False, False, True]))
    for step, purpose, count in ((0, 0, 10), (7, 1, 300_001), (123_456, 20, 64)):
        mine = alone.words(step, purpose, count)
        assert torch.equal(stacked.words(step, purpose, count)[4:5], mine)
        assert torch.equal(subset.words(step, purpose, count)[1:2], mine)
        assert torch.equal(stacked.words(step, purpose, count, rows=slice(3, 6))[1:2], mine)
    assert torch.equal(alone.batches(3, 18706, 256), stacked.batches(3, 18706, 256)[4:5])
    assert torch.equal(alone.batches(3, 443, 256), stacked.batches(3, 443, 256)[4:5])


def test_draws_differ_between_keys_steps_purposes_and_salts():
    one = Streams([config_key("a")], "cpu")
    draws = [one.words(0, 0, 1000), one.words(1, 0, 1000), one.words(0, 1, 1000),
             Streams([config_key("b")], "cpu").words(0, 0, 1000), Streams([config_key("a", 1)], "cpu").words(0, 0, 1000)]
    for i in range(len(draws)):
        for j in range(i):
            assert (draws[i] == draws[j]).float().mean() < 0.01


def test_noise_is_uniform():
    streams = Streams([config_key(f"u{i}") for i in range(4)], "cpu")
    noise = streams.uniform_bytes(5, 0, (4, 64, 513))  # not a multiple of 4 bytes per row
    assert noise.shape == (4, 64, 513) and noise.dtype == torch.uint8
    counts = torch.bincount(noise.flatten().long(), minlength=256).double()
    expected = noise.numel() / 256
    assert ((counts - expected).abs() < 6 * math.sqrt(expected)).all()
    floats = streams.uniform(5, 1, (4, 1000, 7))
    assert 0 <= float(floats.min()) and float(floats.max()) < 1
    assert float(floats.mean()) == pytest.approx(0.5, abs=0.01)
    # Adjacent elements and rows are uncorrelated.
    flat = floats.flatten()
    assert abs(float(torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(floats.reshape(4, -1))[0, 1])) < 0.02


@pytest.mark.gpu
def test_cuda_draws_equal_cpu_draws():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    keys = [config_key(f"uid{i}") for i in range(5)]
    cpu, gpu = Streams(keys, "cpu"), Streams(keys, "cuda")
    assert torch.equal(cpu.words(9, 2, 100_000), gpu.words(9, 2, 100_000).cpu())
    assert torch.equal(cpu.batches(9, 18706, 256).sort(1).values, gpu.batches(9, 18706, 256).cpu().sort(1).values)
    assert torch.equal(cpu.batches(9, 443, 256).sort(1).values, gpu.batches(9, 443, 256).cpu().sort(1).values)
