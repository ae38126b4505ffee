"""The encoders' configurations: frozen dataclasses of primitives, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

#: Contracting levels of the TUNe U-Net (conv1..conv5); the expanding path has one fewer.
DEPTH = 5
#: Pooled blocks in the TUNe tail (convDown1..convDown9), the "Tail+5" of TUNe.
TAIL = 9


@dataclass(frozen=True)
class SampleCNNConfig:
    """Channel widths of the 11 blocks; the default is CLMR's `SampleCNN(strides=[3]*9)`."""

    channels: tuple[int, ...] = (128, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512)

    @property
    def num_layers(self) -> int:
        """Tappable layers of the encoder built from this configuration: one per block."""
        return len(self.channels)


@dataclass(frozen=True)
class TuneConfig:
    """`channels` is the first U-Net width C (11 in the paper); widths double per level.

    `plus` adds TUNe+'s "pink links": convDown1..4 also see the expanding-path (and bottleneck)
    features of matching length. `out_channels` is the representation size (512).
    """

    channels: int = 11
    out_channels: int = 512
    plus: bool = False

    @property
    def num_layers(self) -> int:
        """Tappable layers of the encoder built from this configuration: the contracting and
        expanding U-Net blocks and the tail's (18 for TUNe and TUNe+)."""
        return DEPTH + (DEPTH - 1) + TAIL
