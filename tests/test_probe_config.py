"""Probe configs and grids: jukemir's fields, validation and uids (reference values from jukemir)."""

import json

import pytest

from tunemir.probe.config import DEFAULTS, PAPER_GRID, ProbeConfig, grid_configs, uid_digest

DATASETS_DIGESTS = {  # sha1 of the 216 sorted uids for <dataset>/jukebox, measured on jukemir
    "gtzan_ff": "1e572cbf9afd32e4cd1ed05827cc00507f5df7fb",
    "giantsteps_clips": "fabe528cfcb40cfc4fa00f34d8296df619c6c6b4",
    "magnatagatune": "bf81ac6f3ca38427b6b1e2b2a1b873c0389ea345",
    "emomusic": "2c9805f3b4929861e6538226cc8ee206062ebf30",
}


def test_default_uid_matches_jukemir_unit_test():
    assert ProbeConfig(dataset="debug", representation="debug").uid() == "931d09133314c180443615815249a7415da09c86"


def test_paper_grid_order_and_uids_match_jukemir():
    grid = grid_configs("gtzan_ff", "jukebox", "paper")
    assert len(grid) == 216
    assert grid[0].uid() == "bef2cd43af61cc375ef1db7713285989a577735f"
    assert grid[215].uid() == "ef3234401d0d9f7ea66236c4fc981016434fc072"
    default = ProbeConfig(dataset="gtzan_ff", representation="jukebox")
    assert default.uid() == "8e316768ad21614fa6154cfa3d76c2a0c27934fb"
    assert default in grid
    assert len({c.uid() for c in grid}) == 216


@pytest.mark.parametrize("dataset", sorted(DATASETS_DIGESTS))
def test_grid_digest_per_dataset(dataset):
    assert uid_digest(grid_configs(dataset, "jukebox")) == DATASETS_DIGESTS[dataset]


def test_grid_is_the_product_in_key_order():
    grid = grid_configs("d", "r")
    # The last key varies fastest, the first slowest (itertools.product).
    assert [c["l2_weight_decay"] for c in grid[:3]] == [None, 1e-4, 1e-3]
    assert {c["data_standardization"] for c in grid[:108]} == {False}
    for config in grid:
        assert set(config) == set(DEFAULTS)
        for key in set(DEFAULTS) - set(PAPER_GRID) - {"dataset", "representation"}:
            assert config[key] == DEFAULTS[key]


def test_canonical_json_is_jukemirs_format():
    text = ProbeConfig(dataset="d", representation="r", hidden_layer_sizes=[512], learning_rate=1e-5).to_json()
    assert '"learning_rate": 1e-05' in text
    assert '"hidden_layer_sizes": [\n    512\n  ]' in text
    assert '"l2_weight_decay": null' in text
    assert json.loads(text)["batch_size"] == 64


@pytest.mark.parametrize("kwargs, message", [
    ({"dataset": "d", "representation": "r", "learning_rat": 1}, "Unknown field"),
    ({"representation": "r"}, "Required field 'dataset' missing"),
    ({"dataset": "d", "representation": "r", "seed": {1, 2}}, "JSON-serializable"),
    ({"dataset": "d", "representation": "r", "early_stopping": False}, "never stop"),
    ({"dataset": "d", "representation": "r", "dropout_p": 1.0}, "dropout_p"),
])
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProbeConfig(**kwargs)


def test_smoke_grid_is_small_and_distinct():
    grid = grid_configs("d", "r", "smoke")
    assert len(grid) == 8 and len({c.uid() for c in grid}) == 8
    with pytest.raises(ValueError, match="unknown grid"):
        grid_configs("d", "r", "huge")
