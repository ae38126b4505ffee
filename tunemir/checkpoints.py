"""Reading encoder weights from CLMR/TUNe checkpoints without running pickled code; tunemir's format."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from tunemir import __version__, safe_pickle
from tunemir.fileio import atomic_path, sha256_file

log = logging.getLogger(__name__)

FORMAT_NAME = "tunemir-checkpoint"
FORMAT_VERSION = 1
_METADATA_KEY = "tunemir"


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit; the message says why and what to do."""


class MissingWeightsError(CheckpointError):
    """A model that needs weights was asked for without any."""


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
    by `tunemir.safe_pickle`, which builds tensors and plain containers and never runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        if _is_safetensors(path):
            return _read_safetensors(path)
        return _read_torch(path)
    except OSError as err:  # unreadable (permissions, I/O error) rather than malformed
        raise CheckpointError(f"checkpoint {path} cannot be read ({err.strerror or err}); check its "
                              f"permissions (in Docker, the uid given with -u must be able to read it)") from None


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
    try:
        with atomic_path(path) as tmp:
            write_safetensors(tmp, tensors, {_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    except OSError as err:
        blocker = next((p for p in Path(path).parents if p.is_file()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else f"{err.strerror} ({err.filename})"
        raise CheckpointError(f"cannot write {path}: {reason}; choose an output path in a writable folder") from None
    return metadata


def write_safetensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` as a safetensors file with the umask's ordinary mode.

    safetensors' own `save_file` creates its file 0600 (replacing one that exists), so results
    in a shared cache, and the weights baked into an image for `docker run -u`, would be
    readable by their owner alone. Callers write to a temporary name (`fileio.atomic_path`).
    """
    Path(path).write_bytes(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata))


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
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); check the download "
                              f"(is it complete?) or convert the original checkpoint again") from None
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
        obj = safe_pickle.load(path)
    except safe_pickle.RefusedObject as err:
        raise CheckpointError(
            f"{path} was refused: it needs the Python object {err.name}, which tunemir will "
            f"not build (loading it could run arbitrary code). If you trust the file, re-save its "
            f"tensors in the environment that wrote it: torch.save(ckpt['state_dict'], 'weights.pt'), "
            f"then `tunemir convert-checkpoint weights.pt OUT.safetensors`"
        ) from None
    except safe_pickle.NotACheckpoint as err:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint or safetensors file: {err}; {err.fix}") from None
    except Exception as err:  # damaged pickles raise EOFError, ValueError, UnpicklingError, ...
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or safetensors file: its pickle data is damaged "
            f"({type(err).__name__}: {str(err)[:200]}); check the download (is it complete?)"
        ) from None
    if not isinstance(obj, dict):
        what = safe_pickle.opaque_name(obj) or type(obj).__name__
        raise CheckpointError(f"{path} holds a {what}, not a dict of tensors; pass a checkpoint or state_dict file")
    if "pytorch-lightning_version" in obj:
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is a Lightning checkpoint without a state_dict: it holds no "
                                  f"weights; pass the .ckpt that trainer.save_checkpoint wrote with the model")
        hparams = obj.get("hyper_parameters")
        hparams = vars(hparams) if isinstance(hparams, safe_pickle.Namespace) else hparams
        hparams = hparams if isinstance(hparams, dict) else {}
        if isinstance(hparams.get("config"), dict):  # tunemir's trainer: save_hyperparameters() of config
            hparams = hparams["config"]
        metadata = {
            key: value
            for key, value in [("model", hparams.get("model")), ("epoch", obj.get("epoch")),
                               ("global_step", obj.get("global_step")),
                               ("pytorch-lightning_version", obj["pytorch-lightning_version"])]
            if isinstance(value, (str, int, float))
        }
        return EncoderWeights(_select_encoder(state, path, lightning=True), "lightning", sha256_file(path), metadata)
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # torch.save({"state_dict": model.state_dict(), ...}) by hand
    if not any(str(k).startswith("encoder.") for k in obj):
        fmt = "state_dict"  # a bare encoder state_dict
    elif any(_RELEASE_1_0_KEY.match(str(k).removeprefix("encoder.")) for k in obj):
        fmt = "clmr-release-1.0"
    else:
        fmt = "clmr-v1"
    return EncoderWeights(_select_encoder(obj, path), fmt, sha256_file(path))


def _select_encoder(state: dict, path: Path, lightning: bool = False) -> dict[str, torch.Tensor]:
    """Keep the encoder tensors, prefix stripped; remap release-1.0 names; drop any `fc`."""
    for prefix in ("model.encoder.", "encoder."):
        selected = {k[len(prefix):]: v for k, v in state.items() if str(k).startswith(prefix)}
        if selected:
            break
    else:
        if lightning:
            keys = ", ".join(map(str, list(state)[:4])) or "none"
            raise CheckpointError(
                f"{path} is a Lightning checkpoint without encoder weights (no 'model.encoder.*' keys; "
                f"its state_dict holds {keys}); pass the checkpoint of a CLMR/TUNe contrastive run")
        selected = dict(state)  # a bare encoder state_dict
    remapped = {}
    for key, value in selected.items():
        match = _RELEASE_1_0_KEY.match(key)
        if match:
            key = f"sequential.{int(match.group(1)) - 1}.{match.group(2)}.{match.group(3)}"
        if key.split(".")[0] == "fc":
            continue  # the classifier is not part of the encoder
        if not isinstance(value, torch.Tensor):
            what = safe_pickle.opaque_name(value) or type(value).__name__
            raise CheckpointError(f"{path}: entry {key!r} is a {what}, not a tensor; "
                                  f"pass the checkpoint that holds the encoder weights")
        remapped[key] = value
    if not remapped:
        raise CheckpointError(f"{path} holds no encoder tensors (no 'model.encoder.*' or 'encoder.*' keys)")
    return remapped
