"""TUNe and TUNe+ (Vélez Vásquez & Burgoyne, "Tailed U-Net for Music Representation", ISMIR 2022)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tunemir.models.base import Encoder
from tunemir.models.configs import DEPTH, TAIL, TuneConfig


class ConvBlock(nn.Module):
    """Conv1d(k=3, p=1) + BatchNorm + ReLU under the attribute `layers`, as TUNe names it."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU())
        nn.init.kaiming_uniform_(self.layers[0].weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Upsample3(nn.ConvTranspose1d):
    """ConvTranspose1d(k=3, stride=3), which also runs on InferenceEncoder's channels-last
    `(B, C, 1, T)` tensors.

    With kernel == stride the output windows do not overlap: output step 3t+k is
    weight[:, :, k]^T x[:, :, t] + bias, one matrix product over the channels-last layout.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, stride=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return super().forward(x)  # (B, C_out, 3T)
        batch, _, _, steps = x.shape  # (B, C_in, 1, T), channels-last
        weight = self.weight.permute(0, 2, 1).reshape(self.in_channels, -1)  # (C_in, 3 * C_out)
        y = (x.permute(0, 2, 3, 1) @ weight).view(batch, 1, 3 * steps, self.out_channels)
        return y.permute(0, 3, 1, 2) + self.bias.view(-1, 1, 1)  # (B, C_out, 1, 3T), channels-last


class Tune(Encoder):
    """Tailed U-Net ("TUNe Tail+5", class `Tune5Tail` upstream) and, with `plus`, TUNe+
    (`TunePlus`). A 5-level 1-D U-Net at full resolution is followed by a tail of nine pooled
    conv blocks that reduces a 3**10-sample frame to three 512-d steps.

    Blocks in computation order are c1..c18 = conv1..conv5 (contracting), conv6..conv9
    (expanding, each after `transposedConvN` and a skip concatenation), convDown1..convDown9
    (tail). Layer k taps c(18 - k), which reproduces TUNe's `eval_layer` numbering 0..17.
    Module names match the published checkpoints, so they load strictly.
    """

    def __init__(self, config: TuneConfig = TuneConfig()):
        super().__init__()
        self.config = config
        self.pool = nn.MaxPool1d(3, stride=3)
        widths = [config.channels * 2**i for i in range(DEPTH)]  # 11, 22, 44, 88, 176

        for level, c_out in enumerate(widths, start=1):
            self.add_module(f"conv{level}", ConvBlock(widths[level - 2] if level > 1 else 1, c_out))
        # Expanding path: conv6 mirrors conv4, ..., conv9 mirrors conv1.
        for level in range(DEPTH + 1, 2 * DEPTH):
            c_in, c_out = widths[2 * DEPTH - level], widths[2 * DEPTH - level - 1]
            self.add_module(f"transposedConv{level}", Upsample3(c_in, c_out))
            self.add_module(f"conv{level}", ConvBlock(2 * c_out, c_out))

        tail_widths = widths[1:] + [32 * config.channels] * (TAIL - DEPTH) + [config.out_channels]
        c_in = widths[0]
        for index, c_out in enumerate(tail_widths, start=1):
            link = self._link_width(index, widths)
            self.add_module(f"convDown{index}", ConvBlock(c_in + link, c_out))
            c_in = c_out

        block_dims = widths + widths[-2::-1] + tail_widths  # c1..c18
        self.layer_dims = tuple(reversed(block_dims))

    def _link_width(self, index: int, widths: list[int]) -> int:
        # TUNe+ feeds c8, c7, c6, c5 (widths 2C, 4C, 8C, 16C) into convDown1..4.
        return widths[index] if self.config.plus and index < DEPTH else 0

    def blocks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        contracting = []
        h = x  # (B, 1, T)
        for level in range(1, DEPTH + 1):
            h = getattr(self, f"conv{level}")(self.pool(h) if level > 1 else h)  # (B, C*2**(l-1), T/3**(l-1))
            contracting.append(h)
            yield h
        expanding = [h]  # the bottleneck c5 is the deepest link of TUNe+
        for level in range(DEPTH + 1, 2 * DEPTH):
            up = getattr(self, f"transposedConv{level}")(h)  # length x3
            h = getattr(self, f"conv{level}")(torch.cat((up, contracting[2 * DEPTH - level - 1]), dim=1))
            expanding.append(h)
            yield h
        links = expanding[::-1][1:]  # c8, c7, c6, c5
        for index in range(1, TAIL + 1):
            h = self.pool(h)
            if self.config.plus and index < DEPTH:
                h = torch.cat((h, links[index - 1]), dim=1)
            h = getattr(self, f"convDown{index}")(h)  # (B, C_i, T / 3**i)
            yield h
