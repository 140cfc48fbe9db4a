"""Training objective: CE + alpha_contrast * SupCon(delta) + alpha_sparsity * L1(delta)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out") on L2-normalised embeddings.

    Every sample with at least one other sample of its label in the batch is an anchor; its
    positives are the other samples of the same label, the denominator runs over all other
    samples. `mask` (bool, B) excludes samples entirely (e.g. `none`, whose delta has no
    direction). Returns 0 when no anchor exists."""
    if mask is not None:
        embeddings, labels = embeddings[mask], labels[mask]
    n = embeddings.shape[0]
    if n < 2:
        return embeddings.sum() * 0.0
    z = F.normalize(embeddings.float(), dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    anchors = n_pos > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[anchors] / n_pos[anchors]
    return -mean_log_prob_pos.mean()


def l1_sparsity(delta: torch.Tensor) -> torch.Tensor:
    """Mean absolute value of the delta embedding (per element)."""
    return delta.abs().mean()


@dataclass(frozen=True)
class LossWeights:
    alpha_contrast: float = 2.0
    alpha_sparsity: float = 1.0
    temperature: float = 0.1
    # leave `none` out of SupCon (its deltas have no direction). Off by default: kept in, the
    # `none` deltas are pulled together near zero, which made `none` far easier to recognise
    contrast_exclude_none: bool = False


def causal_delta_loss(logits: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, weights: LossWeights,
                      none_index: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each term (as floats, for logging)."""
    ce = F.cross_entropy(logits.float(), labels)
    total = ce
    terms = {"ce": float(ce.detach())}
    if weights.alpha_contrast:
        mask = (labels != none_index) if (weights.contrast_exclude_none and none_index is not None) else None
        con = supervised_contrastive(delta, labels, weights.temperature, mask)
        total = total + weights.alpha_contrast * con
        terms["supcon"] = float(con.detach())
    if weights.alpha_sparsity:
        l1 = l1_sparsity(delta.float())
        total = total + weights.alpha_sparsity * l1
        terms["l1"] = float(l1.detach())
    terms["total"] = float(total.detach())
    return total, terms
