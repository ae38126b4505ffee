"""The encoder base class: one mechanism for the final and every intermediate representation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


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
