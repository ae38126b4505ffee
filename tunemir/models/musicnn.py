"""musicnn (Pons & Serra, 2019) in PyTorch, loaded from its released TensorFlow checkpoints.

"musicnn: pre-trained convolutional neural networks for music audio tagging" (ISMIR 2019
late-breaking demo). Front end: musically motivated vertical (timbral) and horizontal
(temporal) filters on a log-mel patch; mid end: three residual 1-D convolutions; back end:
temporal max and mean pooling and two dense layers. Reads the weights with
`tunemir.tf_checkpoint` (numpy only), so tensorflow is never needed at run time.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tunemir import checkpoints
from tunemir.models import MUSICNN_WHEEL, get_info
from tunemir.models.configs import MusicnnConfig
from tunemir.models.release import Release, ReleaseFormatError
from tunemir.tf_checkpoint import TFCheckpointError, read_checkpoint

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = MusicnnConfig.n_mels
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as musicnn's extractor computes it
# Shortest waveform giving one full patch with centred frames: 1 + len // HOP >= PATCH_FRAMES.
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon
OUTPUTS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram")


PRESETS = {
    "MSD_musicnn": MusicnnConfig(),
    "MTT_musicnn": MusicnnConfig(),
    "MSD_musicnn_big": MusicnnConfig(midend_filters=512, backend_units=500),  # jukemir's: 4194-d
}


def _bn(channels: int, dims: int) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, eps=BN_EPS)


class _FrontendBlock(nn.Module):
    """conv -> ReLU -> BN -> max over the whole frequency axis (timbral_block / tempo_block)."""

    def __init__(self, filters: int, kernel: tuple[int, int], time_pad: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = _bn(filters, 2)
        self.time_pad = time_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, T, F)
        x = F.pad(x, (0, 0, *self.time_pad))
        x = self.bn(F.relu(self.conv(x)))  # (B, C, T, F')
        return x.amax(dim=3)  # (B, C, T)


class Musicnn(nn.Module):
    """musicnn on log-mel patches (B, 187, 96); returns a dict of every layer the original exposes.

    Pons, J. & Serra, X. (2019), "musicnn: pre-trained convolutional neural networks for
    music audio tagging". Time-major outputs are (B, T, C) as in the original; pooled ones (B, C).
    """

    def __init__(self, config: MusicnnConfig = MusicnnConfig()):
        super().__init__()
        self.config = config
        c = config
        self.input_bn = _bn(1, 2)
        # Timbral filters: 'same' in time via an explicit (3, 3) pad, valid in frequency.
        self.timbral = nn.ModuleList(
            _FrontendBlock(c.timbral_filters, (7, int(h * c.n_mels)), (3, 3)) for h in c.timbral_heights
        )
        # Temporal filters: TF 'same' padding puts the extra frame of an even kernel after.
        self.temporal = nn.ModuleList(
            _FrontendBlock(c.temporal_filters, (k, 1), ((k - 1) // 2, k - 1 - (k - 1) // 2))
            for k in c.temporal_lengths
        )
        widths = [c.frontend_channels] + [c.midend_filters] * c.midend_layers
        self.midend = nn.ModuleList(
            nn.Conv1d(widths[i], c.midend_filters, 7, padding=3) for i in range(c.midend_layers)
        )
        self.midend_bn = nn.ModuleList(_bn(c.midend_filters, 1) for _ in range(c.midend_layers))
        self.pool_bn = _bn(2 * c.pool_channels, 1)
        self.dense = nn.Linear(2 * c.pool_channels, c.backend_units)
        self.dense_bn = _bn(c.backend_units, 1)
        self.logits = nn.Linear(c.backend_units, c.num_classes)
        # What extraction taps (tunemir.extract): layer 0 = jukemir's vector, `MusicnnEmbedding`.
        self.layer_dims = (c.embedding_dim,)

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    def check_layer(self, layer: int) -> None:
        """Raise ValueError unless `layer` is a valid tap (only 0: jukemir's vector)."""
        if layer != 0:
            raise ValueError(f"layer {layer} does not exist for musicnn: only 0 (jukemir's mean_pool + max_pool "
                             f"vector) can be extracted; drop --layer")

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:  # (B, T, F)
        x = self.input_bn(patches.unsqueeze(1))  # (B, 1, T, F)
        timbral = [block(x) for block in self.timbral]  # each (B, C, T)
        temporal = [block(x) for block in self.temporal]
        features = [torch.cat(timbral + temporal, dim=1)]  # (B, 561, T)
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            y = bn(F.relu(conv(features[-1])))  # (B, M, T)
            features.append(y if i == 0 else y + features[-1])  # residual from the 2nd layer on
        stacked = torch.cat(features, dim=1)  # (B, pool_channels, T)
        max_pool, mean_pool = stacked.amax(dim=2), stacked.mean(dim=2)  # (B, C)
        # TF flattens (B, C, 2) [max, mean] row-major: max and mean interleave per channel.
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # (B, 2C)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(flat))))
        out = {
            "timbral": torch.cat(timbral, dim=1).transpose(1, 2),  # (B, T, C)
            "temporal": torch.cat(temporal, dim=1).transpose(1, 2),
            "mean_pool": mean_pool,
            "max_pool": max_pool,
            "penultimate": penultimate,
            "taggram": torch.sigmoid(self.logits(penultimate)),
        }
        for i, y in enumerate(features[1:], start=1):
            out[f"cnn{i}"] = y.transpose(1, 2)
        return out

    # ---- TF variables: the layers in the order build_musicnn creates them (names conv2d_K, ...).
    def tf_layers(self) -> list[tuple[str, nn.Module]]:
        """(TF layer name, module) pairs; TF numbers each layer type in creation order."""
        order: list[nn.Module] = [self.input_bn]
        for block in [*self.timbral, *self.temporal]:
            order += [block.conv, block.bn]
        for conv, bn in zip(self.midend, self.midend_bn):
            order += [conv, bn]
        order += [self.pool_bn, self.dense, self.dense_bn, self.logits]
        counts: dict[str, int] = {}
        named = []
        for module in order:
            kind = ("batch_normalization" if isinstance(module, _BatchNorm)
                    else "dense" if isinstance(module, nn.Linear) else "conv2d")
            k = counts.get(kind, 0)
            counts[kind] = k + 1
            named.append((kind if k == 0 else f"{kind}_{k}", module))
        return named

    def tf_tensors(self) -> list[tuple[str, torch.Tensor, _Layout]]:
        """(TF variable name, this model's tensor, layout change) for every weight."""
        out = []
        for name, module in self.tf_layers():
            if isinstance(module, _BatchNorm):
                out += [(f"{name}/gamma", module.weight, _SAME), (f"{name}/beta", module.bias, _SAME),
                        (f"{name}/moving_mean", module.running_mean, _SAME),
                        (f"{name}/moving_variance", module.running_var, _SAME)]
            else:
                layout = (_DENSE if isinstance(module, nn.Linear)
                          else _CONV1D if isinstance(module, nn.Conv1d) else _CONV2D)
                out += [(f"{name}/kernel", module.weight, layout), (f"{name}/bias", module.bias, _SAME)]
        return out

    def load_tf_variables(self, variables: dict[str, np.ndarray], source: str = "TF variables") -> None:
        """Copy TF checkpoint variables in, strictly: every weight present with its TF shape,
        nothing else but optimizer state (Adam slots, beta powers, global_step)."""
        expected = set()
        for tf_name, target, layout in self.tf_tensors():
            expected.add(tf_name)
            if tf_name not in variables:
                raise TFCheckpointError(f"{source}: no variable {tf_name!r}; "
                                        "not a musicnn checkpoint of this layout")
            value = layout.to_torch(np.asarray(variables[tf_name], np.float32))
            if tuple(value.shape) != tuple(target.shape):
                raise TFCheckpointError(f"{source}: {tf_name} has shape {tuple(variables[tf_name].shape)}, "
                                        f"this musicnn config needs {tuple(target.shape)} after conversion")
            with torch.no_grad():
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
        unused = [n for n in variables if n not in expected and not _is_optimizer_state(n)]
        if unused:
            raise TFCheckpointError(f"{source}: variables {unused[:5]} are not part of musicnn; wrong checkpoint?")

    def to_tf_variables(self) -> dict[str, np.ndarray]:
        """The inverse of `load_tf_variables`: this model's weights in the TF checkpoint layout."""
        return {name: np.ascontiguousarray(layout.to_tf(t.detach().numpy())) for name, t, layout in self.tf_tensors()}


class MusicnnEmbedding(nn.Module):
    """Musicnn as the extraction pipeline runs it: log-mel patches (B, 187, 96) to jukemir's
    per-patch vector (B, 2C) = [mean_pool, max_pool]. Its mean over a file's patches is `embed`."""

    def __init__(self, model: Musicnn):
        super().__init__()
        self.model = model
        self.layer_dims = model.layer_dims

    def forward(self, patches: torch.Tensor, layer: int = 0) -> torch.Tensor:  # (B, T, F)
        self.model.check_layer(layer)
        out = self.model(patches)
        return torch.cat([out["mean_pool"], out["max_pool"]], dim=1)  # (B, 2C)


_BatchNorm = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class _Layout:
    """How a TF kernel's axes map to torch's, both ways."""

    to_torch: Callable[[np.ndarray], np.ndarray]
    to_tf: Callable[[np.ndarray], np.ndarray]


_SAME = _Layout(lambda a: a, lambda a: a.copy())
_DENSE = _Layout(lambda k: k.T, lambda w: w.T)  # (in, out) <-> (out, in)
_CONV2D = _Layout(lambda k: k.transpose(3, 2, 0, 1), lambda w: w.transpose(2, 3, 1, 0))  # HWIO <-> OIHW
# The mid end is a TF conv2d whose kernel spans the whole feature axis: (7, C_in, 1, C_out).
_CONV1D = _Layout(lambda k: k[:, :, 0, :].transpose(2, 1, 0), lambda w: w.transpose(2, 1, 0)[:, :, None, :])


def _is_optimizer_state(name: str) -> bool:
    return name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power", "global_step")


def config_from_tf_variables(variables: dict[str, np.ndarray]) -> MusicnnConfig:
    """Recognise the variant from shapes: mid-end width (conv2d_5), dense units and classes."""
    try:
        return replace(MusicnnConfig(), midend_filters=int(variables["conv2d_5/kernel"].shape[-1]),
                       backend_units=int(variables["dense/kernel"].shape[-1]),
                       num_classes=int(variables["dense_1/kernel"].shape[-1]))
    except KeyError as err:
        raise TFCheckpointError(f"no variable {err}; this is not a musicnn checkpoint") from None


def musicnn_from_tf_checkpoint(prefix: Path | str) -> Musicnn:
    """Build an eval-mode Musicnn from a TF checkpoint prefix (e.g. `.../MSD_musicnn/`, whose
    files are `.../MSD_musicnn/.index` and `.data-00000-of-00001`)."""
    variables = {k: v for k, v in read_checkpoint(prefix).items() if not _is_optimizer_state(k)}
    model = Musicnn(config_from_tf_variables(variables))
    model.load_tf_variables(variables, source=f"{prefix}.index")
    return model.eval()


def extract_wheel_checkpoint(wheel: Path | str, model: str, dest: Path | str) -> str:
    """Unpack `musicnn/<model>/.index` and `.data-00000-of-00001` from the musicnn 0.1.0 wheel
    into `dest/<model>/`; returns the checkpoint prefix (`dest/<model>/`: a str, since
    pathlib would drop the trailing slash the empty file stem needs)."""
    folder = Path(dest) / model
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for suffix in (".index", ".data-00000-of-00001"):
                (folder / suffix).write_bytes(archive.read(f"musicnn/{model}/{suffix}"))
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise TFCheckpointError(f"{wheel}: cannot take {model} out of the musicnn wheel ({err}); "
                                f"pass {MUSICNN_WHEEL} from PyPI") from None
    return f"{folder}/"


def convert_wheel(wheel: Path | str, variant: str, dst: Path | str, *, model: str, release: dict) -> dict:
    """Write tunemir's safetensors checkpoint of `variant` (e.g. "MSD_musicnn") taken from the
    musicnn wheel, recorded as registry model `model`; `release` (the wheel's name and pinned
    sha256) goes into the metadata's source. Returns the metadata."""
    with tempfile.TemporaryDirectory(prefix="tunemir-musicnn-") as tmp:
        prefix = extract_wheel_checkpoint(wheel, variant, tmp)
        net = musicnn_from_tf_checkpoint(prefix)
    source = {"file": Path(wheel).name, "format": "tensorflow", "member": f"musicnn/{variant}/", "release": release}
    return checkpoints.save_checkpoint(dst, net.state_dict(), model=model, config=asdict(net.config), source=source)


def convert_wheel_release(source: Path, output: Path, *, model: str, release: Release, pin: dict,
                          workdir: Path) -> None:
    """The converter of the wheel's variants (`Release.converter`): `release.member` is
    `musicnn/<variant>/`."""
    convert_wheel(source, Path(release.member).name, output, model=model, release=pin)


def convert_folder_release(source: Path, output: Path, *, model: str, release: Release, pin: dict,
                           workdir: Path) -> None:
    """The converter of a checkpoint folder such as the repository's `musicnn/MSD_musicnn_big/`
    (files `.index`, `.data-00000-of-00001`): it must hold the variant the registry declares."""
    net = musicnn_from_tf_checkpoint(f"{source}/")
    expected = get_info(model).config
    if net.config != expected:
        raise ReleaseFormatError(
            f"{source} holds a musicnn with mid-end width {net.config.midend_filters} and {net.config.backend_units} "
            f"dense units, not {release.filename}'s {expected.midend_filters} and {expected.backend_units}")
    meta = {"file": release.filename, "format": "tensorflow", "release": pin}
    checkpoints.save_checkpoint(output, net.state_dict(), model=model, config=asdict(net.config), source=meta)


# ---------------------------------------------------------------- front end (numpy)

def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, np.float64)
    mels = f / (200.0 / 3)
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    freqs = (200.0 / 3) * m
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), freqs)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 Slaney-normalised triangles, computed in the order
    librosa.filters.mel does (float64 ramps stored to float32, then scaled in place)."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, len(fftfreqs)), np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


