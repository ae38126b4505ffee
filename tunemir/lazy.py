"""Names a package exports but imports on first use (PEP 562), so that importing the package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, table: dict[str, str], names: Callable[[], dict]) -> tuple[Callable, Callable]:
    """(`__getattr__`, `__dir__`) for `package`: each name of `table` (name -> the module defining it)
    is imported from its module when first asked for; `names` is the package's `globals`."""

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*names(), *table})

    return __getattr__, __dir__
