"""Writing TensorFlow V2 checkpoints with numpy only, for tests: checkpoint folders laid out as
a release (musicnn's MSD_musicnn_big, whose data file is not available here) with weights of our
choosing. The layout is the one `tunemir.tf_checkpoint` reads (see its docstring): the data shard
holds the tensors' little-endian bytes back to back in key order, the index a one-block table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunemir.tf_checkpoint import _TABLE_MAGIC, crc32c

# numpy -> tensorflow/core/framework/types.proto (strings are not written).
_DTYPE_CODES = {np.dtype(t): code for t, code in [(np.float32, 1), (np.float64, 2), (np.int32, 3), (np.uint8, 4),
                                                  (np.int16, 5), (np.int8, 6), (np.int64, 9), (np.bool_, 10),
                                                  (np.float16, 19)]}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow's crc masking (the inverse of `tunemir.tf_checkpoint.unmask_crc`)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _block(records: list[tuple[bytes, bytes]]) -> bytes:
    """A table block, every record a restart point (no shared key prefixes)."""
    body, restarts = bytearray(), []
    for key, value in records:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    for offset in restarts or [0]:
        body += offset.to_bytes(4, "little")
    body += len(restarts or [0]).to_bytes(4, "little")
    return bytes(body)


def _with_trailer(block: bytes) -> bytes:
    typed = block + b"\x00"  # uncompressed
    return typed + mask_crc(crc32c(typed)).to_bytes(4, "little")


def write_checkpoint(prefix: Path | str, variables: dict[str, np.ndarray]) -> None:
    """Write `prefix.index` and `prefix.data-00000-of-00001` holding `variables` (numeric or
    bool arrays). `prefix` may end in "/" (musicnn's releases use an empty file stem)."""
    data, records = bytearray(), []
    header = _field(1, 1) + _field(3, _field(1, 1))  # num_shards 1, little-endian, version {producer 1}
    records.append((b"", header))
    for name in sorted(variables):
        array = np.asarray(variables[name], order="C")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = b"".join(_field(2, _field(1, int(n))) for n in array.shape)
        entry = (_field(1, _DTYPE_CODES[array.dtype]) + (_field(2, shape) if shape else b"") +
                 (_field(4, len(data)) if data else b"") + _field(5, len(raw)) +
                 _varint(6 << 3 | 5) + mask_crc(crc32c(raw)).to_bytes(4, "little"))
        records.append((name.encode("utf-8"), entry))
        data += raw
    table = bytearray()
    data_block = _with_trailer(_block(records))
    data_handle = _varint(0) + _varint(len(data_block) - 5)
    table += data_block
    meta_offset, meta_block = len(table), _with_trailer(_block([]))
    table += meta_block
    index_offset = len(table)
    index_block = _with_trailer(_block([(records[-1][0], data_handle)]))
    table += index_block
    handles = (_varint(meta_offset) + _varint(len(meta_block) - 5) +
               _varint(index_offset) + _varint(len(index_block) - 5))
    table += handles.ljust(40, b"\x00") + _TABLE_MAGIC.to_bytes(8, "little")
    Path(f"{prefix}.index").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    Path(f"{prefix}.index").write_bytes(bytes(table))
