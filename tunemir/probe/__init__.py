"""Linear and MLP probes on fixed representations with jukemir's protocol, a whole grid at once."""

from tunemir.probe.config import GRIDS, ProbeConfig, grid_configs, uid_digest
from tunemir.probe.data import ProbeData, ProbeDataError, ProbeDirs, cache_dir, load_probe_data
from tunemir.probe.metrics import evaluate
from tunemir.probe.runs import GridError, TrainSummary, read_configs, select_best, train_pending, write_grid
from tunemir.probe.tasks import BUILTIN_TASKS, Task, TaskError, load_task
from tunemir.probe.train import ProbeResult, train_grid

__all__ = [
    "GRIDS", "ProbeConfig", "grid_configs", "uid_digest", "ProbeData", "ProbeDataError", "ProbeDirs",
    "cache_dir", "load_probe_data", "evaluate", "GridError", "TrainSummary", "read_configs", "select_best",
    "train_pending", "write_grid", "BUILTIN_TASKS", "Task", "TaskError", "load_task", "ProbeResult", "train_grid",
]
