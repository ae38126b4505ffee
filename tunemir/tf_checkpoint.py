"""Reading TensorFlow V2 checkpoints (`PREFIX.index` + `PREFIX.data-*`) with numpy only.

The `.index` file is a LevelDB-style table (tensorflow/core/lib/io/table): data blocks of
prefix-compressed `key -> value` records with a restart array, an index block pointing at
them and a 48-byte footer. Key "" holds a `BundleHeaderProto`; every other key is a variable
name whose value is a `BundleEntryProto` (dtype, shape, shard, offset, size, masked crc32c)
locating the tensor's raw little-endian bytes in a data shard. tensorflow is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c

# tensorflow/core/framework/types.proto -> numpy (bfloat16 is widened to float32 on read).
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    7: object, 8: np.complex64, 9: np.int64, 10: np.bool_, 14: "bfloat16", 17: np.uint16,
    18: np.complex128, 19: np.float16, 22: np.uint32, 23: np.uint64,
}
_DT_STRING = 7


class TFCheckpointError(Exception):
    """A TensorFlow checkpoint that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable lives: its dtype code, shape and byte range in a data shard."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as TensorFlow stores it


# ---------------------------------------------------------------- crc32c (Castagnoli)

def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()
_CRC_TABLE_LIST = [int(v) for v in _CRC_TABLE]


