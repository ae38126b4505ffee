"""NT-Xent against SimCLR's masked formulation, written out plainly here, in value and gradient."""

import torch
import torch.nn.functional as F

from tunemir.pretrain.contrastive import Projector, nt_xent


def simclr_masked_nt_xent(z_i, z_j, temperature):
    """SimCLR's NT_Xent as its code computes it: cosine-similarity matrix over [z_i; z_j],
    positives from the +-N diagonals, negatives from a mask without the diagonal and the
    positive pairs, logits [positive, negatives], class 0, summed cross-entropy / 2N."""
    n = z_i.shape[0]
    z = torch.cat([z_i, z_j])
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / temperature
    positives = torch.cat([torch.diag(sim, n), torch.diag(sim, -n)]).reshape(2 * n, 1)
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool)
    mask.fill_diagonal_(False)
    for i in range(n):
        mask[i, n + i] = False
        mask[n + i, i] = False
    negatives = sim[mask].reshape(2 * n, -1)
    logits = torch.cat([positives, negatives], dim=1)
    labels = torch.zeros(2 * n, dtype=torch.long)
    return F.cross_entropy(logits, labels, reduction="sum") / (2 * n)


def test_nt_xent_equals_simclr_in_value_and_gradient():
    torch.manual_seed(0)
    for n, d in [(48, 64), (3, 5)]:
        a = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
        b = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
        ours = nt_xent(a, b, 0.5)
        ref = simclr_masked_nt_xent(a, b, 0.5)
        assert torch.allclose(ours, ref, atol=1e-12)
        grads = torch.autograd.grad(ours, (a, b))
        ref_grads = torch.autograd.grad(ref, (a, b))
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-12)


def test_nt_xent_prefers_aligned_pairs():
    torch.manual_seed(1)
    z = torch.randn(16, 32)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z)) < nt_xent(z, torch.randn_like(z))


def test_projector_shape_and_keys():
    projector = Projector()
    assert sum(p.numel() for p in projector.parameters()) == 294_912
    assert sorted(projector.state_dict()) == ["0.weight", "2.weight"]
    assert projector(torch.randn(4, 512)).shape == (4, 64)
