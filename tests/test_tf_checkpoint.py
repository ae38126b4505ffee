"""tunemir.tf_checkpoint against checkpoints written and read by TensorFlow itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tunemir.testing import musicnn_wheel
from tunemir.testing.tf_writer import write_checkpoint
from tunemir.tf_checkpoint import TFCheckpointError, _crc32c_python, crc32c, read_checkpoint, read_index

DATA = Path(__file__).parent / "data" / "tf_checkpoint"
TINY = DATA / "tiny"  # written by benchmarks/musicnn_reference.py tf-checkpoint (tf 2.15 Saver)


def _expected() -> dict[str, np.ndarray]:
    with np.load(DATA / "tiny_expected.npz") as npz:
        return {k.replace("__", "/"): npz[k] for k in npz.files}


def test_tiny_checkpoint_equals_what_tensorflow_reads():
    expected = _expected()
    got = read_checkpoint(TINY)
    assert sorted(got) == sorted(expected)
    assert len(got) > 16  # more records than one restart interval: the restart array is used
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_the_test_writer_writes_what_tensorflow_writes(tmp_path):
    # tunemir.testing.tf_writer makes checkpoints in released layouts for tests; its data shard is
    # byte for byte TensorFlow's and its index entries (dtype, shape, offset, size, crc) are TF's.
    variables = read_checkpoint(TINY)
    write_checkpoint(tmp_path / "copy", variables)
    assert (tmp_path / "copy.data-00000-of-00001").read_bytes() == Path(f"{TINY}.data-00000-of-00001").read_bytes()
    assert read_index(tmp_path / "copy") == read_index(TINY)
    back = read_checkpoint(tmp_path / "copy")
    for name, value in variables.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_select_names_and_unknown_name():
    got = read_checkpoint(TINY, names=["half", "counts"])
    assert sorted(got) == ["counts", "half"]
    with pytest.raises(TFCheckpointError, match="no variable.*nope"):
        read_checkpoint(TINY, names=["nope"])


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (65536, 65537, 300001):  # the numpy lane path against the plain loop
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc32c_python(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def _copy(tmp_path: Path) -> Path:
    for path in DATA.glob("tiny.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "tiny"


def test_corrupt_data_is_caught_by_the_checksum(tmp_path):
    prefix = _copy(tmp_path)
    data = tmp_path / "tiny.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match=r"tiny\.data-00000-of-00001: checksum mismatch"):
        read_checkpoint(prefix)
    # Without verification the damaged bytes come through: the check is what caught it.
    assert any(not np.array_equal(v, _expected()[k]) for k, v in read_checkpoint(prefix, verify=False).items())


def test_truncated_data(tmp_path):
    prefix = _copy(tmp_path)
    data = tmp_path / "tiny.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-7])
    with pytest.raises(TFCheckpointError, match=r"tiny\.data-00000-of-00001: truncated"):
        read_checkpoint(prefix)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_index(tmp_path, damage):
    prefix = _copy(tmp_path)
    index = tmp_path / "tiny.index"
    raw = bytearray(index.read_bytes())
    if damage == "truncate":
        raw = raw[:-20]
    elif damage == "flip":
        raw[5] ^= 0x01
    else:
        raw = bytearray()
    index.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match=r"tiny\.index: .*(checksum|truncated|footer)"):
        read_checkpoint(prefix)


def test_missing_files(tmp_path):
    with pytest.raises(TFCheckpointError, match=r"absent\.index: cannot read.*prefix"):
        read_checkpoint(tmp_path / "absent")
    prefix = _copy(tmp_path)
    (tmp_path / "tiny.data-00000-of-00001").unlink()
    with pytest.raises(TFCheckpointError, match=r"tiny\.data-00000-of-00001: cannot read"):
        read_checkpoint(prefix)


@pytest.mark.parametrize("model", ["MSD_musicnn", "MTT_musicnn"])
def test_musicnn_checkpoint_listing_matches_tensorflow(tmp_path, model):
    from tunemir.models.musicnn import extract_wheel_checkpoint

    wheel = musicnn_wheel()
    listing = json.loads((DATA / "musicnn_variables.json").read_text())[model]
    prefix = extract_wheel_checkpoint(wheel, model, tmp_path)
    num_shards, entries = read_index(prefix)
    assert num_shards == 1
    assert sorted(entries) == sorted(listing)
    got = read_checkpoint(prefix)
    for name, info in listing.items():
        assert list(got[name].shape) == info["shape"], name
        assert str(got[name].dtype) == info["dtype"], name
        assert got[name].sum(dtype=np.float64) == pytest.approx(info["sum"], rel=1e-12, abs=1e-12), name
