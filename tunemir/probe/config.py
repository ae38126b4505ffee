"""Probe configurations compatible with jukemir's `ProbeExperimentConfig`, and the named grids."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable

#: jukemir's fields and defaults, in its order; `dataset` and `representation` are required.
DEFAULTS: dict = {
    "dataset": None,
    "representation": None,
    "data_standardization": True,
    "hidden_layer_sizes": [],
    "batch_size": 64,
    "learning_rate": 1e-3,
    "dropout_input": True,
    "dropout_p": 0.5,
    "l2_weight_decay": None,
    "max_num_epochs": None,
    "early_stopping_metric": "primary",
    "early_stopping": True,
    "early_stopping_eval_frequency": 8,
    "early_stopping_boredom": 256,
    "seed": 0,
}
REQUIRED = ("dataset", "representation")

#: jukemir's `_PAPER_GRID`: the product in this key order gives its 216 configs in its order.
PAPER_GRID: dict[str, list] = {
    "data_standardization": [False, True],
    "hidden_layer_sizes": [[], [512]],
    "batch_size": [64, 256],
    "learning_rate": [1e-5, 1e-4, 1e-3],
    "dropout_p": [0.25, 0.5, 0.75],
    "l2_weight_decay": [None, 1e-4, 1e-3],
}

#: Eight configs that exercise every code path (both architectures, standardisation on and
#: off, coupled L2) and stop after 32 evaluations without improvement instead of 256, so CI
#: and the demo finish in seconds. Not a protocol for results.
SMOKE_GRID: dict[str, list] = {
    "data_standardization": [False, True],
    "hidden_layer_sizes": [[], [32]],
    "learning_rate": [1e-3],
    "dropout_p": [0.25],
    "l2_weight_decay": [None, 1e-3],
    "early_stopping_boredom": [32],
}

GRIDS = {"paper": PAPER_GRID, "smoke": SMOKE_GRID}


class ProbeConfig(dict):
    """One probe's hyperparameters: a dict with jukemir's 15 fields, defaults and uid.

    Validation mirrors jukemir: unknown fields, missing required fields and values that are
    not JSON-serialisable raise `ValueError`. `uid()` is jukemir's (sha1 of the indent-2,
    sorted-keys JSON), so configs and result folders are interchangeable with jukemir's.
    """

    def __init__(self, *args, **kwargs):
        given = dict(*args, **kwargs)
        for key in given:
            if key not in DEFAULTS:
                raise ValueError(f"Unknown field {key!r}; valid fields: {', '.join(DEFAULTS)}")
        for key in REQUIRED:
            if given.get(key) is None:
                raise ValueError(f"Required field {key!r} missing")
        super().__init__({**DEFAULTS, **given})
        try:
            json.dumps(self)
        except (TypeError, ValueError):
            raise ValueError("All values must be JSON-serializable") from None
        self._check_values()

    def _check_values(self) -> None:
        # Beyond jukemir: catch configs that would crash or never stop, before any training.
        if not self["early_stopping"] and self["max_num_epochs"] is None:
            raise ValueError(f"config {self.uid()}: early_stopping is off and max_num_epochs is null, "
                             "so training would never stop; set one of them")
        if not 0 <= self["dropout_p"] < 1:
            raise ValueError(f"config {self.uid()}: dropout_p must be in [0, 1), got {self['dropout_p']}")
        if int(self["batch_size"]) < 1 or float(self["learning_rate"]) <= 0:
            raise ValueError(f"config {self.uid()}: batch_size and learning_rate must be positive")

    def to_json(self) -> str:
        """The canonical text: indent 2, sorted keys (what the uid hashes and cfg.json holds)."""
        return json.dumps(self, indent=2, sort_keys=True)

    def uid(self) -> str:
        """jukemir's config id: sha1 hex of `to_json()`."""
        return hashlib.sha1(self.to_json().encode("utf-8")).hexdigest()

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(h) for h in self["hidden_layer_sizes"])


def grid_configs(dataset: str, representation: str, grid: str | dict[str, list] = "paper",
                 **overrides) -> list[ProbeConfig]:
    """The configs of a named grid (or a `{field: values}` dict) for one dataset/representation,
    in `itertools.product` order over the grid's keys, as jukemir builds them."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
        grid = GRIDS[grid]
    keys = list(grid)
    return [ProbeConfig(dataset=dataset, representation=representation, **overrides, **dict(zip(keys, values)))
            for values in itertools.product(*(grid[k] for k in keys))]


def uid_digest(configs: Iterable[ProbeConfig]) -> str:
    """sha1 of the sorted uids joined by newlines: one fingerprint for a whole grid."""
    return hashlib.sha1("\n".join(sorted(c.uid() for c in configs)).encode()).hexdigest()
