"""tunemir: raw-waveform music representations (TUNe, TUNe+, CLMR), extracted and probed.

`tunemir.load_model` and `tunemir.embed` (`tunemir.api`) run the models on audio in memory; they
are imported on first use, so `import tunemir` stays light.
"""

from tunemir.lazy import lazy_attributes

__version__ = "0.1.0"
__all__ = ["Model", "embed", "load_model"]

__getattr__, __dir__ = lazy_attributes(__name__, {name: "tunemir.api" for name in __all__}, globals)
