"""Train every probe config of a grid at once: stacked weights, one vectorised Adam, batched
early stopping. Each config follows jukemir's training loop; only the random streams differ.

jukemir's loop, per config (reference/jukemir.md 3.5): seed, build the MLP, Adam with
coupled L2, fit a StandardScaler on train; then at every step: stop if past max_num_epochs;
every `eval_frequency` steps stop if `boredom >= early_stopping_boredom` (restoring the best
weights), else score the full valid split and keep a snapshot on strict improvement; then one
Adam step on `random.sample(range(N), B)`. Here the configs of one architecture and batch
size form a group whose weights are stacked as (M, in, out) tensors, and every step advances
all groups together; a config that stops leaves its group at once.

Random streams: weights start exactly as jukemir's (`torch.manual_seed(seed)`, then the
layers built in order), but minibatches and dropout masks are counter-based draws keyed by the
config's own uid and the step (`tunemir.probe.streams`) instead of Python's `random` and the
per-config torch stream. Runs are statistically equivalent to jukemir's, not bitwise equal,
and a config's run does not depend on which other configs train beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tunemir.probe.batched_metrics import SplitMetrics, per_probe_loss
from tunemir.probe.config import ProbeConfig
from tunemir.probe.data import ProbeData, Scaler, layer_names
from tunemir.probe.streams import Streams, config_key

log = logging.getLogger(__name__)
BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as jukemir uses
EPS = 1e-8
#: Where per-(lr, L2) fused Adam calls beat one stacked update (measured on the CPU only).
FUSED_ADAM_DEVICES = ("cpu",)
#: The private kernel behind `torch.optim.Adam(fused=True)`; other torch builds may lack it.
FUSED_ADAM_OP = "_fused_adam_"
#: The training products' dtypes (`--precision`): bf16 runs the minibatch products and activations
#: in bfloat16 (AMX tiles on recent Xeons, tensor cores on GPUs) with float32 master weights,
#: gradients, Adam state, losses and every evaluation.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
CHUNK_BYTES = 32 << 20  # configs per CPU training chunk: ~8 of the 512-unit MLPs on 512-d features
#: At most this many configs per CPU chunk, whatever their size: a chunk's (m, B, width) activations
#: stay within a few MB, so they are not fresh pages every step (linear probes at batch 256 on
#: 512-d features: 24 ms per step of 54 configs instead of 41; MLPs on 128-d: 64 ms instead of 98).
MAX_CHUNK_CONFIGS = 16


@dataclasses.dataclass
class ProbeResult:
    """One config's trained probe: jukemir `SimpleMLP` state dict and the run's counters."""

    config: ProbeConfig
    state: dict[str, torch.Tensor]
    scaler: Scaler
    steps: int
    evals: int
    best_eval: int | None
    best_score: float
    stop_reason: str
    error: str | None = None


@functools.lru_cache(maxsize=16)
def initial_weights(seed: int, dims: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """jukemir's initial SimpleMLP weights: `torch.manual_seed(seed)`, then `nn.Linear` per layer.

    Returns (weight (out, in), bias (out,)) pairs flattened; the global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:])]
    return tuple(t.detach().clone() for layer in layers for t in (layer.weight, layer.bias))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step: int, buckets: dict[tuple[float, float], list[int]]) -> None:
    """One `torch.optim.Adam(weight_decay=...)` step for stacked rows with per-row lr and L2.

    `buckets` maps (lr, weight_decay) to the rows that use them. Each bucket is one call of
    the fused Adam kernel `torch.optim.Adam(fused=True)` runs, over that bucket's row views:
    one pass over memory instead of a dozen elementwise passes over the whole stack, which
    on a CPU costs more than the matrix products. L2 is coupled (added to the gradient, as
    Adam's `weight_decay`, not AdamW); bias corrections use the shared `step`.
    """
    beta1, beta2 = BETAS
    fused = getattr(torch, FUSED_ADAM_OP)
    steps = torch.tensor(float(step), device=params[0].device)
    for (lr, weight_decay), rows in buckets.items():
        views = [[t[r] for t in tensors for r in rows] for tensors in (params, grads, exp_avgs, exp_avg_sqs)]
        fused(*views, [], [steps] * len(views[0]), lr=lr, beta1=beta1, beta2=beta2,
              weight_decay=weight_decay, eps=EPS, amsgrad=False, maximize=False)


