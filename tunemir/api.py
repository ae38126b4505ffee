"""The Python API: models on audio in memory, the same computation as `tunemir extract`.

    import tunemir
    model = tunemir.load_model("tune_plus", "weights.safetensors")   # or a released name, a FILE.py:FUNCTION
    vector = tunemir.embed(audio, 44100, model)                        # (512,), as extract writes it
    frames, seconds = tunemir.embed(audio, 44100, model, pooling=None) # (F, 512) and frame centres
    by_layer = tunemir.embed(audio, 44100, model, layers="all")        # {layer: vector}

`audio` is a numpy array or torch tensor, (samples,) or (samples, channels) as soundfile reads it
(a 2-D tensor (channels, samples) as torchaudio loads it is taken too: the channel axis is the
short one). It goes through what a file goes through in `extract`: the same channel mean and
streaming soxr resampler to the model's rate (bit for bit a float WAV of these samples), its
framing (or spectrogram front end, or whole-file feature), the inference twin and the pooling in
float64, so `embed` equals `extract` on that audio written to a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunemir.audio import frames_of, iter_mono_array
from tunemir.checkpoints import CheckpointError
from tunemir.extract import (ExtractError, ExtractUsageError, _load, _strict_float32, default_frames_per_batch,
                             resolve_device)
from tunemir.extract.pipeline import CHUNK_FRAMES, FrameAverager, Stats, spectrogram_frames
from tunemir.models import HandcraftedFeature, ModelSpec
from tunemir.models.loading import inference_module

__all__ = ["Model", "embed", "load_model"]

#: The short axis of a 2-D array is its channels when it has at most this many entries.
MAX_CHANNELS = 64


@dataclass
class Model:
    """A model ready for `embed`: the module (or whole-file feature), its declarations and device."""

    name: str
    rep: torch.nn.Module | HandcraftedFeature
    spec: ModelSpec
    device: torch.device
    source: dict | None = None
    _twin: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """Vector length per layer (layer 0: the output)."""
        return (self.rep.dim,) if not self.spec.framed else tuple(self.rep.layer_dims)

    def inference(self) -> torch.nn.Module:
        """The fast equivalent `extract` runs (built once, on the model's device)."""
        if self._twin is None:
            self._twin = inference_module(self.rep).to(self.device)
        return self._twin


def load_model(model: str, checkpoint: str | Path | None = None, *, device: str = "auto",
               random_init: bool = False) -> Model:
    """A registry model (its installed released weights, or `checkpoint`), a model file of your own
    ("path/model.py:build") or an installed `tunemir.models` entry point, as `tunemir extract`
    loads it. Bad names, checkpoints and devices raise ValueError with the fix."""
    try:
        loaded = _load(model, Path(checkpoint) if checkpoint is not None else None, 0, random_init)
        target = resolve_device(device)
    except (ExtractError, ExtractUsageError, CheckpointError) as err:
        raise ValueError(str(err).replace("--device", "device").replace("--checkpoint", "checkpoint")) from None
    rep = loaded.rep.to(target) if isinstance(loaded.rep, torch.nn.Module) else loaded.rep
    return Model(model, rep, loaded.spec, target, loaded.source)


def embed(audio, sample_rate: int, model: Model | str, *, layers: int | list[int] | str = 0,
          pooling: str | None = "declared", batch_frames: int | None = None):
    """The representation of one clip in memory.

    `layers`: a layer (0, the output, by default: an array), a list of layers or "all" (a dict
    layer -> result). `pooling`: how frame vectors become one vector, "declared" (the default:
    the model's own, what `extract` writes), "mean" or "max"; None gives `(frames (F, D),
    seconds (F,))`, each frame's vector and the time of its centre. A whole-file feature
    (chroma, mfcc) is one frame.
    """
    if isinstance(model, str):
        model = load_model(model)
    if pooling not in ("declared", "mean", "max", None):
        raise ValueError(f"pooling must be 'declared', 'mean', 'max' or None, got {pooling!r}")
    if pooling == "declared":
        pooling = model.spec.pooling
    chosen = _layers(layers, model)
    signal = np.concatenate(list(iter_mono_array(_samples(audio), _rate(sample_rate), model.sample_rate)))
    results = {layer: _embed_one(signal, model, layer, pooling, batch_frames) for layer in chosen}
    return results[chosen[0]] if isinstance(layers, int) else results


def _embed_one(signal: np.ndarray, model: Model, layer: int, pooling: str | None, batch_frames: int | None):
    spec = model.spec
    if not spec.framed:
        if isinstance(model.rep, HandcraftedFeature):
            model.rep.prepare()
        vector = np.asarray(model.rep(signal), dtype=np.float32)
        return vector if pooling else (vector[None], np.array([len(signal) / 2 / spec.sample_rate]))
    if spec.spectrogram:
        frames = spectrogram_frames(spec, signal)
        chunks = [frames[i:i + CHUNK_FRAMES] for i in range(0, len(frames), CHUNK_FRAMES)]
    else:
        chunks = list(frames_of(iter([signal]), CHUNK_FRAMES, spec.frame_length))
    batch = batch_frames or default_frames_per_batch(model.device)
    twin = model.inference()
    with _strict_float32():
        if pooling is not None:
            out = {}
            averager = FrameAverager(twin, model.device, layer, batch, lambda job, v: out.setdefault(job, v),
                                     Stats(), pooling=pooling)
            for chunk in chunks:
                averager.add(0, torch.from_numpy(np.ascontiguousarray(chunk)))
            averager.end(0, ok=True)
            averager.flush()
            return _finite(out[0], model)
        frames = torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks))).to(model.device)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch):
                part = frames[start:start + batch]
                rows.append(twin(part.unsqueeze(1) if part.dim() == 2 else part, layer=layer).float().cpu().numpy())
    vectors = _finite(np.concatenate(rows), model)
    seconds = (np.arange(len(vectors)) * spec.hop + spec.frame_length / 2) / spec.sample_rate
    return vectors, seconds


def _finite(vectors: np.ndarray, model: Model) -> np.ndarray:
    if not np.isfinite(vectors).all():
        raise ValueError(f"{model.name} produced NaN or infinite values for this audio (a broken checkpoint, "
                         f"or audio far outside [-1, 1])")
    return vectors


def _samples(audio) -> np.ndarray:
    """(samples, channels) float32 on the CPU, from (samples,), (samples, channels) or (channels, samples)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(audio)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"audio must hold numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"audio is {array.dtype}: give float samples in [-1, 1] (e.g. x / 32768 for int16)")
    if array.ndim == 1:
        return array[:, None].astype(np.float32, copy=False)
    if array.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {array.shape}")
    if array.shape[1] <= MAX_CHANNELS and array.shape[1] <= array.shape[0]:
        return array.astype(np.float32, copy=False)
    if array.shape[0] <= MAX_CHANNELS:
        return np.ascontiguousarray(array.T, dtype=np.float32)
    raise ValueError(f"audio of shape {array.shape}: neither axis looks like channels (at most {MAX_CHANNELS}); "
                     f"give (samples,) or (samples, channels), one clip at a time")


def _rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _layers(layers, model: Model) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be a layer number, a list of them or 'all', got {layers!r}")
        return list(range(model.num_layers))
    chosen = [layers] if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) else list(layers)
    for layer in chosen:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < model.num_layers:
            raise ValueError(f"layer {layer!r} does not exist for {model.name}: it has layers 0-{model.num_layers - 1}"
                             f" (0 = the output)")
    if not chosen:
        raise ValueError("layers is empty: give a layer number, a list of them or 'all'")
    return chosen
