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


@dataclass(frozen=True)
class MusicnnConfig:
    """Sizes of one musicnn variant (musicnn/models.py `build_musicnn`; the model is
    `tunemir.models.musicnn.Musicnn`)."""

    midend_filters: int = 64
    backend_units: int = 200
    num_classes: int = 50
    n_mels: int = 96
    timbral_filters: int = int(1.6 * 128)  # num_filt=1.6 in build_musicnn
    timbral_heights: tuple[float, ...] = (0.4, 0.7)  # filter height as a fraction of n_mels
    temporal_filters: int = int(1.6 * 32)
    temporal_lengths: tuple[int, ...] = (128, 64, 32)  # frames
    midend_layers: int = 3

    @property
    def frontend_channels(self) -> int:
        return len(self.timbral_heights) * self.timbral_filters + len(self.temporal_lengths) * self.temporal_filters

    @property
    def pool_channels(self) -> int:
        """Width of `mean_pool` and of `max_pool`: the front end plus every mid-end layer."""
        return self.frontend_channels + self.midend_layers * self.midend_filters

    @property
    def embedding_dim(self) -> int:
        """jukemir's vector: `mean_pool` and `max_pool` concatenated."""
        return 2 * self.pool_channels

    @property
    def num_layers(self) -> int:
        """Tappable layers for extraction: only jukemir's vector (layer 0)."""
        return 1
