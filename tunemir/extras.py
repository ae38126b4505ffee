"""The pip extras: which optional packages each part of tunemir needs, and the error when one is missing."""

from __future__ import annotations

import importlib.util

#: extra -> the import names tunemir needs from it (pyproject.toml's optional-dependencies).
EXTRAS: dict[str, tuple[str, ...]] = {
    "handcrafted": ("librosa",),
    "train": ("pytorch_lightning", "yaml", "sklearn", "matplotlib", "tensorboard"),
    "probe": ("sklearn", "mir_eval", "matplotlib"),
}


class MissingExtraError(ImportError):
    """An optional dependency group is not installed; the message says how to install it."""

    def __init__(self, extra: str, what: str, missing: list[str]):
        self.extra = extra
        super().__init__(f"{what} needs tunemir's '{extra}' extra (not installed: {', '.join(missing)}). "
                         f"Install it with: pip install 'tunemir[{extra}]'")


def missing(extra: str) -> list[str]:
    """The import names of `extra` that cannot be found (without importing anything)."""
    return [name for name in EXTRAS[extra] if not _findable(name)]


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # an import hook that refuses it; a module without a spec
        return False


def require(extra: str, what: str) -> None:
    """Raise `MissingExtraError` naming `what` (e.g. "tunemir train") unless `extra` is installed."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(extra, what, absent)
