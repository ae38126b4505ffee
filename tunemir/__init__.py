"""tunemir: raw-waveform music representations (TUNe, TUNe+, CLMR), extracted and probed."""

__version__ = "0.1.0"
