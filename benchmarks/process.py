"""Decoding throughput of `tunemir data process`: MTT-like MP3 sources -> 16-bit WAV.

Writes N synthetic 29-second 16 kHz mono MP3s (MagnaTagATune's format) once, then times the
decode-and-write stage with 1 and with all decoding processes, reporting clips/s and
audio-seconds/s. Usage: python benchmarks/process.py [--clips 200] [--jobs 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tunemir.datasets.builders import Clip, Job
from tunemir.datasets.process import _decode_all
from tunemir.testing import write_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=29.124)
    parser.add_argument("--jobs", default=f"1,{os.cpu_count()}")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunemir-bench-process-"))
    try:
        sources = [write_audio(work / "src" / f"{i:05d}.mp3", args.seconds, 16000, seed=i) for i in range(args.clips)]
        jobs = [Job(path, (Clip(path.stem),)) for path in sources]
        rows = []
        for n in (int(j) for j in args.jobs.split(",")):
            out = work / f"wav-{n}"
            out.mkdir()
            lengths: dict = {}
            start = time.perf_counter()
            failed = _decode_all(jobs, out, n, False, lengths)
            seconds = time.perf_counter() - start
            assert not failed and len(lengths) == args.clips
            rows.append({"jobs": n, "seconds": round(seconds, 2), "clips_per_s": round(args.clips / seconds, 1),
                         "audio_s_per_s": round(args.clips * args.seconds / seconds, 1)})
            print(json.dumps(rows[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
