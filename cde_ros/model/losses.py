"""Training objective:

    CE + alpha_contrast * SupCon(delta) + alpha_sparsity * L1(delta) + alpha_none * NoneInvariance
       + alpha_env * EnvMMD(delta) + alpha_change * ChangeReconstruction(patch deltas)

The first three terms are the paper's. The fourth is ours, for the `none` class (a failed action)
that the paper does not have: in a `none` pair nothing causal happened, so every change between
the views (lighting, camera shift, the arm, distractors) is a nuisance and the deltas the head
looks at should vanish. It is the mean size of those deltas in `none` pairs divided by the mean
size in the other pairs of the batch: scale-free, so it cannot be met by shrinking every delta
(with the reference held constant it was, and training collapsed to all-zero deltas).

The fifth, also ours, carries CFRNet's idea (an integral-probability-metric penalty that makes a
representation blind to which group a sample came from) to recording environments: for every
action in the batch, the squared maximum mean discrepancy between the deltas of each
environment (a bag, a scene style) and those of the other environments, averaged. What differs
between environments for the same action (the room, the light, the camera) is pushed out of
the delta; what is the same (the change) stays.

The sixth, also ours, keeps in the delta what the labels do not ask for: a linear decoder (a
training-only head, dropped after training) reads from every patch's delta the patch's pixel
change (the mean signed and absolute change of each colour channel between the two frames).
CE and SupCon only keep the directions that tell the trained actions apart; a change no label
named (an action left out of training, enrolled later) then has no consistent direction and
reads as `none`. Label-free, so it constrains changes of every kind alike."""
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


def none_invariance(magnitudes: torch.Tensor, labels: torch.Tensor, none_index: int) -> torch.Tensor:
    """Mean of `magnitudes` over `none` samples divided by their mean over the other samples;
    0 when the batch lacks either kind. `magnitudes` (B): how large the deltas the head
    uses are, e.g. the mean ||delta_i|| over the Top-K patches."""
    is_none = labels == none_index
    if not is_none.any() or is_none.all():
        return magnitudes.sum() * 0.0
    reference = magnitudes[~is_none].mean().clamp_min(1e-6)
    return magnitudes[is_none].mean() / reference


def l1_sparsity(delta: torch.Tensor) -> torch.Tensor:
    """Mean absolute value of the delta embedding (per element)."""
    return delta.abs().mean()


def env_mmd(delta: torch.Tensor, labels: torch.Tensor, envs: torch.Tensor) -> torch.Tensor:
    """Mean over (action, environment) of MMD^2 between that environment's deltas of the action
    and the other environments' deltas of it (L2-normalised deltas; RBF kernels of bandwidths
    0.5, 1 and 2, unbiased estimate). 0 when no action appears in two environments with two
    samples each."""
    z = F.normalize(delta.float(), dim=-1)
    terms = []
    for y in labels.unique():
        mask = labels == y
        e = envs[mask]
        if e.unique().numel() < 2:
            continue
        zy = z[mask]
        d2 = torch.cdist(zy, zy).pow(2)
        k = sum(torch.exp(-d2 / (2 * s * s)) for s in (0.5, 1.0, 2.0)) / 3
        for env in e.unique():
            a, b = e == env, e != env
            na, nb = int(a.sum()), int(b.sum())
            if na < 2 or nb < 2:
                continue
            kaa, kbb, kab = k[a][:, a], k[b][:, b], k[a][:, b]
            terms.append((kaa.sum() - kaa.diagonal().sum()) / (na * (na - 1))
                         + (kbb.sum() - kbb.diagonal().sum()) / (nb * (nb - 1)) - 2 * kab.mean())
    if not terms:
        return delta.sum() * 0.0
    return torch.stack(terms).mean()


CHANGE_TARGETS = 6  # per patch: mean signed change of R, G, B and mean absolute change of R, G, B