def fused_adam_works(device: torch.device | str) -> bool:
    """Whether `adam_step` can run on `device`: the private op exists in this torch build and
    agrees with `stacked_adam_step` on a tiny problem (it may be missing, refuse the device or
    the dtype, or change its signature in another torch version). Otherwise the stacked
    update, which uses only public tensor ops, trains instead."""
    return _fused_adam_works(torch.device(device), getattr(torch, FUSED_ADAM_OP, None))


@functools.lru_cache(maxsize=8)
def _fused_adam_works(device: torch.device, op) -> bool:  # `op` is only part of the cache key
    if op is None:
        log.info("torch %s has no torch.%s; using the stacked Adam update", torch.__version__, FUSED_ADAM_OP)
        return False
    gen = torch.Generator().manual_seed(0)
    start, grad = (torch.randn(2, 3, 2, generator=gen).to(device) for _ in range(2))
    lr, weight_decay = (torch.tensor(v, device=device).view(2, 1, 1) for v in ([1e-2, 1e-3], [0.0, 1e-2]))
    results = []
    for fused in (True, False):
        param, moments = start.clone(), [torch.zeros_like(start), torch.zeros_like(start)]
        try:
            for step in (1, 2):
                if fused:
                    adam_step([param], [grad.clone()], *([m] for m in moments), step,
                              {(1e-2, 0.0): [0], (1e-3, 1e-2): [1]})
                else:
                    stacked_adam_step([param], [grad.clone()], *([m] for m in moments), step, lr, weight_decay)
        except (RuntimeError, TypeError, NotImplementedError) as err:
            log.info("torch.%s fails on %s (%s); using the stacked Adam update", FUSED_ADAM_OP, device, err)
            return False
        results.append(param)
    if not torch.allclose(*results, rtol=1e-5, atol=1e-7):
        log.info("torch.%s disagrees with the stacked Adam update on %s; using the stacked one", FUSED_ADAM_OP, device)
        return False
    return True


def stacked_adam_step(params, grads, exp_avgs, exp_avg_sqs, step: int, lr: torch.Tensor,
                      weight_decay: torch.Tensor) -> None:
    """The same Adam step as `adam_step`, as a dozen elementwise ops over the whole stacks,
    with `lr` and `weight_decay` of shape (M, 1, 1). On a GPU this is a fixed handful of
    kernel launches whatever the number of configs, which beats per-row fused calls there."""
    beta1, beta2 = BETAS
    bias1 = 1 - beta1 ** step
    bias2_sqrt = math.sqrt(1 - beta2 ** step)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        g = g + weight_decay * p
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / bias2_sqrt).add_(EPS)
        p.sub_((lr / bias1) * m / denom)


