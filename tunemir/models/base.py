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

    def forward(self, x: torch.Tensor, layer: int | tuple[int, ...] = 0) -> torch.Tensor:
        """Map audio `(B, 1, T)` to the representation of `layer`, `(B, layer_dims[layer])`; a tuple
        of layers gives theirs concatenated in that order, `(B, sum of their dims)`, from one pass
        through the blocks (up to the deepest one asked for)."""
        wanted = (layer,) if isinstance(layer, int) else tuple(layer)
        for k in wanted:
            self.check_layer(k)
        stops = {self.num_layers - k for k in wanted}
        taps: dict[int, torch.Tensor] = {}
        for index, h in enumerate(self.blocks(x), start=1):  # h: (B, C_i, T_i)
            if index in stops:
                taps[index] = h.mean(dim=-1).flatten(1)  # (B, C_i); 2-D inference layout: (B, C_i, 1)
                if len(taps) == len(stops):
                    parts = [taps[self.num_layers - k] for k in wanted]
                    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        raise AssertionError("blocks() yielded fewer outputs than layer_dims declares")


class InferenceEncoder(nn.Module):
    """Inference-only twin of an Encoder, same outputs up to float rounding, faster.

    BatchNorm is folded into the conv before it, ReLUs run in place, and every 1-D layer runs
    as its 2-D equivalent on channels-last `(B, C, 1, T)` tensors: oneDNN's channels-last
    kernels are 1.5-2.7x faster on TUNe's full-resolution, few-channel layers (BENCHMARKS.md).
    Takes `(B, 1, T)` audio like the encoder; the encoder itself is left untouched.
    """

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).eval()
        self.layer_dims = encoder.layer_dims
        for module in list(self.encoder.modules()):
            for name, child in list(module.named_children()):
                replacement = _as_channels_last_2d(child)
                if replacement is not None:
                    setattr(module, name, replacement)
        self.encoder.eval()
        for sequential in self.encoder.modules():
            if isinstance(sequential, nn.Sequential):
                _fold_batchnorm(sequential)

    def forward(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, 1, 1, T)
        return self.encoder(x, layer)


def _as_channels_last_2d(layer: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Conv1d):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, (1, layer.kernel_size[0]),
                         stride=(1, layer.stride[0]), padding=(0, layer.padding[0]))
        with torch.no_grad():
            conv.weight.copy_(layer.weight.unsqueeze(2))
            conv.bias.copy_(layer.bias)
        return conv.to(memory_format=torch.channels_last)
    if isinstance(layer, nn.BatchNorm1d):
        norm = nn.BatchNorm2d(layer.num_features, eps=layer.eps)
        norm.load_state_dict(layer.state_dict())
        return norm
    if isinstance(layer, nn.MaxPool1d):
        return nn.MaxPool2d((1, layer.kernel_size), (1, layer.stride))
    return None


def _fold_batchnorm(sequential: nn.Sequential) -> None:
    for index, layer in enumerate(sequential):
        if isinstance(layer, nn.BatchNorm2d) and index and isinstance(sequential[index - 1], nn.Conv2d):
            sequential[index - 1] = fuse_conv_bn_eval(sequential[index - 1], layer)
            sequential[index] = nn.Identity()
        elif isinstance(layer, nn.ReLU):
            sequential[index] = nn.ReLU(inplace=True)
