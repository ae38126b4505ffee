"""SampleCNN, the CLMR encoder (Lee et al. 2017; Spijkervet & Burgoyne, ISMIR 2021)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tunemir.models.base import Encoder
from tunemir.models.configs import SampleCNNConfig


class SampleCNN(Encoder):
    """SampleCNN as used by CLMR (Spijkervet & Burgoyne, "Contrastive Learning of Musical
    Representations", ISMIR 2021): a strided 3-sample conv, nine conv+BN+ReLU+maxpool(3) blocks
    and a final conv block, so a 3**10-sample frame shrinks to one 512-d step.

    Parameter names match CLMR's `sequential.{i}.{0,1}` keys (the classifier `fc` is not part
    of the encoder: SimCLR replaces it by Identity), so its checkpoints load strictly.
    """

    def __init__(self, config: SampleCNNConfig = SampleCNNConfig()):
        super().__init__()
        self.config = config
        widths = config.channels
        blocks = [_conv_block(1, widths[0], stride=3, padding=0)]
        for c_in, c_out in zip(widths[:-2], widths[1:-1]):
            blocks.append(_conv_block(c_in, c_out, pool=True))
        blocks.append(_conv_block(widths[-2], widths[-1]))
        self.sequential = nn.Sequential(*blocks)
        # Layer k is block (10 - k): layer 0 is the last block.
        self.layer_dims = tuple(reversed(widths))

    def blocks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for block in self.sequential:
            x = block(x)  # (B, C_i, T / 3**(i+1))
            yield x


def _conv_block(c_in: int, c_out: int, stride: int = 1, padding: int = 1, pool: bool = False):
    layers = [nn.Conv1d(c_in, c_out, 3, stride=stride, padding=padding), nn.BatchNorm1d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool1d(3, stride=3))
    return nn.Sequential(*layers)
