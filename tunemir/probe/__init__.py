"""Linear and MLP probes on fixed representations with jukemir's protocol, a whole grid at once."""

from tunemir.lazy import lazy_attributes
from tunemir.probe.config import GRIDS, ProbeConfig, grid_configs, uid_digest
from tunemir.probe.data import ProbeData, ProbeDataError, ProbeDirs, cache_dir, load_probe_data
from tunemir.probe.grid import GridError, read_configs, select_best, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS, Task, TaskError, load_task

#: What needs torch, imported on first use (PEP 562), so that importing any probe module (the
#: CLI's, `tunemir.probe.data` for `tunemir data`) does not import torch: name -> module.
_TORCH_ATTRIBUTES = {"evaluate": "tunemir.probe.metrics", "TrainSummary": "tunemir.probe.runs",
                     "train_pending": "tunemir.probe.runs", "ProbeResult": "tunemir.probe.train",
                     "train_grid": "tunemir.probe.train"}
__getattr__, __dir__ = lazy_attributes(__name__, _TORCH_ATTRIBUTES, globals)


__all__ = [
    "GRIDS", "ProbeConfig", "grid_configs", "uid_digest", "ProbeData", "ProbeDataError", "ProbeDirs",
    "cache_dir", "load_probe_data", "evaluate", "GridError", "TrainSummary", "read_configs", "select_best",
    "train_pending", "write_grid", "BUILTIN_TASKS", "Task", "TaskError", "load_task", "ProbeResult", "train_grid",
]