def change_targets(before: torch.Tensor, after: torch.Tensor, grid: int) -> torch.Tensor:
    """B x grid^2 x CHANGE_TARGETS: each patch's pixel change between the (normalised) frames
    B x 3 x H x W, patches in the row-major order of a ViT's patch tokens."""
    diff = (after - before).float()
    signed = F.adaptive_avg_pool2d(diff, grid)
    size = F.adaptive_avg_pool2d(diff.abs(), grid)
    return torch.cat([signed, size], 1).flatten(2).transpose(1, 2)


def change_reconstruction(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the decoded patch changes relative to the targets' own energy (0: every
    patch's change read exactly; 1: no better than predicting no change): scale-free."""
    return (predicted.float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-6)


SPARSITY_TARGETS = ("delta", "patches")


@dataclass(frozen=True)
class LossWeights:
    alpha_contrast: float = 2.0
    alpha_sparsity: float = 1.0
    temperature: float = 0.1
    # leave `none` out of SupCon (its deltas have no direction). Off by default: kept in, the
    # `none` deltas are pulled together near zero, which made `none` far easier to recognise
    contrast_exclude_none: bool = False
    # weight of the `none` invariance term (needs a `none` label). Off by default: measured at
    # weight 1 it lowered `none` recall (see config/train.yaml)
    alpha_none: float = 0.0
    # what the L1 term sees (patch head): "delta" = the aggregated delta (the paper's);
    # "patches" = every patch's delta, so changes the head should ignore are pushed to zero
    sparsity_on: str = "delta"
    # weight of the environment-invariance term (env_mmd; needs pairs from 2+ environments)
    alpha_env: float = 0.0
    # weight of the change-reconstruction term (patch head): the patch deltas keep each patch's
    # pixel change, so actions no label named still have a direction (unknown_change, enroll)
    alpha_change: float = 0.0

    def __post_init__(self) -> None:
        if self.sparsity_on not in SPARSITY_TARGETS:
            raise ValueError(f"sparsity_on must be one of {SPARSITY_TARGETS}, got {self.sparsity_on!r}")


def causal_delta_loss(logits: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, weights: LossWeights,
                      none_index: int | None = None, parts: torch.Tensor | None = None,
                      patch_deltas: torch.Tensor | None = None, envs: torch.Tensor | None = None,
                      change: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each term (as floats, for logging). `parts` (B x K x D): the deltas that
    were aggregated into `delta` (the Top-K patch deltas); by default `delta` itself. `change`:
    (the decoded patch changes, `change_targets`) for the change-reconstruction term."""
    ce = F.cross_entropy(logits.float(), labels)
    total = ce
    terms = {"ce": float(ce.detach())}
    if weights.alpha_contrast:
        mask = (labels != none_index) if (weights.contrast_exclude_none and none_index is not None) else None
        con = supervised_contrastive(delta, labels, weights.temperature, mask)
        total = total + weights.alpha_contrast * con
        terms["supcon"] = float(con.detach())
    if weights.alpha_sparsity:
        use_patches = weights.sparsity_on == "patches" and patch_deltas is not None
        l1 = l1_sparsity((patch_deltas if use_patches else delta).float())
        total = total + weights.alpha_sparsity * l1
        terms["l1"] = float(l1.detach())
    if weights.alpha_none and none_index is not None:
        pieces = delta[:, None] if parts is None else parts
        inv = none_invariance(pieces.float().norm(dim=-1).mean(1), labels, none_index)
        total = total + weights.alpha_none * inv
        terms["none_inv"] = float(inv.detach())
    if weights.alpha_env and envs is not None:
        mmd = env_mmd(delta, labels, envs)
        total = total + weights.alpha_env * mmd
        terms["env_mmd"] = float(mmd.detach())
    if weights.alpha_change and change is not None:
        rec = change_reconstruction(*change)
        total = total + weights.alpha_change * rec
        terms["change"] = float(rec.detach())
    terms["total"] = float(total.detach())
    return total, terms
