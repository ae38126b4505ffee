"""Reading encoder weights from CLMR/TUNe checkpoints without running pickled code; tunemir's format."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tunemir import __version__
from tunemir.fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)

FORMAT_NAME = "tunemir-checkpoint"
FORMAT_VERSION = 1
_METADATA_KEY = "tunemir"


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit; the message says why and what to do."""


class MissingWeightsError(CheckpointError):
    """A model that needs weights was asked for without any."""


class _AttributeDict(dict):
    """Stand-in for Lightning's AttributeDict (a plain dict subclass) in `hyper_parameters`."""


#: Everything beyond tensors and builtin containers that CLMR v2 / TUNe Lightning checkpoints
#: hold: the argparse config and Lightning's hparams dict. Nothing here runs code on load.
_ALLOWED_GLOBALS = [
    argparse.Namespace,
    (_AttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (_AttributeDict, "lightning.fabric.utilities.data.AttributeDict"),
]

# CLMR release 1.0 (SampleCNN59049) named the blocks conv1..conv11 instead of sequential.0..10.
_RELEASE_1_0_KEY = re.compile(r"^conv(\d+)\.(\d+)\.(.+)$")


@dataclass
class EncoderWeights:
    """An encoder state_dict read from a file, with where it came from."""

    state_dict: dict[str, torch.Tensor]
    format: str
    file_sha256: str
    metadata: dict = field(default_factory=dict)

    @property
    def weights_sha256(self) -> str:
        return weights_sha256(self.state_dict)


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors: equal weights, equal digest,
    whatever file format they came in."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_encoder_weights(path: Path | str) -> EncoderWeights:
    """Read the encoder tensors of any supported checkpoint.

    Formats: tunemir `.safetensors`; Lightning `.ckpt` from CLMR v2 / TUNe (`model.encoder.*`,
    else `encoder.*`); CLMR v1 `.pt` (`encoder.*`); CLMR release 1.0 (`encoder.conv1..11`,
    remapped to `sequential.0..10`); a bare encoder state_dict. Pickle-based files are read
    with `torch.load(weights_only=True)` and an allowlist of two harmless classes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if _is_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path)


def save_checkpoint(
    path: Path | str, state_dict: dict[str, torch.Tensor], *, model: str, config: dict,
    source: dict | None = None,
) -> dict:
    """Write tunemir's format: safetensors tensors plus JSON metadata of primitives. Returns it."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model,
        "config": config,
        "tunemir_version": __version__,
        "weights_sha256": weights_sha256(tensors),
        "source": source or {},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return metadata


def _is_safetensors(path: Path) -> bool:
    # A safetensors file opens with a little-endian u64 header size and then a JSON object.
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


def _read_safetensors(path: Path) -> EncoderWeights:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError and OSError types
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    metadata = json.loads(raw[_METADATA_KEY]) if _METADATA_KEY in raw else {}
    if metadata:
        if metadata.get("format") != FORMAT_NAME or metadata.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path} is a {metadata.get('format')} v{metadata.get('format_version')} file; "
                f"this tunemir ({__version__}) reads {FORMAT_NAME} v{FORMAT_VERSION}: upgrade tunemir"
            )
        if weights_sha256(state) != metadata.get("weights_sha256"):
            raise CheckpointError(
                f"{path} is corrupt: its tensors do not match the sha256 in its metadata; "
                f"convert the original checkpoint again"
            )
        return EncoderWeights(state, "tunemir", sha256_file(path), metadata)
    return EncoderWeights(_select_encoder(state, path), "safetensors", sha256_file(path))


def _read_torch(path: Path) -> EncoderWeights:
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # no class was refused: the pickle stream itself is damaged or foreign
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint or safetensors file (invalid pickle data); "
                f"check the download (is it complete? is it still zipped?)"
            ) from None
        raise CheckpointError(
            f"{path} was refused: it needs the Python object {found.group(1)}, which tunemir will "
            f"not unpickle (loading it "
            f"could run arbitrary code). If you trust the file, re-save its tensors in the "
            f"environment that wrote it: torch.save(ckpt['state_dict'], 'weights.pt'), then "
            f"`tunemir convert-checkpoint weights.pt OUT.safetensors`"
        ) from None
    except Exception as err:  # damaged files also make torch.load raise IndexError, KeyError, ...
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or safetensors file ({err}); "
            f"check the download (is it complete? is it still zipped?)"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    if "pytorch-lightning_version" in obj:
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is a Lightning checkpoint without a state_dict")
        hparams = obj.get("hyper_parameters")
        hparams = vars(hparams) if isinstance(hparams, argparse.Namespace) else hparams
        hparams = hparams if isinstance(hparams, dict) else {}
        metadata = {
            key: value
            for key, value in [("model", hparams.get("model")), ("epoch", obj.get("epoch")),
                               ("global_step", obj.get("global_step")),
                               ("pytorch-lightning_version", obj["pytorch-lightning_version"])]
            if isinstance(value, (str, int, float))
        }
        return EncoderWeights(_select_encoder(state, path), "lightning", sha256_file(path), metadata)
    if not any(str(k).startswith("encoder.") for k in obj):
        fmt = "state_dict"  # a bare encoder state_dict
    elif any(_RELEASE_1_0_KEY.match(str(k).removeprefix("encoder.")) for k in obj):
        fmt = "clmr-release-1.0"
    else:
        fmt = "clmr-v1"
    return EncoderWeights(_select_encoder(obj, path), fmt, sha256_file(path))


def _select_encoder(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """Keep the encoder tensors, prefix stripped; remap release-1.0 names; drop any `fc`."""
    for prefix in ("model.encoder.", "encoder."):
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if selected:
            break
    else:
        selected = dict(state)  # a bare encoder state_dict
    remapped = {}
    for key, value in selected.items():
        match = _RELEASE_1_0_KEY.match(key)
        if match:
            key = f"sequential.{int(match.group(1)) - 1}.{match.group(2)}.{match.group(3)}"
        if key.split(".")[0] == "fc":
            continue  # the classifier is not part of the encoder
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        remapped[key] = value
    if not remapped:
        raise CheckpointError(f"{path} holds no encoder tensors (no 'model.encoder.*' or 'encoder.*' keys)")
    return remapped
