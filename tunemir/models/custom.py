"""Bring your own model: a torch module from a Python file (`path/model.py:build`) or from a
`tunemir.models` entry point, with the declarations (`ModelSpec`) the pipeline needs.

The protocol. `build()` takes no arguments and returns `(module, spec)`:

- `module` is a `torch.nn.Module` mapping a batch of frames `(B, frame_length)` (float32 mono
  samples at `spec.sample_rate`, in [-1, 1]) to vectors `(B, D)`. With `num_layers > 1` it is
  called as `module(frames, layer=k)`, k = 0 the final representation, and each layer may have
  its own D.
- `spec` is a `tunemir.models.ModelSpec`, or a dict of its fields (`sample_rate`,
  `frame_length`, `hop_length`, `front_end`, `pooling`, `num_layers`).

Loading the file runs its code, as importing any Python module does: only name files you trust.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tunemir.models import FRONT_ENDS, ModelSpec

__all__ = ["ENTRY_POINT_GROUP", "CustomEncoder", "CustomModelError", "is_custom_reference", "load_custom"]

#: Installed packages declare models here: `[project.entry-points."tunemir.models"] name = "pkg.mod:build"`.
ENTRY_POINT_GROUP = "tunemir.models"
#: `FILE.py:FUNCTION`, the function a Python identifier.
_FILE_REFERENCE = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_]\w*)")


class CustomModelError(Exception):
    """A custom model that cannot be used; the message names the file (or entry point) and the fix."""


def is_custom_reference(model: str) -> bool:
    """True if `model` names a model file (`FILE.py:FUNCTION`) rather than a registry name."""
    return ".py:" in model or model.endswith(".py")


def entry_point_names() -> list[str]:
    """Models installed packages offer through the `tunemir.models` entry-point group."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


