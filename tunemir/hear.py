"""The HEAR 2021 API (Turian et al., "HEAR: Holistic Evaluation of Audio Representations") over
`tunemir.embed`, for every tunemir model: the same decoding, framing and inference as extract.

    from tunemir import hear
    model = hear.load_model("weights.safetensors")        # or "tune_plus", "chroma", "model.py:build"
    scene = hear.get_scene_embeddings(audio, model)        # (n_sounds, D)
    frames, ms = hear.get_timestamp_embeddings(audio, model)  # (n_sounds, n_frames, D), (n_sounds, n_frames)

`audio` is (n_sounds, n_samples) at `model.sample_rate` (22,050 Hz for TUNe, TUNe+, CLMR and the
handcrafted features, 16,000 Hz for musicnn). Scene embeddings are the vectors `extract` writes;
timestamp embeddings are the frame vectors (one frame per model window, non-overlapping: 2.68 s
for the raw-waveform encoders, 2.99 s for musicnn; a whole-file feature is one frame) with the
time of each frame's centre in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tunemir.api import Model, embed
from tunemir.api import load_model as _load_model

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

#: What `load_model()` gives without a weights file.
DEFAULT_MODEL = "tune_plus"


class HearModel(torch.nn.Module):
    """A tunemir model as HEAR expects it: a torch module with `sample_rate` and the embedding sizes."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model
        self.sample_rate = int(model.sample_rate)
        self.scene_embedding_size = self.timestamp_embedding_size = int(model.layer_dims[0])
        if isinstance(model.rep, torch.nn.Module):
            self.encoder = model.rep  # registered, so .to(device) moves it

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if hasattr(self, "encoder"):  # follow .to() / .cuda(): the inference twin is rebuilt on the new device
            device = next(self.encoder.parameters(), torch.empty(0)).device
            if device != self.model.device:
                self.model.device, self.model._twin = device, None
        return out


def load_model(model_file_path: str = "", model: str | None = None) -> HearModel:
    """`model_file_path`: a checkpoint (tunemir's safetensors, a released or Lightning one; the
    model is recognised from its tensors), or a model name (the registry's, with its installed
    weights, or "path/model.py:build"); empty: `model` or tune_plus with its installed weights."""
    reference = str(model_file_path or model or DEFAULT_MODEL)
    path = Path(reference)
    if path.is_file() and path.suffix != ".py":
        from tunemir.models import load_encoder

        _, name = load_encoder(path, model)
        return HearModel(_load_model(name, path))
    return HearModel(_load_model(reference))


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """(n_sounds, n_samples) -> (n_sounds, scene_embedding_size) float32, on the audio's device."""
    vectors = [embed(clip, model.sample_rate, model.model) for clip in _clips(audio)]
    return torch.from_numpy(np.stack(vectors)).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_sounds, n_samples) -> frame embeddings (n_sounds, n_frames, D) float32 and their centres in
    milliseconds (n_sounds, n_frames), on the audio's device."""
    frames, stamps = zip(*(embed(clip, model.sample_rate, model.model, pooling=None) for clip in _clips(audio)))
    embeddings = torch.from_numpy(np.stack(frames).astype(np.float32))
    milliseconds = torch.from_numpy(1000.0 * np.stack(stamps)).float()
    return embeddings.to(audio.device), milliseconds.to(audio.device)


def _clips(audio: torch.Tensor):
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2:
        shape = tuple(audio.shape) if hasattr(audio, "shape") else type(audio).__name__
        raise ValueError(f"HEAR audio is a tensor (n_sounds, n_samples), got {shape}")
    return audio.detach().to("cpu", torch.float32).numpy()
