"""The `none` operating point: how a model's logits become an action.

The error a planner pays most for is a failed manipulation (`none`: nothing changed) read as the
commanded action; reading a real action as `none` only costs a re-check. A model trained with
plain cross-entropy sits at one fixed trade-off between the two. The operating point moves it: a
bias `b` is added to the `none` logit before softmax and argmax, which multiplies the odds of
`none` against every action by e^b (a shift of the class prior; the ranking of the actions among
themselves does not change).

`b` is chosen on validation pairs (the training combinations; never test pairs) by one stated
rule, `choose_none_bias`: the smallest `b` on a grid of `GRID_STEP` in [0, `MAX_BIAS`] whose
`none` recall on those pairs reaches the target. It is stored in `model.json` under `decision`
with the numbers it rests on, and applied by `CausalDeltaModel.decide`, which every consumer of
predictions uses (the inference API and so the node, the evaluation, `cde-ros eval`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

NONE = "none"
GRID_STEP = 0.05
MAX_BIAS = 3.0
# fewer `none` pairs than this cannot tell a recall of 0.98 from 0.95 (one pair is 5 points at 20)
MIN_NONE_PAIRS = 20
RULE = (f"smallest none logit bias on a {GRID_STEP} grid in [0, {MAX_BIAS}] whose none recall on the "
        f"validation pairs reaches none_recall_target")


def with_none_bias(logits: torch.Tensor, none_index: int | None, bias: float) -> torch.Tensor:
    """`logits` (N x C) with `bias` added to column `none_index` (a copy; unchanged when there is
    no `none` label or the bias is 0)."""
    if none_index is None or bias == 0.0:
        return logits
    out = logits.clone()
    out[..., none_index] += bias
    return out


def check_bias(bias: Any, where: str) -> float:
    """A usable bias as float, else ValueError naming `where`."""
    try:
        b = float(bias)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: none_logit_bias must be a number, got {bias!r}") from None
    if not math.isfinite(b) or not 0.0 <= b <= MAX_BIAS:
        raise ValueError(f"{where}: none_logit_bias must be within [0, {MAX_BIAS}], got {b}")
    return b


def _rates(logits: np.ndarray, targets: np.ndarray, none_index: int, bias: float) -> tuple[float, float, float]:
    """(accuracy, none recall, share of real actions read as none) at `bias`."""
    pred = with_none_bias(torch.from_numpy(logits), none_index, bias).argmax(1).numpy()
    is_none = targets == none_index
    recall = float(np.mean(pred[is_none] == none_index))
    missed_actions = float(np.mean(pred[~is_none] == none_index)) if (~is_none).any() else 0.0
    return float(np.mean(pred == targets)), recall, missed_actions


def choose_none_bias(logits: np.ndarray, targets: np.ndarray, none_index: int, target_recall: float
                     ) -> dict[str, Any]:
    """Apply `RULE` to validation `logits` (N x C, the raw model output) with true label indices
    `targets`. Returns what goes into `model.json` under `decision`: the bias, whether the target
    was reached (if not, the bias is `MAX_BIAS`, the most the rule allows), and accuracy and `none`
    recall on these pairs without and with it. ValueError when the pairs hold fewer than
    `MIN_NONE_PAIRS` `none` pairs."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"none_recall_target must be in (0, 1], got {target_recall}")
    n_none = int(np.sum(targets == none_index))
    if n_none < MIN_NONE_PAIRS:
        raise ValueError(f"the validation pairs hold {n_none} `none` pairs, fewer than the {MIN_NONE_PAIRS} the none "
                         "operating point needs")
    grid = np.round(np.arange(0.0, MAX_BIAS + GRID_STEP / 2, GRID_STEP), 6)
    chosen, reached = float(grid[-1]), False
    for b in grid:
        if _rates(logits, targets, none_index, float(b))[1] >= target_recall:
            chosen, reached = float(b), True
            break
    acc0, rec0, miss0 = _rates(logits, targets, none_index, 0.0)
    acc1, rec1, miss1 = _rates(logits, targets, none_index, chosen)
    return {"none_logit_bias": chosen, "rule": RULE, "none_recall_target": target_recall,
            "target_reached": reached,
            "validation": {"pairs": int(len(targets)), "none_pairs": n_none,
                           "accuracy": {"bias_0": acc0, "chosen": acc1},
                           "none_recall": {"bias_0": rec0, "chosen": rec1},
                           "actions_read_as_none": {"bias_0": miss0, "chosen": miss1}}}


def calibrate(model, pairs, target_recall: float, device: torch.device | str = "cpu", source: str = "") -> dict[str, Any]:
    """Choose `model`'s `none` operating point on validation `pairs` (a PairSet) by `RULE` and set
    it (`model.decision`; `source` says where the pairs came from). Pairs whose label the model
    does not know are left out. Returns the decision; ValueError when the model has no `none`
    label or the pairs too few `none` pairs."""
    from .inference import predict_pairs

    labels = list(model.labels)
    if NONE not in labels:
        raise ValueError(f"the model has no `{NONE}` label (labels: {labels}): there is no none operating point")
    known = np.array([a in labels for a in pairs.actions])
    if not known.all():
        pairs = pairs.subset(np.flatnonzero(known))
    logits, _ = predict_pairs(model, pairs, device)
    targets = np.array([labels.index(a) for a in pairs.actions])
    d = choose_none_bias(logits, targets, labels.index(NONE), target_recall)
    if source:
        d["validation"]["source"] = source
    model.decision = d
    return d


def describe(d: dict[str, Any]) -> str:
    """One line about a decision from `choose_none_bias`, for logs."""
    v = d["validation"]
    return (f"none logit bias {d['none_logit_bias']:g} (target none recall {d['none_recall_target']:g} on "
            f"{v['none_pairs']} validation none pairs {'reached' if d['target_reached'] else 'NOT reached'}): "
            f"none recall {v['none_recall']['bias_0']:.3f} -> {v['none_recall']['chosen']:.3f}, "
            f"accuracy {v['accuracy']['bias_0']:.3f} -> {v['accuracy']['chosen']:.3f}")
