"""Reading `torch.save` files without running pickled code: a restricted unpickler.

A pickle is a program: GLOBAL names an object, REDUCE/NEWOBJ/BUILD call or fill it. Here every
GLOBAL resolves either to a vetted tensor or container builder, to an inert stand-in (argparse
`Namespace`, Lightning's `AttributeDict`) or, for anything else, to an opaque marker: a class
that may sit in the data (old Lightning keys `callbacks` by callback class) but refuses to be
called, instantiated or filled. So `os.system`, `builtins.eval` or a Lightning callback class
can be named by a file, never run.

`torch.load(weights_only=True)` cannot read such files: it allowlists builders but fills only
exact dicts, and refuses a class that is merely a dict key.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import pathlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

__all__ = ["RefusedObject", "NotACheckpoint", "load", "opaque_name"]


class RefusedObject(pickle.UnpicklingError):
    """The file asked to build a Python object that is not allowlisted; `name` is its GLOBAL."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"GLOBAL {name} may not be built{detail}")
        self.name = name


class NotACheckpoint(ValueError):
    """The file is not a `torch.save` file (or not an intact one); `fix` says what to do."""

    def __init__(self, reason: str, fix: str = "check the download (is it complete?)") -> None:
        super().__init__(reason)
        self.fix = fix


#: How a pre-1.6 torch.save file starts: protocol 2, then torch's magic number as a LONG1.
_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:]


# --- stand-ins: what a checkpoint may legitimately hold besides tensors ---

def _plain_state(state: object, name: str) -> dict:
    if not (isinstance(state, dict) and all(type(k) is str for k in state)):
        raise RefusedObject(name, " with this state (expected a dict of named fields)")
    return state


class AttributeDict(dict):
    """Stand-in for Lightning's AttributeDict (a dict subclass): SETITEMS fills it, nothing runs."""

    def __setstate__(self, state: object) -> None:  # no BUILD state in real files; refuse odd ones
        self.update(_plain_state(state, "AttributeDict"))


class Namespace(argparse.Namespace):
    """Stand-in for `argparse.Namespace` (CLMR v2 / TUNe `hyper_parameters`): BUILD sets fields."""

    def __setstate__(self, state: object) -> None:
        self.__dict__.update(_plain_state(state, "argparse.Namespace"))


class _Opaque(type):
    """Metaclass of the markers: a marker class is hashable (a dict key) and nothing more."""

    def __call__(cls, *args, **kwargs):
        raise RefusedObject(cls.__qualname__)

    def __repr__(cls) -> str:
        return f"<not built: {cls.__qualname__}>"


def _marker(name: str) -> type:
    def refuse(*args, **kwargs):
        raise RefusedObject(name)

    # __new__ catches NEWOBJ (which bypasses the metaclass), __setstate__ catches BUILD.
    return _Opaque(name, (), {"__new__": refuse, "__setstate__": classmethod(refuse), "__slots__": ()})


def opaque_name(obj: object) -> str | None:
    """The GLOBAL an opaque marker stands for; None for anything else."""
    return obj.__qualname__ if isinstance(obj, _Opaque) else None


# --- tensor builders: torch's rebuild functions with their arguments checked ---

class _StorageType:
    """What `torch.FloatStorage` & co. resolve to: only their dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """One `data/<key>` record as a flat tensor; tensors are strided views of it."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


def _ints(value: object, what: str) -> tuple[int, ...]:
    if not (isinstance(value, (tuple, list, torch.Size)) and all(type(v) is int for v in value)):
        raise NotACheckpoint(f"tensor {what} {value!r} is not a tuple of integers")
    return tuple(value)


def _no_hooks(hooks: object, name: str) -> None:
    if not (isinstance(hooks, dict) and not hooks):
        raise RefusedObject(name, " with backward hooks (torch never saves hooks)")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    name = "torch._utils._rebuild_tensor_v2"
    _no_hooks(hooks, name)
    if metadata:
        raise RefusedObject(name, " with tensor metadata (conjugate/negative bits)")
    if not isinstance(storage, _Storage) or type(offset) is not int:
        raise NotACheckpoint("a tensor does not point into the file's storages")
    try:  # as_strided checks that the view stays inside the storage
        return torch.as_strided(storage.flat, _ints(size, "size"), _ints(stride, "stride"), offset)
    except RuntimeError as err:
        raise NotACheckpoint(f"a tensor does not fit its storage ({err})") from None


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    _no_hooks(hooks, "torch._utils._rebuild_parameter")
    if not isinstance(data, torch.Tensor) or state:
        raise RefusedObject("torch._utils._rebuild_parameter", " with a non-tensor or extra state")
    return data