def _crc32c_python(data: bytes, crc: int = 0) -> int:
    """Raw reflected CRC register update (no init/final xor)."""
    table = _CRC_TABLE_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc32c(data: bytes) -> int:
    """The standard crc32c of `data` (crc32c(b"123456789") == 0xE3069283).

    Large inputs run as many independent lanes in numpy; the lanes are joined using the
    linearity of the CRC (the register after L zero bytes is a fixed GF(2)-linear map).
    """
    n = len(data)
    if n < 65536:
        return _crc32c_python(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    buf = np.frombuffer(data, np.uint8).copy()
    buf[:4] ^= 0xFF  # init 0xFFFFFFFF == complementing the first 4 bytes with init 0
    lanes = 4096
    length = -(-n // lanes)
    # Leading zero bytes leave a zero register unchanged, so pad in front.
    padded = np.zeros(lanes * length, np.uint8)
    padded[lanes * length - n:] = buf
    block = padded.reshape(lanes, length)
    # 32 extra lanes carry the basis vectors through `length` zero bytes: the shift map's columns.
    state = np.concatenate([np.zeros(lanes, np.uint32), (np.uint32(1) << np.arange(32, dtype=np.uint32))])
    data_cols = np.concatenate([block, np.zeros((32, length), np.uint8)]).T.copy()
    for column in data_cols:
        state = _CRC_TABLE[(state ^ column) & 0xFF] ^ (state >> 8)
    lane_crcs, shift_cols = state[:lanes], state[lanes:]
    # Byte tables of the shift map: shift(x) = T0[x & 255] ^ T1[x >> 8 & 255] ^ ...
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # (256, 8)
    tables = []
    for b in range(4):
        cols = shift_cols[8 * b:8 * b + 8]
        tables.append([int(v) for v in np.bitwise_xor.reduce(np.where(bits == 1, cols, 0).astype(np.uint32), axis=1)])
    t0, t1, t2, t3 = tables
    acc = 0
    for lane in lane_crcs.tolist():
        acc = t0[acc & 0xFF] ^ t1[(acc >> 8) & 0xFF] ^ t2[(acc >> 16) & 0xFF] ^ t3[acc >> 24] ^ lane
    return acc ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Undo LevelDB/TensorFlow's crc masking (rotate right 15 after subtracting a constant)."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf / varints

def _varint(buf: bytes, pos: int, path: Path) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError(f"{path}: truncated varint; the file is damaged, re-copy it")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError(f"{path}: malformed varint; the file is damaged, re-copy it")


def _fields(buf: bytes, path: Path):
    """Yield (field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, path)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, path)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos, path)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise TFCheckpointError(f"{path}: unsupported protobuf wire type {wire}; not a TF V2 checkpoint index")
        if pos > len(buf):
            raise TFCheckpointError(f"{path}: truncated protobuf record; the file is damaged, re-copy it")
        yield number, wire, value


def _parse_entry(name: str, value: bytes, path: Path) -> TensorEntry:
    dtype, shape, shard, offset, size, crc = 0, [], 0, 0, 0, None
    for number, _, field in _fields(value, path):
        if number == 1:
            dtype = field
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}; bool unknown_rank = 3
            for sub, _, dim in _fields(field, path):
                if sub == 2:
                    dim_size = next((v for n, _, v in _fields(dim, path) if n == 1), 0)
                    shape.append(dim_size - (1 << 64) if dim_size >= 1 << 63 else dim_size)
        elif number == 3:
            shard = field
        elif number == 4:
            offset = field
        elif number == 5:
            size = field
        elif number == 6:
            crc = field
        elif number == 7:
            raise TFCheckpointError(f"{path}: variable {name!r} is saved in slices (partitioned); "
                                    "tunemir reads only whole tensors")
    return TensorEntry(name, dtype, tuple(shape), shard, offset, size, crc)


# ---------------------------------------------------------------- table (SSTable) blocks

def _block_handle(buf: bytes, pos: int, path: Path) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, path)
    size, pos = _varint(buf, pos, path)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(data):
        raise TFCheckpointError(f"{path}: truncated (a block ends past the end of the file); re-copy it")
    block = data[offset:end]
    kind = data[end]
    stored = int.from_bytes(data[end + 1:end + 5], "little")
    # The block crc covers the contents and the compression byte.
    if unmask_crc(stored) != crc32c(data[offset:end + 1]):
        raise TFCheckpointError(f"{path}: block checksum mismatch at byte {offset}; the file is corrupt, re-copy it")
    if kind != 0:
        raise TFCheckpointError(f"{path}: block compression type {kind} is not supported (only uncompressed)")
    return block


def _block_records(block: bytes, path: Path):
    """Yield (key, value) of one block, undoing the shared-prefix compression."""
    if len(block) < 4:
        raise TFCheckpointError(f"{path}: block too short; the file is corrupt, re-copy it")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise TFCheckpointError(f"{path}: bad restart array; the file is corrupt, re-copy it")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, path)
        unshared, pos = _varint(block, pos, path)
        value_len, pos = _varint(block, pos, path)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise TFCheckpointError(f"{path}: bad record in a block; the file is corrupt, re-copy it")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def read_index(prefix: Path | str) -> tuple[int, dict[str, TensorEntry]]:
    """Parse `PREFIX.index`: (number of data shards, {variable name: TensorEntry})."""
    path = Path(f"{prefix}.index")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TFCheckpointError(f"{path}: cannot read the checkpoint index ({err.strerror}); "
                                "pass the checkpoint prefix, e.g. DIR/model.ckpt for DIR/model.ckpt.index") from None
    if len(data) < _FOOTER_SIZE or int.from_bytes(data[-8:], "little") != _TABLE_MAGIC:
        raise TFCheckpointError(f"{path}: not a TensorFlow V2 checkpoint index (bad footer magic) or truncated")
    footer = data[-_FOOTER_SIZE:]
    _, _, pos = _block_handle(footer, 0, path)  # metaindex block: unused by TF bundles
    index_offset, index_size, _ = _block_handle(footer, pos, path)
    num_shards, entries = 1, {}
    for _, handle in _block_records(_read_block(data, index_offset, index_size, path), path):
        offset, size, _ = _block_handle(handle, 0, path)
        for key, value in _block_records(_read_block(data, offset, size, path), path):
            if key == b"":
                for number, _, field in _fields(value, path):
                    if number == 1:
                        num_shards = field
                    elif number == 2 and field != 0:
                        raise TFCheckpointError(f"{path}: big-endian checkpoint; only little-endian is supported")
                continue
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value, path)
    return num_shards, entries


def _decode(entry: TensorEntry, raw: bytes, path: Path) -> np.ndarray:
    if entry.dtype not in _DTYPES:
        raise TFCheckpointError(f"{path}: variable {entry.name!r} has unsupported TensorFlow dtype {entry.dtype}")
    count = int(np.prod(entry.shape, dtype=np.int64))
    dtype = _DTYPES[entry.dtype]
    if entry.dtype == _DT_STRING:
        # varint64 lengths, a 4-byte crc of the lengths, then the bytes back to back.
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = _varint(raw, pos, path)
            lengths.append(length)
        pos += 4
        out = np.empty(count, object)
        for i, length in enumerate(lengths):
            out[i], pos = raw[pos:pos + length], pos + length
        return out.reshape(entry.shape)
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(entry.shape)
    array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
    if array.size != count:
        raise TFCheckpointError(f"{path}: variable {entry.name!r} has {array.size} values for shape {entry.shape}; "
                                "the checkpoint is corrupt")
    return array.astype(np.dtype(dtype), copy=True).reshape(entry.shape)


def read_checkpoint(prefix: Path | str, names: list[str] | None = None,
                    verify: bool = True) -> dict[str, np.ndarray]:
    """Read a TF V2 checkpoint's variables as numpy arrays: `{name: array}`.

    `prefix` is what `tf.train.Saver.save` returned (files `prefix.index`,
    `prefix.data-00000-of-00001`, ...). `names` selects variables (default: all). With
    `verify`, each tensor's crc32c is checked against the index (about 0.1 s per 10 MB).
    """
    index_path = Path(f"{prefix}.index")
    num_shards, entries = read_index(prefix)
    if names is not None:
        missing = [n for n in names if n not in entries]
        if missing:
            raise TFCheckpointError(f"{index_path}: no variable(s) {missing}; it has {sorted(entries)[:20]}...")
        entries = {n: entries[n] for n in names}
    shards: dict[int, bytes] = {}
    out = {}
    for name, entry in entries.items():
        if entry.shard not in shards:
            shard_path = Path(f"{prefix}.data-{entry.shard:05d}-of-{num_shards:05d}")
            try:
                shards[entry.shard] = shard_path.read_bytes()
            except OSError as err:
                raise TFCheckpointError(f"{shard_path}: cannot read the checkpoint data ({err.strerror}); "
                                        "keep the .data-* files next to the .index file") from None
        data = shards[entry.shard]
        shard_path = Path(f"{prefix}.data-{entry.shard:05d}-of-{num_shards:05d}")
        if entry.offset + entry.size > len(data):
            raise TFCheckpointError(f"{shard_path}: truncated ({len(data)} bytes, variable {name!r} ends at "
                                    f"{entry.offset + entry.size}); re-copy the checkpoint")
        raw = data[entry.offset:entry.offset + entry.size]
        if verify and entry.crc32c is not None and entry.dtype != _DT_STRING:
            if crc32c(raw) != unmask_crc(entry.crc32c):
                raise TFCheckpointError(f"{shard_path}: checksum mismatch for variable {name!r}; "
                                        "the checkpoint is corrupt, re-copy it")
        out[name] = _decode(entry, raw, shard_path)
    return out
