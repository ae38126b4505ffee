"""Counter-based random streams for the probe grid: every draw a function of (key, step, purpose, index).

Each config owns a 64-bit key (sha1 of its uid and an optional salt), and every random number it
uses is a hash of that key with the training step, what the number is for (a dropout layer, a
minibatch draw) and its position. So a config draws the same minibatches and dropout masks whether
it trains alone, in a full grid, in a subset or after a resume, on a CPU or a GPU: nothing depends
on the other configs stacked with it, and nothing on a generator's state.

The hash is 32-bit integer mixing (`x ^= x >> 16; x *= 0x21f0aaad; x ^= x >> 15; x *= 0x735a2d97;
x ^= x >> 15`, a low-bias constant pair found by C. Wellons' hash-prospector), computed with
plain int32 tensor ops: multiplications wrap modulo 2**32 and the shifts are masked to be
logical. `mix32_reference` is the same function on Python ints, and the tests hold the tensor
version to it bit for bit. Each draw hashes twice: the per-row (key, step, purpose) seed once,
then seed ^ mix(index) per element, with mix(index) cached, so streams of different rows or
steps are not shifted copies of one another.
"""

from __future__ import annotations

import functools
import hashlib

import torch

MASK32 = 0xFFFFFFFF
_M1, _M2 = 0x21F0AAAD, 0x735A2D97
#: Purposes 0..BATCH-1 are dropout layers; BATCH + k is attempt k of a minibatch draw.
BATCH = 16
MAX_ATTEMPTS = 4096
#: Words hashed per pass on a CPU: ~1 MB, so the hash's passes run in cache (3x faster than
#: hashing a 7 MB dropout draw whole, and 3x faster than torch's own random_ on it).
CPU_CHUNK_WORDS = 1 << 18


def mix32_reference(x: int) -> int:
    """The mixing function on a Python int (the tensor version's reference)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _M1) & MASK32
    x ^= x >> 15
    x = (x * _M2) & MASK32
    return x ^ (x >> 15)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """`mix32_reference` elementwise on an int32 tensor (bit patterns as unsigned 32-bit words)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 15) & 0x1FFFF)


def _mix32_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """`mix32` in place, with `scratch` (same shape) for the shifted copies: no allocation."""
    for shift, mask, factor in ((16, 0xFFFF, _M1), (15, 0x1FFFF, _M2), (15, 0x1FFFF, None)):
        torch.bitwise_right_shift(x, shift, out=scratch)
        scratch &= mask
        x ^= scratch
        if factor is not None:
            x *= factor
    return x


def _signed(word: int) -> int:
    word &= MASK32
    return word - (1 << 32) if word >= 1 << 31 else word


def config_key(uid: str, salt: int | None = None) -> tuple[int, int]:
    """A config's two 32-bit key words: sha1 of its uid (and `salt`, when given)."""
    text = uid if salt is None else f"{uid}:{salt}"
    digest = hashlib.sha1(text.encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


@functools.lru_cache(maxsize=32)
def _mixed_counters(count: int, device: torch.device) -> torch.Tensor:
    return mix32(torch.arange(count, dtype=torch.int32, device=device))


class Streams:
    """The random streams of a stack of configs: row r of every draw depends on `keys[r]` only."""

    def __init__(self, keys: list[tuple[int, int]], device):
        self.device = torch.device(device)
        self.keys = torch.tensor([[_signed(a), _signed(b)] for a, b in keys], dtype=torch.int32,
                                 device=self.device).view(-1, 2)

    def select(self, keep: torch.Tensor) -> Streams:
        """The streams of the rows `keep` (a bool mask or indices) selects."""
        chosen = Streams([], self.device)
        chosen.keys = self.keys[keep]
        return chosen

    def words(self, step: int, purpose: int, count: int, rows=slice(None)) -> torch.Tensor:
        """(rows, count) int32 words: element j of row r is mix(seed(r, step, purpose) ^ mix(j))."""
        tag = _signed(mix32_reference(mix32_reference(step) ^ purpose))
        keys = self.keys[rows]
        seed = mix32(keys[:, :1] ^ mix32(keys[:, 1:] ^ tag))
        counters = _mixed_counters(count, self.device)
        out = torch.empty(seed.shape[0], count, dtype=torch.int32, device=self.device)
        per = max(1, CPU_CHUNK_WORDS // count) if self.device.type == "cpu" else max(1, seed.shape[0])
        scratch = torch.empty(min(per, seed.shape[0]), count, dtype=torch.int32, device=self.device)
        for start in range(0, seed.shape[0], per):
            block = out[start:start + per]
            torch.bitwise_xor(seed[start:start + per], counters, out=block)
            _mix32_(block, scratch[:block.shape[0]])
        return out

    def uniform_bytes(self, step: int, purpose: int, shape: tuple[int, ...], rows=slice(None)) -> torch.Tensor:
        """uint8 noise of `shape` (rows first), uniform on 0..255: four bytes of each word."""
        per_row = 1
        for n in shape[1:]:
            per_row *= n
        words = self.words(step, purpose, (per_row + 3) // 4, rows)
        noise = words.view(torch.uint8)  # little-endian bytes, the same on CPUs and GPUs
        if noise.shape[1] != per_row:
            noise = noise[:, :per_row]
        return noise.reshape(shape)

    def uniform(self, step: int, purpose: int, shape: tuple[int, ...], rows=slice(None)) -> torch.Tensor:
        """float32 noise of `shape` (rows first), uniform on [0, 1) in steps of 2**-24."""
        per_row = 1
        for n in shape[1:]:
            per_row *= n
        words = self.words(step, purpose, per_row, rows)
        return ((words >> 8) & 0xFFFFFF).to(torch.float32).mul_(2.0 ** -24).reshape(shape)

    def batches(self, step: int, population: int, size: int) -> torch.Tensor:
        """(rows, size) minibatch indices, each row drawn uniformly without replacement.

        Like `random.sample(range(population), size)` per row. A small population ranks one
        key per index (index in the low bits, so keys never tie); a large one draws `size`
        indices with replacement and redraws repeats with the next attempt's words until
        none are left, in O(size) per row.
        """
        rows = self.keys.shape[0]
        if size >= population:
            return torch.arange(population, device=self.device).expand(rows, population)
        if population <= 8 * size:
            keys = self.words(step, BATCH, population).to(torch.int64) & MASK32
            ranked = ((keys >> 1) << 31) | torch.arange(population, device=self.device)
            return ranked.topk(size, dim=1, sorted=False).values & ((1 << 31) - 1)
        idx = self._indices(step, 0, population, size)
        for attempt in range(1, MAX_ATTEMPTS):
            idx = idx.sort(1).values
            repeat = torch.zeros_like(idx, dtype=torch.bool)
            repeat[:, 1:] = idx[:, 1:] == idx[:, :-1]
            if not bool(repeat.any()):
                return idx
            idx = torch.where(repeat, self._indices(step, attempt, population, size), idx)
        raise RuntimeError(f"minibatch draw of {size} of {population} did not finish in {MAX_ATTEMPTS} attempts")

    def _indices(self, step: int, attempt: int, population: int, size: int) -> torch.Tensor:
        words = self.words(step, BATCH + attempt, size).to(torch.int64) & MASK32
        return (words * population) >> 32