#: `torch.Tensor` and `Parameter` as `_rebuild_from_type_v2` names them: markers, never called.
_TENSOR_TYPES = {name: _marker(name) for name in ("torch.Tensor", "torch.nn.parameter.Parameter")}


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensors with Python attributes / Parameters in newer torch: (rebuild, type, args, state).
    if func not in _REBUILDERS or new_type not in _TENSOR_TYPES.values() or state:
        raise RefusedObject("torch._tensor._rebuild_from_type_v2", " for a tensor subclass or with state")
    return func(*args)


_REBUILDERS = {_rebuild_tensor_v2, _rebuild_parameter}


def _encode(text: object, encoding: str = "latin1") -> bytes:  # protocol 2 writes bytes this way
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise RefusedObject("_codecs.encode", f" with encoding {encoding!r}")
    return text.encode("latin1")


def _checked(build, name: str, types: tuple[type, ...]):
    def call(*args):
        if not all(isinstance(a, types) for a in args):
            raise RefusedObject(name, f" from {', '.join(type(a).__name__ for a in args)}")
        return build(*args)

    return call


_DTYPE_OF_STORAGE = {name: dtype for dtype, name in torch.storage._dtype_to_storage_type_map().items()}

#: GLOBAL name -> what it resolves to. Builtin containers only ever see objects this module made.
_ALLOWED: dict[str, object] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex, "_codecs.encode": _encode,
    "builtins.bytearray": _checked(bytearray, "builtins.bytearray", (str, bytes, list)),  # not bytearray(10**12)
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    **_TENSOR_TYPES,
    "torch.Size": _checked(torch.Size, "torch.Size", (list, tuple)),
    "torch.device": _checked(torch.device, "torch.device", (str, int)),
    "torch.UntypedStorage": _StorageType(torch.uint8),
    **{f"torch.{name}": _StorageType(dtype) for name, dtype in _DTYPE_OF_STORAGE.items()},
    **{f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
    "argparse.Namespace": Namespace,
    "pytorch_lightning.utilities.parsing.AttributeDict": AttributeDict,
    "lightning.pytorch.utilities.parsing.AttributeDict": AttributeDict,
    "lightning.fabric.utilities.data.AttributeDict": AttributeDict,
    "lightning_fabric.utilities.data.AttributeDict": AttributeDict,
    **{f"pathlib.{cls}": _checked(pure, f"pathlib.{cls}", (str,))
       for cls, pure in [("PosixPath", pathlib.PurePosixPath), ("PurePosixPath", pathlib.PurePosixPath),
                         ("WindowsPath", pathlib.PureWindowsPath), ("PureWindowsPath", pathlib.PureWindowsPath)]},
}