class CustomEncoder(nn.Module):
    """A user's module behind the interface of tunemir's encoders: `(B, 1, L)` audio and a layer in,
    `(B, layer_dims[layer])` out, every output checked against the declared shape."""

    def __init__(self, module: nn.Module, spec: ModelSpec, where: str):
        super().__init__()
        self.module, self.spec, self.where = module, spec, where
        self.layer_dims: tuple[int, ...] = ()

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    def check_layer(self, layer: int) -> None:
        """Raise ValueError unless `layer` is one of the declared layers."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} does not exist for {self.where}: it declares num_layers="
                             f"{self.num_layers}, so choose --layer 0 to {self.num_layers - 1}")

    def forward(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        frames = x[:, 0]  # (B, L)
        out = self.module(frames, layer=layer) if self.num_layers > 1 else self.module(frames)
        expected = (len(frames), self.layer_dims[layer]) if self.layer_dims else None
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() != 2 or (
                expected is not None and tuple(out.shape) != expected) or len(out) != len(frames):
            got = f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else (
                f"a {type(out).__name__}")
            raise CustomModelError(
                f"{self.where}: the module returned {got} for {len(frames)} frames of {frames.shape[1]} "
                f"samples at layer {layer}; it must return float vectors of shape (B, D) = "
                f"({len(frames)}, {expected[1] if expected else 'D'}): pool over time inside forward")
        return out  # (B, D)


@dataclass
class CustomModel:
    """A loaded custom model: the wrapped module, its declarations and where it came from."""

    encoder: CustomEncoder
    spec: ModelSpec
    source: dict  #: {"file", "sha256", "function"} or {"entry_point", "value", "distribution"}


def load_custom(model: str) -> CustomModel:
    """Load `FILE.py:FUNCTION` (or an entry point's name), run its build function and check the result.

    Runs the file's code. Raises CustomModelError naming the file and the fix for a missing
    file, a missing or failing function, a wrong return value, or a module whose output has
    the wrong shape or is not finite.
    """
    if is_custom_reference(model):
        build, source, where = _from_file(model)
    else:
        build, source, where = _from_entry_point(model)
    try:
        built = build()
    except Exception as err:  # the user's code: any failure is theirs to fix, reported without a traceback
        raise CustomModelError(f"{where}: calling it failed with {type(err).__name__}: {err}; fix the build "
                               f"function (it takes no arguments and returns (module, spec))") from None
    module, spec = _unpack(built, where)
    encoder = CustomEncoder(module.eval(), spec, where)
    encoder.layer_dims = tuple(_probe(encoder, layer) for layer in range(spec.num_layers))
    return CustomModel(encoder, spec, source)


def _from_file(model: str):
    match = _FILE_REFERENCE.fullmatch(model)
    if match is None:
        raise CustomModelError(f"{model!r} names no function: write the model as FILE.py:FUNCTION, e.g. "
                               f"{model.rpartition(':')[0] or model}:build")
    path, function = Path(match["file"]).expanduser(), match["function"]
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CustomModelError(f"model file {path} {what}: give the path of a Python file defining {function}()")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CustomModelError(f"model file {path} cannot be read ({err.strerror}); make it readable") from None
    name = f"tunemir_custom_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that dataclasses and pickling inside the file find their module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a SyntaxError, an ImportError of a missing package...
        sys.modules.pop(name, None)
        raise CustomModelError(f"model file {path} failed to import ({type(err).__name__}: {err}); "
                               f"fix the file (run `python {path}` to see the whole error)") from None
    build = getattr(module, function, None)
    if not callable(build):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                         and v.__module__ == name)
        raise CustomModelError(f"model file {path} defines no function {function}(); "
                               f"defined there: {', '.join(defined) or 'none'}. Name one as {path}:NAME")
    source = {"file": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "function": function}
    return build, source, f"{path}:{function}"


def _from_entry_point(model: str):
    points = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == model]
    if not points:
        raise CustomModelError(f"no model {model!r}")  # the caller lists the valid names
    point = points[0]
    where = f"entry point {model!r} ({point.value})"
    try:
        build = point.load()
    except Exception as err:
        raise CustomModelError(f"{where} failed to load ({type(err).__name__}: {err}); reinstall the package "
                               f"that declares it") from None
    dist = getattr(point, "dist", None)
    source = {"entry_point": model, "value": point.value,
              "distribution": f"{dist.name} {dist.version}" if dist is not None else None}
    return build, source, where


def _unpack(built, where: str) -> tuple[nn.Module, ModelSpec]:
    fix = ("return (module, spec): a torch.nn.Module and a tunemir.models.ModelSpec (or a dict of its fields "
           "sample_rate, frame_length, hop_length, front_end, pooling, num_layers)")
    if not (isinstance(built, tuple) and len(built) == 2):
        raise CustomModelError(f"{where} returned a {type(built).__name__}; {fix}")
    module, spec = built
    if not isinstance(module, nn.Module):
        raise CustomModelError(f"{where} returned a {type(module).__name__} as the module; {fix}")
    if isinstance(spec, dict):
        try:
            spec = ModelSpec(**spec)
        except TypeError as err:
            raise CustomModelError(f"{where}: the spec dict is not a ModelSpec ({err}); {fix}") from None
        except ValueError as err:
            raise CustomModelError(f"{where}: the spec is invalid: {err}") from None
    if not isinstance(spec, ModelSpec):
        raise CustomModelError(f"{where} returned a {type(spec).__name__} as the spec; {fix}")
    if not spec.framed:
        frame_ends = ", ".join(f for f in FRONT_ENDS if f != "whole_file")
        raise CustomModelError(f"{where}: front_end 'whole_file' is for tunemir's handcrafted features; a torch "
                               f"module takes frames, so declare front_end {frame_ends}")
    return module, spec


def _probe(encoder: CustomEncoder, layer: int) -> int:
    """Run `layer` on two test frames (a quiet sine and silence); the vector size it returns."""
    length = encoder.spec.frame_length
    t = torch.arange(length, dtype=torch.float32) / encoder.spec.sample_rate
    frames = torch.stack([0.5 * torch.sin(2 * math.pi * 440.0 * t), torch.zeros(length)]).unsqueeze(1)
    try:
        with torch.inference_mode():
            out = encoder(frames, layer=layer)
    except CustomModelError:
        raise
    except Exception as err:
        raise CustomModelError(f"{encoder.where}: the module failed on a batch of 2 frames of {length} samples "
                               f"(layer {layer}) with {type(err).__name__}: {err}; it must map (B, {length}) "
                               f"frames to (B, D) vectors (check frame_length and the layer argument)") from None
    if not torch.isfinite(out).all():
        raise CustomModelError(f"{encoder.where}: the module returned NaN or infinite values for a sine and for "
                               f"silence (layer {layer}); fix its forward (e.g. a division by a zero norm)")
    return out.shape[1]