class _Group:
    """Configs sharing hidden sizes, batch size and stopping schedule, trained as one stack."""

    def __init__(self, configs: list[ProbeConfig], data: ProbeData, inputs: dict, device, salt: int | None,
                 precision: str = "fp32"):
        self.configs = list(configs)
        self.dtype = PRECISIONS[precision]
        first = configs[0]
        self.batch_size = int(first["batch_size"])
        self.early_stopping = bool(first["early_stopping"])
        self.frequency = int(first["early_stopping_eval_frequency"])
        metric = first["early_stopping_metric"]
        self.sign = -1.0 if metric.startswith("-") else 1.0
        self.metric = metric.lstrip("-")
        self.inputs = inputs
        self.task = data.task
        self.device = device
        self.streams = Streams([config_key(c.uid(), salt) for c in configs], device)
        self.fused_adam = device.type in FUSED_ADAM_DEVICES and fused_adam_works(device)
        self.dims = (data.dim, *first.hidden, data.task.num_outputs)
        self.num_train = len(data.splits["train"].uids)
        m = len(configs)

        def column(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device)

        self.adam = [(float(c["learning_rate"]), float(c["l2_weight_decay"] or 0.0)) for c in configs]
        self.dropout = column([float(c["dropout_p"]) for c in configs]).view(m, 1, 1)
        self.variant = column([int(bool(c["data_standardization"])) for c in configs], torch.long)
        per_config = 16 * sum(a * b for a, b in zip(self.dims[:-1], self.dims[1:]))  # weights, grads, 2 moments
        self.chunk = max(1, min(MAX_CHUNK_CONFIGS, CHUNK_BYTES // per_config)) if device.type == "cpu" else 1 << 30
        self._per_config_views()
        self.patience = column([int(c["early_stopping_boredom"]) for c in configs], torch.long)
        self.max_epochs = column([float(c["max_num_epochs"]) if c["max_num_epochs"] is not None else math.inf
                                  for c in configs], torch.float64)
        self.epoch_capped = any(c["max_num_epochs"] is not None for c in configs)
        self.params = []
        stacks = [initial_weights(int(c["seed"]), self.dims) for c in configs]
        for i in range(len(self.dims) - 1):
            self.params.append(torch.stack([s[2 * i].T for s in stacks]).to(device).contiguous())        # (M, in, out)
            self.params.append(torch.stack([s[2 * i + 1][None] for s in stacks]).to(device).contiguous())  # (M, 1, out)
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.best = [p.clone() for p in self.params]
        self.best_score = torch.full((m,), -math.inf, dtype=torch.float64, device=device)
        self.has_best = torch.zeros(m, dtype=torch.bool, device=device)
        self.boredom = torch.zeros(m, dtype=torch.long, device=device)
        self.best_eval = torch.full((m,), -1, dtype=torch.long, device=device)
        self.evals = 0
        self.step = 0

    @property
    def active(self) -> int:
        return len(self.configs)

    def advance(self) -> list[ProbeResult]:
        """One iteration of jukemir's loop for every config in the group; returns those that stopped."""
        done: list[ProbeResult] = []
        if self.epoch_capped:
            past = self.step * self.batch_size / self.num_train > self.max_epochs
            if past.any():
                done += self._finish(past, restore=False, reason="max_num_epochs")
        if self.early_stopping and self.active and self.step % self.frequency == 0:
            bored = self.boredom >= self.patience
            if bored.any():
                done += self._finish(bored, restore=True, reason="early_stopping")
            if self.active:
                done += self._evaluate()
        if self.active:
            self._train_step()
            self.step += 1
        return done

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, targets: torch.Tensor, rows: slice) -> list[torch.Tensor]:
        """Gradients of the summed per-config losses for the configs `rows`, on training minibatch
        `x` (m, B, D), a fresh copy that is overwritten: input dropout, then Linear(-ReLU-dropout)s.

        Written out rather than taped by autograd, so that every (m, B, width) activation is made
        once and masked in place. Dropout zeroes the inputs of each Linear and the 1/(1-p)
        rescaling is applied to its output before the bias (the same function, and cheaper, as
        outputs are never wider than inputs here); a hidden layer's ReLU and the next dropout
        are one mask. The loss's own gradient comes from autograd on the (m, B, C) logits.
        """
        dtype = self.dtype  # of the products and activations; weights, gradients and Adam stay float32
        params = [p[rows].to(dtype) for p in self.params]
        rescale = self.rescale[rows]
        rescale_lowp = rescale.to(dtype)
        layers = len(params) // 2
        inputs, masks = [], []
        h = x.to(dtype)
        for i in range(layers):
            keep = self._keep(h.shape, rows, layer=i)
            if i > 0:
                keep &= h > 0  # ReLU, then dropout: one mask, kept for the backward pass
            keep = keep.to(dtype)  # converting, then multiplying, is 2x faster than a bool product
            if i > 0:
                masks.append(keep)
            a = h.mul_(keep)
            inputs.append(a)
            h = torch.bmm(a, params[2 * i]).mul_(rescale_lowp).add_(params[2 * i + 1])
        with torch.enable_grad():
            logits = h.float().requires_grad_(True)
            loss = per_probe_loss(self.task.output_type, logits, targets).sum()
            g = torch.autograd.grad(loss, logits)[0].to(dtype)
        grads: list[torch.Tensor] = [None] * len(params)
        for i in reversed(range(layers)):
            grads[2 * i + 1] = g.sum(1, keepdim=True, dtype=torch.float32)
            grads[2 * i] = torch.bmm(inputs[i].transpose(1, 2), g).float().mul_(rescale)
            if i > 0:
                g = torch.bmm(g, params[2 * i].transpose(1, 2)).mul_(rescale_lowp).mul_(masks[i - 1])
        return grads

    def _keep(self, shape, rows: slice, layer: int) -> torch.Tensor:
        """What dropout keeps before Linear `layer`: each element with probability 1 - p of its config.

        A config whose p is a multiple of 1/256 (the paper grid's 0.25, 0.5, 0.75 are) draws one
        random byte per element, compared with 256p: exact, and cheaper than a float; any other
        p draws floats. The choice is the config's own, so its masks never depend on its mates.
        """
        bytes_ = self.byte_rows[rows]
        if bool(bytes_.all()):
            return self.streams.uniform_bytes(self.step, layer, shape, rows) >= self.byte_thresholds[rows]
        if not bool(bytes_.any()):
            return self.streams.uniform(self.step, layer, shape, rows) >= self.dropout[rows]
        index = torch.arange(self.active, device=self.device)[rows]
        keep = torch.empty(shape, dtype=torch.bool, device=self.device)
        for mask, noise, threshold in ((bytes_, self.streams.uniform_bytes, self.byte_thresholds),
                                       (~bytes_, self.streams.uniform, self.dropout)):
            chosen = index[mask]
            keep[mask] = noise(self.step, layer, (len(chosen), *shape[1:]), chosen) >= threshold[chosen]
        return keep

    def logits(self, split: str, params=None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(M', N, C) eval-mode logits on a whole split, for all configs or the chosen `rows`.

        The first layer is one matrix product per input variant (raw or standardised) over all
        configs' weights side by side, so the split is never copied per config.
        """
        params = self.params if params is None else params
        rows = torch.arange(self.active, device=self.device) if rows is None else rows
        features = self.inputs[split]  # (2, N, D): raw and standardised
        n, d = features.shape[1:]
        width = params[0].shape[2]
        chunk = max(1, (1 << 23) // (n * width))
        out = []
        for start in range(0, len(rows), chunk):
            sel = rows[start:start + chunk]
            first = params[0][sel]  # (k, D, H)
            hidden = torch.empty(len(sel), n, width, device=self.device)
            for variant in (0, 1):
                mine = torch.nonzero(self.variant[sel] == variant).flatten()
                if len(mine):
                    weights = first[mine].permute(1, 0, 2).reshape(d, -1)  # (D, k'*H)
                    hidden[mine] = (features[variant] @ weights).view(n, len(mine), width).transpose(0, 1)
            x = hidden + params[1][sel]
            for i in range(2, len(params), 2):
                x = torch.baddbmm(params[i + 1][sel], torch.relu(x), params[i][sel])
            out.append(x)
        return torch.cat(out)

    def _train_step(self) -> None:
        """One Adam step for every config. On a CPU, in chunks of configs whose weights,
        gradients and Adam moments fit in cache together (5-10% faster than the whole stack
        for 512-unit MLPs on the 2-core CPU); on a GPU the chunk is the whole group."""
        idx = self.streams.batches(self.step, self.num_train, self.batch_size)  # (M, B)
        for start in range(0, self.active, self.chunk):
            rows = slice(start, start + self.chunk)
            x = self.inputs["train"][self.variant[rows, None], idx[rows]]  # (m, B, D), a fresh copy
            targets = self.inputs["train_targets"][idx[rows]]
            grads = self.gradients(x, targets, rows)
            with torch.no_grad():
                if not self.fused_adam:
                    stacked_adam_step([p[rows] for p in self.params], grads, [m[rows] for m in self.exp_avgs],
                                      [v[rows] for v in self.exp_avg_sqs], self.step + 1, self.lr[rows],
                                      self.weight_decay[rows])
                    continue
                adam_step([p[rows] for p in self.params], grads, [m[rows] for m in self.exp_avgs],
                          [v[rows] for v in self.exp_avg_sqs], self.step + 1, self.buckets[start])

    @torch.no_grad()
    def _evaluate(self) -> list[ProbeResult]:
        metrics: SplitMetrics = self.inputs["valid_metrics"]
        logits = self.logits("valid")
        score = self.sign * metrics(logits, {self.metric})[self.metric]
        nan = torch.isnan(score)
        done = []
        if nan.any():
            diverged = bool((~torch.isfinite(logits[nan])).any())
            name = self.task.primary if self.metric == "primary" else self.metric
            error = f"NaN valid {name} at step {self.step}" + (
                " (its valid logits are not finite: the probe diverged; a smaller learning_rate avoids that)"
                if diverged else "")
            done = self._finish(nan, restore=False, reason="nan", error=error)
        if done:
            score = score[~nan]
        improved = score > self.best_score
        rows = torch.nonzero(improved).flatten()
        for best, p in zip(self.best, self.params):
            best[rows] = p[rows]
        self.best_score = torch.where(improved, score, self.best_score)
        self.best_eval = torch.where(improved, self.evals, self.best_eval)
        self.has_best |= improved
        self.boredom = torch.where(improved, 0, self.boredom + 1)
        self.evals += 1
        return done

    def _finish(self, mask: torch.Tensor, restore: bool, reason: str, error: str | None = None) -> list[ProbeResult]:
        rows = torch.nonzero(mask).flatten().tolist()
        results = []
        for r in rows:
            use_best = restore and bool(self.has_best[r])
            source = self.best if use_best else self.params
            state = {}
            for name, i in zip(layer_names(len(self.dims) - 2), range(0, len(source), 2)):
                state[f"{name}.weight"] = source[i][r].T.contiguous().cpu()
                state[f"{name}.bias"] = source[i + 1][r, 0].contiguous().cpu()
            results.append(ProbeResult(self.configs[r], state, self.inputs["scalers"][int(self.variant[r])],
                                       steps=self.step, evals=self.evals + (reason == "nan"),
                                       best_eval=int(self.best_eval[r]) if bool(self.has_best[r]) else None,
                                       best_score=float(self.sign * self.best_score[r]) if bool(self.has_best[r])
                                       else math.nan, stop_reason=reason, error=error))
        keep = ~mask
        self.configs = [c for c, k in zip(self.configs, keep.tolist()) if k]
        self.adam = [a for a, k in zip(self.adam, keep.tolist()) if k]
        for name in ("dropout", "variant", "patience", "max_epochs", "best_score",
                     "has_best", "boredom", "best_eval"):
            setattr(self, name, getattr(self, name)[keep])
        for name in ("params", "exp_avgs", "exp_avg_sqs", "best"):
            setattr(self, name, [t[keep].contiguous() for t in getattr(self, name)])
        self.streams = self.streams.select(keep)
        self._per_config_views()
        return results

    def _per_config_views(self) -> None:
        """Everything derived from the per-config columns; rebuilt when configs leave the group."""
        # Rows of each (lr, L2) pair within each training chunk, for the fused Adam calls.
        self.buckets: dict[int, dict[tuple[float, float], list[int]]] = {}
        for start in range(0, len(self.adam), self.chunk):
            for row, key in enumerate(self.adam[start:start + self.chunk]):
                self.buckets.setdefault(start, {}).setdefault(key, []).append(row)
        self.lr = torch.tensor([a[0] for a in self.adam], device=self.device).view(-1, 1, 1)
        self.weight_decay = torch.tensor([a[1] for a in self.adam], device=self.device).view(-1, 1, 1)
        self.rescale = 1 / (1 - self.dropout)
        thresholds = self.dropout * 256
        self.byte_rows = (thresholds == thresholds.round()).flatten()
        self.byte_thresholds = thresholds.round().clamp(0, 255).to(torch.uint8)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of returning them
    to the system: without it every training step's fresh (m, B, width) activations are new pages
    (16,000 page faults a step for the 512-unit MLPs at batch 256, 30% of their step time on
    the 2-core CPU). PyTorch's CPU tuning guide gives the same advice as "use jemalloc or
    tcmalloc"; this needs no new dependency. Process-wide; a no-op where libc is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def group_key(config: ProbeConfig) -> tuple:
    """Configs with equal keys train in one stack."""
    return (config.hidden, int(config["batch_size"]), bool(config["early_stopping"]),
            int(config["early_stopping_eval_frequency"]), config["early_stopping_metric"])


def prepare_inputs(data: ProbeData, configs: list[ProbeConfig], device) -> dict:
    """Device tensors shared by all groups: features raw and standardised per split, targets."""
    train = data.splits["train"]
    scalers = [Scaler.fit(train.features, False), Scaler.fit(train.features, True)]
    if not any(c["data_standardization"] for c in configs):
        scalers[1] = scalers[0]  # never used; skip the second copy of every split
    inputs = {"scalers": scalers}
    for name, split in data.splits.items():
        variants = [scalers[0].transform(split.features)]
        variants.append(variants[0] if scalers[1] is scalers[0] else scalers[1].transform(split.features))
        inputs[name] = torch.stack([torch.from_numpy(np.ascontiguousarray(v)) for v in variants]).to(device)
    inputs["train_targets"] = torch.from_numpy(train.targets).to(device)
    valid = data.splits["valid"]
    inputs["valid_metrics"] = SplitMetrics(data.task, valid.uids, valid.targets, device)
    return inputs


def train_grid(data: ProbeData, configs: list[ProbeConfig], device: torch.device | str = "cpu",
               seed: int | None = None, on_progress=None, precision: str = "fp32") -> Iterator[ProbeResult]:
    """Train all `configs` on `data` together; yield each config's result as soon as it stops.

    Each config's minibatches and dropout masks are keyed by its uid (which holds its seed)
    and, when given, `seed` as a salt: a config trains the same alone, in any grid, or after
    a resume. `on_progress(step, running, best)` is called every 64 steps with the number of
    configs still training and the best valid score any of them has reached.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    inputs = prepare_inputs(data, configs, device)
    valid = inputs["valid"]
    names = set(inputs["valid_metrics"](torch.zeros(1, valid.shape[1], data.task.num_outputs, device=device)))
    for config in configs:
        if config["early_stopping_metric"].lstrip("-") not in names:
            raise ValueError(f"config {config.uid()}: early_stopping_metric {config['early_stopping_metric']!r} "
                             f"is not a metric of {data.dataset}; choose from {', '.join(sorted(names))}")
    groups: dict[tuple, list[ProbeConfig]] = {}
    for config in configs:
        groups.setdefault(group_key(config), []).append(config)
    running = [_Group(members, data, inputs, device, seed, precision) for members in groups.values()]
    step = 0
    while running:
        for group in running:
            yield from group.advance()
        running = [g for g in running if g.active]
        step += 1
        if on_progress is not None and step % 64 == 0 and running:
            scores = [float(g.sign * g.best_score[g.has_best].max()) for g in running if bool(g.has_best.any())]
            on_progress(step, sum(g.active for g in running), max(scores, default=math.nan))


def probe_logits(result: ProbeResult, features: np.ndarray, device="cpu") -> np.ndarray:
    """(N, C) eval-mode logits of a trained probe on raw features (scaled with its scaler)."""
    x = torch.from_numpy(result.scaler.transform(features)).to(device)
    names = layer_names(len(result.state) // 2 - 1)
    with torch.no_grad():
        for i, name in enumerate(names):
            x = F.linear(x, result.state[f"{name}.weight"].to(device), result.state[f"{name}.bias"].to(device))
            if i < len(names) - 1:
                x = torch.relu(x)
    return x.cpu().numpy()
