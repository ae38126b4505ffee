"""Length of an MP3 as ffprobe reports it: whole MPEG frames, before gapless trimming.

jukemir cuts GiantSteps songs into 30-second clips at offsets `0, 30, 60, ...` below the
duration ffprobe prints, and every duration in its metadata is a whole number of 1152-sample
frames (e.g. 120.058776 s = 4596 frames at 44.1 kHz). A gapless decoder (libsndfile/mpg123)
reports about 1,100 samples fewer, which would drop the last clip of a 120.0065 s song, so
the clip boundaries are computed from the frame count instead.
"""

from __future__ import annotations

from pathlib import Path

# Bitrates in kbit/s by [MPEG-1?][layer][index]; index 0 (free format) and 15 are invalid.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


class MpegError(ValueError):
    """The file holds no MPEG audio frames."""


def _header(data: bytes, pos: int):
    """(frame bytes, samples per frame, sample rate) of a valid frame header at `pos`, else None."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    bitrate_idx, rate_idx, padding = data[pos + 2] >> 4, (data[pos + 2] >> 2) & 3, (data[pos + 2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_idx] * 1000
    rate = _RATES[version][rate_idx]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384, rate
    samples = 1152 if layer == 2 or mpeg1 else 576
    return samples // 8 * bitrate // rate + padding, samples, rate


def _id3v2_size(data: bytes) -> int:
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def mpeg_frames(path: Path | str) -> tuple[int, int, int]:
    """(audio frames, samples per frame, sample rate) of an MP3 file.

    Uses the Xing/Info/VBRI frame count when the first frame carries one (its own frame
    excluded, as those headers count), else walks the frame headers. A resync skips junk
    between frames; walking stops at the first stretch that is not MPEG audio (e.g. ID3v1).
    """
    data = Path(path).read_bytes()
    pos = _id3v2_size(data)
    while pos < len(data) and _header(data, pos) is None:  # junk before the first frame
        pos += 1
    first = _header(data, pos)
    if first is None:
        raise MpegError(f"{path}: no MPEG audio frame found; the file is not an MP3 or is damaged")
    size, samples, rate = first
    body = data[pos + 4: pos + size]
    for tag in (b"Xing", b"Info"):
        at = body.find(tag)
        if 0 <= at < 40 and body[at + 7] & 1:  # flags: frame count present
            return int.from_bytes(body[at + 8: at + 12], "big"), samples, rate
    if body[32:36] == b"VBRI":
        return int.from_bytes(body[32 + 14: 32 + 18], "big"), samples, rate
    frames = 0
    while pos < len(data):
        header = _header(data, pos)
        if header is None or header[2] != rate:
            nxt = data.find(b"\xff", pos + 1)
            if nxt < 0 or data[pos:pos + 3] == b"TAG":
                break
            pos = nxt
            continue
        frames += 1
        pos += header[0]
    return frames, samples, rate


def mpeg_duration(path: Path | str) -> float:
    """Seconds of whole MPEG frames in `path` (ffprobe's `format=duration` for these files)."""
    frames, samples, rate = mpeg_frames(path)
    return frames * samples / rate
