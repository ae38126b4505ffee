"""jukemir's probe metrics, computed the straightforward way (numpy, scikit-learn, mir_eval).

These produce every config's final valid and test metrics. `batched_metrics` computes the
same quantities for many probes at once on the training device, for early stopping.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from tunemir.probe.tasks import STRATEGIES, Task, key_score_matrix, song_estimates

def task_loss(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """jukemir's training loss: mean cross-entropy, mean BCE-with-logits or mean squared error."""
    if task.output_type == "multiclass":
        return F.cross_entropy(logits, targets)
    if task.output_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.mse_loss(logits, targets)


def evaluate(task: Task, uids, targets: np.ndarray, logits: np.ndarray, strategy: str | None = None) -> dict:
    """All of jukemir's metrics for one probe on one split.

    `logits` (N, C) float32, `targets` as `Task.encode` builds them. For key-score tasks,
    `strategy` fixes the clip-to-song strategy (the one chosen on valid, when scoring test);
    None picks the best on this split, as jukemir does on valid.
    """
    logits = np.asarray(logits, dtype=np.float32)
    logits_t = torch.from_numpy(logits)
    metrics = {"loss": float(task_loss(task, logits_t, torch.from_numpy(np.asarray(targets))))}
    if task.key_score:
        metrics.update(_key_metrics(uids, targets, logits, strategy))
    elif task.output_type == "multiclass":
        metrics["accuracy"] = float((logits.argmax(axis=1) == targets).astype(np.float32).mean())
    elif task.output_type == "multilabel":
        from sklearn.metrics import average_precision_score, roc_auc_score

        probs = torch.sigmoid(logits_t).numpy()
        with warnings.catch_warnings():
            # A tag with no positives (or no negatives) makes sklearn warn; its AUC is NaN.
            warnings.simplefilter("ignore")
            metrics["auc_roc"] = float(roc_auc_score(targets, probs, average="macro"))
            metrics["ap"] = float(average_precision_score(targets, probs, average="macro"))
    else:
        from sklearn.metrics import r2_score

        metrics["r2"] = float(r2_score(targets, logits))
        for i, label in enumerate(task.labels or ()):
            metrics[f"{label}_r2"] = float(r2_score(targets[:, i], logits[:, i]))
    metrics["primary"] = metrics[task.primary]
    return metrics


def _key_metrics(uids, targets, logits, strategy):
    weights = key_score_matrix()
    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    clip_est = logits.argmax(axis=1)
    out = {"clip_accuracy": float((clip_est == targets).astype(np.float32).mean()),
           "clip_score": float(np.mean(weights[targets, clip_est]))}
    _, first_clip, estimates = song_estimates(uids, logits, probs)
    refs = targets[first_clip]
    for name in STRATEGIES:
        est = estimates[name]
        out[f"ensemble_{name}_accuracy"] = float((est == refs).astype(np.float32).mean())
        out[f"ensemble_{name}_score"] = float(np.mean(weights[refs, est]))
    if strategy is None:
        strategy = STRATEGIES[0]
        for name in STRATEGIES[1:]:
            if out[f"ensemble_{name}_score"] > out[f"ensemble_{strategy}_score"]:
                strategy = name
    out["strategy"] = strategy
    out["accuracy"] = out[f"ensemble_{strategy}_accuracy"]
    out["score"] = out[f"ensemble_{strategy}_score"]
    return out