class _Unpickler(pickle.Unpickler):
    """Resolves GLOBALs through the allowlist (else a marker); storages come from `storage(key, dtype,
    numel)`, a flat tensor of that many elements (None: the pickle may hold no tensors)."""

    def __init__(self, file: BinaryIO, storage: Callable[[str, torch.dtype, int], torch.Tensor] | None) -> None:
        super().__init__(file)
        self._storage = storage
        self._storages: dict[str, _Storage] = {}
        self._markers: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> object:
        # Protocol 2 (torch.save's) records Python 2 names: `__builtin__.set`, `commands.call`.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in _ALLOWED:
            return _ALLOWED[full]
        if full not in self._markers:  # one class per name, so equal keys stay equal
            self._markers[full] = _marker(full)
        return self._markers[full]

    def persistent_load(self, pid: object) -> _Storage:
        # ("storage", storage type, key, location, numel), plus view_metadata (None) before torch 1.6.
        if not (self._storage and isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and type(pid[2]) is str and type(pid[4]) is int
                and pid[4] >= 0 and pid[5:] in ((), (None,))):
            raise NotACheckpoint(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self._storages:
            self._storages[key] = _Storage(self._storage(key, storage_type.dtype, numel))
        return self._storages[key]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _from_bytes(raw: bytes, dtype: torch.dtype, big_endian: bool) -> torch.Tensor:
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    if big_endian and _itemsize(dtype) > 1:
        flat = flat.view(-1, _itemsize(dtype)).flip(1).reshape(-1)
    return flat.view(dtype)


def load(path: Path | str) -> object:
    """What `torch.save` wrote to `path`, built only from the allowlist above (tensors on CPU):
    the zip format of torch >= 1.6 and the earlier stream format.

    Raises `RefusedObject` when the file asks to build anything else and `NotACheckpoint`
    when it is not an intact `torch.save` file.
    """
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PK\x03\x04"):
        return _load_zip(Path(path))
    if head[:1] == b"\x80" and head[2:2 + len(_LEGACY_HEAD)] == _LEGACY_HEAD:
        return _load_legacy(Path(path))
    if head.startswith(b"version https://git-lfs"):
        raise NotACheckpoint("a Git LFS pointer, not the file itself", "run `git lfs pull` or download the file")
    raise NotACheckpoint("an empty file" if not head else f"neither a torch.save zip nor a pre-1.6 torch "
                         f"file (it starts with {head[:16]!r})")


def _load_zip(path: Path) -> object:
    # <folder>/data.pkl is the pickle; <folder>/data/<key> the raw bytes of each storage.
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            records = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(records) != 1:
                inside = [n for n in names if n.endswith((".ckpt", ".pt", ".pth"))]
                fix = f"unzip it and pass {inside[0]}" if inside else "pass the checkpoint itself"
                raise NotACheckpoint("a zip archive that is not a torch.save file (it has no data.pkl)", fix)
            prefix = records[0][: -len("data.pkl")]
            big_endian = f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") == b"big"

            def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
                try:
                    raw = archive.read(f"{prefix}data/{key}")
                except KeyError:
                    raise NotACheckpoint(f"storage data/{key} is missing") from None
                if len(raw) != numel * _itemsize(dtype):
                    raise NotACheckpoint(f"storage data/{key} holds {len(raw)} bytes, not {numel * _itemsize(dtype)}")
                return _from_bytes(raw, dtype, big_endian)

            return _Unpickler(io.BytesIO(archive.read(records[0])), storage).load()
    except zipfile.BadZipFile as err:
        raise NotACheckpoint(f"a damaged zip archive ({err})") from None


def _load_legacy(path: Path) -> object:
    # Pickles of the magic number, protocol version and sys_info; the object, whose storages are
    # filled afterwards; the list of storage keys; then each storage as int64 numel + raw bytes.
    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic, version, sys_info = (_Unpickler(handle, None).load() for _ in range(3))
        if magic != torch.serialization.MAGIC_NUMBER or version != torch.serialization.PROTOCOL_VERSION:
            raise NotACheckpoint(f"a pre-1.6 torch file of unknown version {version!r}")
        big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
        pending: dict[str, tuple[torch.Tensor, torch.dtype]] = {}

        def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if numel * _itemsize(dtype) > size:
                raise NotACheckpoint(f"storage {key} claims {numel} elements, more than the file holds")
            pending[key] = (torch.empty(numel, dtype=dtype), dtype)
            return pending[key][0]

        obj = _Unpickler(handle, storage).load()
        keys = _Unpickler(handle, None).load()
        if not (isinstance(keys, list) and set(keys) == set(pending)):
            raise NotACheckpoint("the storage list does not match the tensors")
        for key in keys:
            flat, dtype = pending[key]
            numel = int.from_bytes(handle.read(8), "big" if big_endian else "little")
            raw = handle.read(numel * _itemsize(dtype))
            if numel != flat.numel() or len(raw) != numel * _itemsize(dtype):
                raise NotACheckpoint(f"storage {key} is truncated")
            flat.copy_(_from_bytes(raw, dtype, big_endian))
    return obj
