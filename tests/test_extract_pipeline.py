"""The frame batcher and progress reporting of tunemir.extract.pipeline."""

from __future__ import annotations

import logging

import numpy as np
import torch

from tunemir.audio import FRAME_LENGTH
from tunemir.extract import pipeline
from tunemir.extract.pipeline import FrameAverager, Progress, Stats
from tunemir.testing import tiny_model


def test_frame_averager_batches_across_files_and_drops_failed_ones():
    model = tiny_model("tune", seed=1)
    frames = {job: torch.randn(n, FRAME_LENGTH) for job, n in [(0, 3), (1, 4), (2, 5)]}
    done: dict[int, np.ndarray] = {}
    averager = FrameAverager(model, torch.device("cpu"), 2, 4, lambda job, v: done.setdefault(job, v), Stats())
    averager.add(0, frames[0])
    averager.add(1, frames[1][:2])  # 5 frames queued: one batch of 4 runs, job 1 is split
    averager.end(0, ok=True)
    averager.add(2, frames[2])
    averager.end(2, ok=False)  # job 2 failed mid-file: its queued frames must not be encoded
    averager.add(1, frames[1][2:])
    averager.end(1, ok=True)
    averager.flush()
    assert sorted(done) == [0, 1]
    with torch.no_grad():
        for job in (0, 1):
            expected = model(frames[job].unsqueeze(1), layer=2).mean(dim=0).numpy()
            np.testing.assert_allclose(done[job], expected, rtol=1e-5, atol=1e-6)
            assert done[job].dtype == np.float32


def test_progress_logs_when_not_on_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(pipeline, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    progress = Progress(total=3, desc="extract test", enabled=None)
    with caplog.at_level(logging.INFO, logger="tunemir.extract.pipeline"):
        progress.update(audio_seconds=30.0)
    progress.close()
    assert "1/3 files" in caplog.text and "files/s" in caplog.text and "audio-s/s" in caplog.text