_MEL = mel_filterbank()
# scipy.signal.get_window("hann", 512, fftbins=True), written as scipy computes it.
_WINDOW = 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, N_FFT + 1)[:-1])


def logmel(waveform: np.ndarray) -> np.ndarray:
    """musicnn's input: (frames, 96) float32 `log10(10000 * mel + 1)` of a 16 kHz mono waveform.

    As the original: librosa's melspectrogram (centred reflect-padded frames, power 2), cast to
    float16, then the log in float32, since numpy 1.x promotes `10000 * float16_array` to
    float32 (numpy 2 would keep float16 and overflow to inf above mel = 6.55).
    """
    y = np.asarray(waveform, np.float32)
    if y.ndim != 1 or len(y) <= N_FFT // 2:
        raise ValueError(f"logmel needs a 1-D waveform of more than {N_FFT // 2} samples, got shape {y.shape}; "
                         "use patches(), which zero-pads short audio")
    padded = np.pad(y, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    spectrum = np.fft.rfft(_WINDOW * frames, axis=1).astype(np.complex64)  # librosa stores complex64
    power = np.abs(spectrum) ** 2  # (frames, 257) float32
    mel = (power @ _MEL.T).astype(np.float16).astype(np.float32)  # (frames, 96)
    return np.log10(np.float32(10000) * mel + np.float32(1))


def patches(waveform: np.ndarray) -> np.ndarray:
    """Non-overlapping (P, 187, 96) float32 log-mel patches; a trailing partial patch is dropped.

    The original crashes on audio under 2.976 s (no patch); here such a waveform is zero-padded
    at the end to the 47,616 samples that make exactly one patch.
    """
    y = np.asarray(waveform, np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"musicnn needs a non-empty 1-D 16 kHz waveform, got shape {y.shape}")
    if len(y) < MIN_SAMPLES:
        y = np.pad(y, (0, MIN_SAMPLES - len(y)))
    spec = logmel(y)
    count = len(spec) // PATCH_FRAMES
    return spec[:count * PATCH_FRAMES].reshape(count, PATCH_FRAMES, -1)


@torch.no_grad()
def features(model: Musicnn, waveform: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Every output of `model` for each patch of a 16 kHz waveform, as float32 arrays (P, ...)."""
    x = torch.from_numpy(patches(waveform))
    parts = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def embed(model: Musicnn, waveform: np.ndarray) -> np.ndarray:
    """jukemir's musicnn vector: patch-means of `mean_pool` and of `max_pool`, concatenated
    (1506-d for MSD_musicnn / MTT_musicnn, 4194-d for MSD_musicnn_big)."""
    out = features(model, waveform)
    return np.concatenate([out["mean_pool"].mean(axis=0), out["max_pool"].mean(axis=0)]).astype(np.float32)
