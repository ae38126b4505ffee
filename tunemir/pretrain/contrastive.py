"""SimCLR's projector and NT-Xent loss as CLMR uses them (Chen et al. 2020; Spijkervet & Burgoyne 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Sequential):
    """CLMR's projection head: bias-free Linear(d, d) -> ReLU -> Linear(d, out), keys `0.weight`, `2.weight`.

    With d = 512 and out = 64 it has 294,912 parameters, as the released checkpoints'
    `model.projector.*`.
    """

    def __init__(self, n_features: int = 512, projection_dim: int = 64):
        super().__init__(nn.Linear(n_features, n_features, bias=False), nn.ReLU(),
                         nn.Linear(n_features, projection_dim, bias=False))


def nt_xent(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent over a batch of N positive pairs (N, d) and (N, d): mean over the 2N views.

    Each view's logits are its cosine similarities to the other 2N - 1 views divided by the
    temperature; its positive is the other view of its pair. Equal in value and gradient to
    SimCLR's masked formulation (positive first, `CrossEntropyLoss(reduction="sum") / 2N`).
    """
    n = z_i.shape[0]
    z = F.normalize(torch.cat([z_i, z_j]), dim=1)  # (2N, d)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)
