"""The encoder base class: one mechanism for the final and every intermediate representation."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class Encoder(nn.Module):
    """A raw-waveform encoder whose blocks can be tapped.

    Subclasses implement `blocks(x)`, yielding each block's output `(B, C_i, T_i)` in
    computation order, and set `layer_dims`. Layer k is counted back from the output, as in
    TUNe's `eval_layer`: layer 0 is the last block (the 512-d representation), layer 1 the
    block before it, and so on. The representation of a layer is the time-mean of its block
    output, and blocks after the tapped one are never run.
    """

    #: Representation size of each layer, indexed by layer number.
    layer_dims: tuple[int, ...] = ()

    @property
    def num_layers(self) -> int:
        """Number of tappable layers (valid `layer` values are 0 .. num_layers - 1)."""
        return len(self.layer_dims)

    def blocks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def check_layer(self, layer: int) -> None:
        """Raise ValueError unless `layer` is a valid tap of this encoder."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer} does not exist for {type(self).__name__}: "
                f"choose 0 (final representation) to {self.num_layers - 1} (first block)"
            )

    def forward(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Map audio `(B, 1, T)` to the representation of `layer`, `(B, layer_dims[layer])`."""
        self.check_layer(layer)
        stop = self.num_layers - layer
        for index, h in enumerate(self.blocks(x), start=1):  # h: (B, C_i, T_i)
            if index == stop:
                return h.mean(dim=-1)  # (B, C_i)
        raise AssertionError("blocks() yielded fewer outputs than layer_dims declares")


def fuse_for_inference(model: Encoder) -> Encoder:
    """An eval-mode copy with each BatchNorm folded into the conv before it and in-place ReLUs.

    Outputs equal the original's up to float rounding; inference makes two fewer passes over
    every activation, which matters because TUNe's full-resolution layers are memory-bound.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module)):
            layer = module[index]
            if isinstance(layer, nn.BatchNorm1d) and index and isinstance(module[index - 1], nn.Conv1d):
                module[index - 1] = fuse_conv_bn_eval(module[index - 1], layer)
                module[index] = nn.Identity()
            elif isinstance(layer, nn.ReLU):
                module[index] = nn.ReLU(inplace=True)
    return fused
