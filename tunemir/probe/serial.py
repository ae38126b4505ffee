"""jukemir's probe training loop, one config at a time, written plainly.

This is the reference the vectorised trainer is tested against and the baseline
`benchmarks/probe.py` measures: `nn.Module` MLP, `torch.optim.Adam`, sklearn's
`StandardScaler`, `random.sample` minibatches and the exact (scikit-learn / mir_eval)
metrics at every early-stopping check, as in jukemir's `ProbeExperiment`.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch import nn

from tunemir.probe.config import ProbeConfig
from tunemir.probe.data import ProbeData, Scaler, layer_names
from tunemir.probe.metrics import evaluate, task_loss
from tunemir.probe.train import ProbeResult


class SimpleMLP(nn.Module):
    """jukemir's probe: dropout on the input, then Linear-ReLU-dropout per hidden size, then Linear."""

    def __init__(self, dim: int, hidden: tuple[int, ...], num_outputs: int, dropout_p: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout_p)
        sizes = (dim, *hidden, num_outputs)
        for name, d_in, d_out in zip(layer_names(len(hidden)), sizes[:-1], sizes[1:]):
            self.add_module(name, nn.Linear(d_in, d_out))
        self.names = layer_names(len(hidden))

    def forward(self, x):
        x = self.dropout(x)
        for name in self.names[:-1]:
            x = self.dropout(torch.relu(getattr(self, name)(x)))
        return getattr(self, self.names[-1])(x)


def train_serial(data: ProbeData, config: ProbeConfig, max_steps: int | None = None) -> ProbeResult:
    """Train one config exactly as jukemir's loop does (on CPU); `max_steps` cuts it short (benchmarks)."""
    random.seed(config["seed"])
    torch.manual_seed(config["seed"])
    task = data.task
    model = SimpleMLP(data.dim, config.hidden, task.num_outputs, config["dropout_p"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["l2_weight_decay"] or 0.0)
    train, valid = data.splits["train"], data.splits["valid"]
    scaler = Scaler.fit(train.features, config["data_standardization"])
    valid_x = torch.from_numpy(scaler.transform(valid.features))
    sign = -1.0 if config["early_stopping_metric"].startswith("-") else 1.0
    metric = config["early_stopping_metric"].lstrip("-")
    batch = min(int(config["batch_size"]), len(train.uids))
    best_score, best_state, best_eval, boredom, evals, step = -np.inf, None, None, 0, 0, 0
    reason = "max_steps"
    while max_steps is None or step < max_steps:
        if config["max_num_epochs"] is not None and step * batch / len(train.uids) > config["max_num_epochs"]:
            reason = "max_num_epochs"
            break
        if config["early_stopping"] and step % config["early_stopping_eval_frequency"] == 0:
            if boredom >= config["early_stopping_boredom"]:
                if best_state is not None:
                    model.load_state_dict(best_state)
                reason = "early_stopping"
                break
            model.eval()
            with torch.no_grad():
                logits = model(valid_x).numpy()
            score = sign * evaluate(task, valid.uids, valid.targets, logits)[metric]
            if np.isnan(score):
                raise ValueError("NaN score")
            if score > best_score:
                best_score, best_state, best_eval, boredom = score, copy.deepcopy(model.state_dict()), evals, 0
            else:
                boredom += 1
            evals += 1
            model.train()
        idx = random.sample(range(len(train.uids)), batch)
        x = torch.from_numpy(scaler.transform(train.features[idx]))
        y = torch.from_numpy(train.targets[idx])
        optimizer.zero_grad()
        task_loss(task, model(x), y).backward()
        optimizer.step()
        step += 1
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ProbeResult(config, state, scaler, steps=step, evals=evals, best_eval=best_eval,
                       best_score=float(sign * best_score), stop_reason=reason)
