"""Class prototypes in delta space: changes the model does not know (`unknown_change`) and actions
learnt from a few examples without retraining (`cde-ros enroll`).

A prototype is the direction of a label's deltas: the mean of the unit-length aggregated deltas
of its example pairs, made unit length again (`prototype`). How close a pair's delta is to a
label: the cosine `sim_c = cos(delta, prototype_c)`.

The rule (`Prototypes.decide`), applied after the classifier and its `none` operating point:

1. The classifier reads `none`: the answer is `none` — unless the model has a `change_threshold`
   and the delta is longer than it, or the event carries the target's roi, the model has a
   `roi_change_threshold` and the frames changed inside the roi by more than it
   (`cde_ros.model.where.roi_change`): then something changed that the classifier has no label
   for, and the candidates of step 2 are the enrolled actions alone (none enrolled:
   `unknown_change`). Neither way does a `none` pair become a success: `unknown_change` is not
   an action a planner expects, so it never verifies one.
2. Otherwise the candidates are the classifier's action and every enrolled action; the one whose
   prototype is the most similar to the delta wins (an enrolled action takes over only where its
   prototype is closer than the classifier's own pick).
3. When that best similarity is below `threshold`, the answer is `unknown_change`: something
   changed, but in no direction the model knows. An enrolled action made from k >= 2 examples
   has a threshold of its own when that is lower: the lowest similarity of one of its examples to
   the prototype of the others (leave one out) — a prototype of a few examples is looser than
   one of a whole validation split, and its own examples show how loose.

The thresholds are chosen on validation pairs of the known labels: `change_threshold` first
(`choose_change_threshold`: the length that `keep` of the `none` pairs the classifier reads as
`none` stay within), `roi_change_threshold` the same way on the change inside their rois (pairs
with a roi; `choose_roi_change_threshold`), then `threshold` (`choose_threshold`: the largest similarity at which
accuracy on those pairs stays at least `keep` of its value without the rule).
Prototypes and thresholds live in `prototypes.safetensors` (the vectors) and `model.json`
("prototypes": labels, example counts, enrolled labels, thresholds and the numbers they rest
on); they are part of the model id.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .decision import NONE
from .where import roi_change

UNKNOWN = "unknown_change"
CHANGED_UNKNOWN = -1  # Prototypes.best: read as none, a change by its length, nothing enrolled
FILE = "prototypes.safetensors"
DEFAULT_KEEP = 0.95
RULE = ("classifier reads none: none, unless the delta is longer than change_threshold or the change inside the "
        "event's roi is above roi_change_threshold (then the enrolled actions "
        "alone are the candidates, none enrolled: unknown_change); else the candidate (classifier's action or an "
        "enrolled action) whose prototype is the most cosine-similar to the delta; unknown_change when that similarity "
        "is below threshold (an enrolled action's own threshold when lower: its examples' lowest leave-one-out "
        "similarity)")
CHANGE_RULE = ("the `keep` quantile of the delta lengths of the validation `none` pairs the classifier reads as "
               "none: a pair read as none whose delta is longer is a change (an enrolled action or unknown_change)")
ROI_CHANGE_RULE = ("the `keep` quantile of the change inside the roi (where.roi_change) of the validation "
                   "`none` pairs with a roi the classifier reads as none: a pair read as none whose event carries a "
                   "roi and whose frames changed more inside it is a change (an enrolled action or unknown_change)")
THRESHOLD_RULE = ("largest cosine similarity at which accuracy on the validation pairs of the known labels stays at "
                  "least `keep` of its value without the unknown_change rule")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def prototype(deltas: np.ndarray) -> np.ndarray:
    """The prototype of the example deltas (k x D): the unit mean of their unit vectors."""
    if len(deltas) == 0:
        raise ValueError("a prototype needs at least one example")
    return unit(unit(deltas).mean(0, keepdims=True))[0]


@dataclass
class Prototypes:
    """Unit prototype vectors (P x D) of `labels`, the actions among them that were enrolled (not
    classifier labels), and the `unknown_change` threshold (None: no unknown_change answer)."""

    labels: list[str]
    vectors: np.ndarray
    counts: dict[str, int]
    enrolled: list[str] = field(default_factory=list)
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # how they were made (model.json)
    # delta length above which a pair the classifier reads as none is a change (None: never)
    change_threshold: float | None = None
    # an enrolled action's own threshold (`leave_one_out`), used where it is below `threshold`
    own_thresholds: dict[str, float] = field(default_factory=dict)
    # change inside an event's roi (where.roi_change) above which a pair read as none is a change
    # (None: never)
    roi_change_threshold: float | None = None

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim == 2:
            self.vectors = unit(self.vectors)  # similarities are cosines whatever the vectors' lengths
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.labels):
            raise ValueError(f"{len(self.labels)} prototype labels but vectors of shape {self.vectors.shape}")
        if not np.isfinite(self.vectors).all():
            raise ValueError("prototype vectors hold NaN or infinite values")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"prototype labels repeat: {self.labels}")
        if not set(self.enrolled) <= set(self.labels):
            raise ValueError(f"enrolled labels {sorted(set(self.enrolled) - set(self.labels))} have no prototype")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float)) and
                                               -1.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"the unknown_change threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        c = self.change_threshold
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= float(c) < np.inf):
            raise ValueError(f"the change threshold is a delta length >= 0, got {c}")
        r = self.roi_change_threshold
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 255.0):
            raise ValueError(f"the roi change threshold is a pixel change in [0, 255], got {r}")
        self.own_thresholds = {str(a): float(v) for a, v in dict(self.own_thresholds).items()}
        if not set(self.own_thresholds) <= set(self.enrolled):
            raise ValueError(f"own thresholds of {sorted(set(self.own_thresholds) - set(self.enrolled))}, which are not "
                             f"enrolled")
        if not all(-1.0 <= v <= 1.0 for v in self.own_thresholds.values()):
            raise ValueError(f"an enrolled action's threshold is a cosine similarity in [-1, 1], got {self.own_thresholds}")

    # -------------------------------------------------------------------- decisions

    def similarities(self, deltas: np.ndarray) -> np.ndarray:
        """N x P cosine similarities of `deltas` (N x D) to the prototypes."""
        return unit(np.atleast_2d(deltas)) @ self.vectors.T

    def best(self, picks: list[str], sims: np.ndarray, lengths: np.ndarray | None = None,
             roi_changes: list[float | None] | None = None) -> list[int | None]:
        """Steps 1-2 of the rule for N pairs: the index of the winning prototype per pair (None
        where the classifier's pick stands: `none`, or a label without a prototype and nothing
        enrolled; CHANGED_UNKNOWN where a pair read as `none` is a change by its delta's length
        or by the change inside its roi, and nothing is enrolled). `lengths`: the deltas' lengths
        (None: step 1's exception off); `roi_changes`: each pair's change inside its event's roi
        (None for a pair without a roi, or for all)."""
        index = {a: i for i, a in enumerate(self.labels)}
        enrolled = [index[a] for a in self.enrolled]
        gate = self.change_threshold if lengths is not None else None
        roi_gate = self.roi_change_threshold if roi_changes is not None else None
        out: list[int | None] = []
        for j, (pick, s) in enumerate(zip(picks, sims)):
            if pick == NONE:
                by_length = gate is not None and lengths[j] > gate
                by_roi = roi_gate is not None and roi_changes[j] is not None and roi_changes[j] > roi_gate
                if not (by_length or by_roi):
                    out.append(None)
                else:
                    out.append(max(enrolled, key=lambda i: s[i]) if enrolled else CHANGED_UNKNOWN)
                continue
            cands = ([index[pick]] if pick in index else []) + enrolled
            out.append(max(cands, key=lambda i: s[i]) if cands else None)
        return out

    def decide(self, picks: list[str], deltas: np.ndarray, threshold: float | None = "model",
               roi_changes: list[float | None] | None = None) -> tuple[list[str], np.ndarray]:
        """The rule of the module docstring for N pairs: the classifier's picks (at its operating
        point), their deltas and (pairs whose events carry a roi) the change inside it. Returns
        (answers, N x P similarities). `threshold` replaces the model's (None: no unknown_change)."""
        t = self.threshold if threshold == "model" else threshold
        deltas = np.atleast_2d(deltas)
        sims = self.similarities(deltas)
        best = self.best(picks, sims, np.linalg.norm(deltas, axis=-1), roi_changes)
        out = [pick if b is None else UNKNOWN if b == CHANGED_UNKNOWN or s[b] < self.threshold_of(b, t)
               else self.labels[b] for pick, s, b in zip(picks, sims, best)]
        return out, sims

    def threshold_of(self, index: int, threshold: float | None) -> float:
        """The similarity below which prototype `index` does not answer, given the model-wide
        `threshold` (None: no unknown_change; -inf then)."""
        if threshold is None:
            return -np.inf
        return min(float(threshold), self.own_thresholds.get(self.labels[index], np.inf))

    # -------------------------------------------------------------------- files

    def digest(self) -> str:
        """What the model id takes in: vectors, labels, enrolled labels and thresholds."""
        h = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype="<f4").tobytes())
        h.update(repr((self.labels, sorted(self.enrolled), self.threshold)).encode())
        if self.change_threshold is not None:  # models made before it keep their ids
            h.update(repr(("change_threshold", float(self.change_threshold))).encode())
        if self.own_thresholds:
            h.update(repr(("own_thresholds", sorted(self.own_thresholds.items()))).encode())
        if self.roi_change_threshold is not None:
            h.update(repr(("roi_change_threshold", float(self.roi_change_threshold))).encode())
        return h.hexdigest()

    def meta(self) -> dict[str, Any]:
        return {"file": FILE, "labels": list(self.labels), "counts": dict(self.counts),
                "enrolled": list(self.enrolled), "unknown_threshold": self.threshold, "change_threshold":
                self.change_threshold, "own_thresholds": dict(self.own_thresholds),
                "roi_change_threshold": self.roi_change_threshold, "rule": RULE, **self.info}

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)}, str(path))

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> "Prototypes":
        """From `prototypes.safetensors` and model.json's "prototypes"; ValueError when they do
        not fit together."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            vectors = load_file(str(path))["vectors"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise ValueError(f"{path} is not a prototypes file: {exc}") from None
        info = {k: v for k, v in meta.items() if k not in ("file", "labels", "counts", "enrolled", "unknown_threshold",
                                                           "change_threshold", "own_thresholds",
                                                           "roi_change_threshold", "rule")}
        return cls(list(meta["labels"]), vectors, dict(meta.get("counts", {})), list(meta.get("enrolled", [])),
                   meta.get("unknown_threshold"), info, meta.get("change_threshold"),
                   dict(meta.get("own_thresholds") or {}), meta.get("roi_change_threshold"))


# ------------------------------------------------------------------------ making them

def from_pairs(deltas: np.ndarray, actions: list[str], labels: list[str]) -> Prototypes:
    """The prototypes of every action label (not `none`) with examples among `actions`."""
    actions_arr = np.asarray(actions)
    names = [a for a in labels if a != NONE and np.any(actions_arr == a)]
    vectors = (np.stack([prototype(deltas[actions_arr == a]) for a in names]) if names
               else np.zeros((0, deltas.shape[1])))
    return Prototypes(names, vectors, {a: int(np.sum(actions_arr == a)) for a in names})


def choose_threshold(protos: Prototypes, picks: list[str], deltas: np.ndarray, truth: list[str],
                     keep: float = DEFAULT_KEEP, roi_changes: list[float | None] | None = None) -> dict[str, Any]:
    """`THRESHOLD_RULE` on validation pairs of the known labels (their classifier picks, deltas,
    true labels, the change inside their rois where they have one). Returns the threshold and
    what it rests on (for model.json)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    # without the rule: no unknown_change threshold and no change threshold
    without, _ = replace(protos, change_threshold=None, roi_change_threshold=None).decide(picks, deltas, None)
    base = float(np.mean(np.array(without) == np.array(truth)))
    gated, sims = protos.decide(picks, deltas, None, roi_changes)
    correct = np.array(gated) == np.array(truth)
    # the similarity each pair is judged by (its winning prototype's); inf: never unknown_change
    # (also an enrolled winner at or above its own threshold); -inf: unknown_change whatever the
    # threshold (read as none, a change by its length)
    best = protos.best(picks, sims, np.linalg.norm(np.atleast_2d(deltas), axis=-1), roi_changes)
    judged = np.array([np.inf if b is None else -np.inf if b == CHANGED_UNKNOWN else
                       np.inf if s[b] >= protos.threshold_of(b, np.inf) else s[b] for s, b in zip(sims, best)])

    def accuracy(t: float) -> float:  # at threshold t: the pairs judged below it become unknown_change
        return float(np.mean(correct & ~(judged < t)))

    chosen = -1.0
    for t in np.sort(np.unique(np.concatenate([judged[np.isfinite(judged)], [-1.0]])))[::-1]:
        if accuracy(t) >= keep * base - 1e-12:
            chosen = float(t)
            break
    changed = np.array([t != NONE for t in truth])
    unknown = judged < chosen
    return {"unknown_threshold": chosen, "threshold_rule": THRESHOLD_RULE, "keep": keep,
            "validation": {"pairs": len(truth), "accuracy": {"without": base, "with": accuracy(chosen)},
                           "actions_read_as_unknown": float(np.mean(unknown[changed])) if changed.any() else 0.0}}


def choose_change_threshold(picks: list[str], deltas: np.ndarray, truth: list[str],
                            keep: float = DEFAULT_KEEP) -> dict[str, Any]:
    """`CHANGE_RULE` on validation pairs: their classifier picks, deltas and true labels.
    Returns the threshold and what it rests on (for model.json); ValueError when no `none` pair
    is read as `none`."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    truth_a, picks_a = np.asarray(truth), np.asarray(picks)
    lengths = np.linalg.norm(np.atleast_2d(deltas), axis=-1)
    quiet = (truth_a == NONE) & (picks_a == NONE)
    if not quiet.any():
        raise ValueError("no validation pair of none is read as none: the change threshold needs some")
    ranked = np.sort(lengths[quiet])  # the shortest length that `keep` of them stay within
    chosen = float(ranked[max(1, math.ceil(keep * len(ranked) - 1e-9)) - 1])
    changed = truth_a != NONE
    read_none = changed & (picks_a == NONE)
    return {"change_threshold": chosen, "change_rule": CHANGE_RULE,
            "change_validation": {"none_pairs_read_as_none": int(quiet.sum()),
                                  "of_them_kept_none": float(np.mean(lengths[quiet] <= chosen)),
                                  "actions_read_as_none": int(read_none.sum()),
                                  "of_them_above": float(np.mean(lengths[read_none] > chosen)) if read_none.any()
                                  else None}}


def choose_roi_change_threshold(picks: list[str], roi_changes: list[float | None], truth: list[str],
                                keep: float = DEFAULT_KEEP) -> dict[str, Any] | None:
    """`ROI_CHANGE_RULE` on validation pairs: their classifier picks, the change inside their
    rois (None: a pair without a roi) and true labels. Returns the threshold and what it rests on
    (for model.json); None when no pair has a roi; ValueError when pairs with a roi hold no
    `none` pair read as `none`."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    has = np.array([c is not None for c in roi_changes], bool)
    if not has.any():
        return None
    scores = np.array([c if c is not None else np.nan for c in roi_changes], np.float64)
    truth_a, picks_a = np.asarray(truth), np.asarray(picks)
    quiet = has & (truth_a == NONE) & (picks_a == NONE)
    if not quiet.any():
        raise ValueError("no validation pair of none with a roi is read as none: the roi change threshold needs some")
    ranked = np.sort(scores[quiet])
    chosen = float(ranked[max(1, math.ceil(keep * len(ranked) - 1e-9)) - 1])
    read_none = has & (truth_a != NONE) & (picks_a == NONE)
    return {"roi_change_threshold": chosen, "roi_change_rule": ROI_CHANGE_RULE,
            "roi_change_validation": {"pairs_with_roi": int(has.sum()), "none_pairs_read_as_none": int(quiet.sum()),
                                      "of_them_kept_none": float(np.mean(scores[quiet] <= chosen)),
                                      "actions_read_as_none": int(read_none.sum()),
                                      "of_them_above": float(np.mean(scores[read_none] > chosen)) if read_none.any()
                                      else None}}


def roi_changes_of(pre, befores, afters, rois: list | None, camera_size: tuple[float, float] | None
                   ) -> list[float | None] | None:
    """The change inside each pair's roi (`where.roi_change`) on the frames as the model sees them
    (resized, the after frame registered when the model registers pairs); None when no pair has
    a roi. `rois` in the pixels of `camera_size` (width, height) frames."""
    if not rois or not any(r is not None for r in rois):
        return None
    if camera_size is None:
        raise ValueError("rois need the camera frames' size (the pairs come from recordings of different sizes)")
    w, h = camera_size
    out: list[float | None] = []
    for b, a, roi in zip(befores, afters, rois):
        if roi is None:
            out.append(None)
            continue
        rb = pre.resize(b)
        ra = pre.resize(a)
        if pre.register_max_shift:
            ra = pre.register(rb, ra)
        out.append(roi_change(rb, ra, roi, w, h))
    return out


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve of telling positives from negatives by a score (higher: more
    positive), ties counted half: the probability that a random positive outscores a random
    negative."""
    pos = np.asarray(scores_pos, dtype=np.float64)
    neg = np.asarray(scores_neg, dtype=np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


# ------------------------------------------------------------------------ on a model

def classifier_outputs(model, pairs, device="cpu") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(the classifier's answers at the model's `none` operating point, aggregated deltas N x D,
    its softmax N x C at that point)."""
    import torch

    from .inference import predict_pairs

    logits, deltas = predict_pairs(model, pairs, device)
    probs = model.decide(torch.from_numpy(logits)).softmax(1).numpy()
    return [model.labels[i] for i in probs.argmax(1)], deltas, probs


def classifier_picks(model, pairs, device="cpu") -> tuple[list[str], np.ndarray]:
    """(the classifier's answers at the model's `none` operating point, aggregated deltas N x D)."""
    picks, deltas, _ = classifier_outputs(model, pairs, device)
    return picks, deltas


def calibrate_unknown(model, pairs, keep: float = DEFAULT_KEEP, device="cpu", source: str = "",
                      change: bool = True, rois: list | None = None,
                      camera_size: tuple[float, float] | None = None) -> dict[str, Any]:
    """Make `model`'s prototypes of its action labels from the deltas of validation `pairs` and
    choose on the same pairs the change threshold (`choose_change_threshold`; `change` False:
    none), the roi change threshold where pairs have a roi (`rois`, one per pair or None, in
    the pixels of `camera_size` frames; `choose_roi_change_threshold`; `change` False: none) and
    then the unknown_change threshold (`choose_threshold`). Actions enrolled before keep their
    prototypes. Pairs of labels the model does not know are left out. Returns what went into
    model.json; ValueError when an action label has no pair."""
    known = np.flatnonzero(np.isin(pairs.actions, model.labels))
    if not len(known):
        raise ValueError(f"none of the pairs is labelled with one of the model's labels {model.labels}")
    if rois is not None and len(rois) != len(pairs):
        raise ValueError(f"{len(rois)} rois for {len(pairs)} pairs")
    rois = [rois[i] for i in known] if rois is not None else None
    pairs = pairs.subset(known)
    picks, deltas = classifier_picks(model, pairs, device)
    protos = from_pairs(deltas, pairs.actions, model.labels)
    missing = [a for a in model.labels if a != NONE and a not in protos.labels]
    if missing:
        raise ValueError(f"the pairs hold no example of {', '.join(missing)}: every action label needs its prototype")
    old = model.prototypes
    if old is not None and old.enrolled:
        keep_idx = [old.labels.index(a) for a in old.enrolled]
        protos = Prototypes(protos.labels + list(old.enrolled), np.concatenate([protos.vectors, old.vectors[keep_idx]]),
                            {**protos.counts, **{a: old.counts.get(a, 0) for a in old.enrolled}}, list(old.enrolled),
                            own_thresholds=dict(old.own_thresholds))
    gate: dict[str, Any] = {}
    roi_scores = None
    if change and NONE in model.labels:
        gate = choose_change_threshold(picks, deltas, pairs.actions, keep)
        protos.change_threshold = gate.pop("change_threshold")
        roi_scores = roi_changes_of(model.preprocessing, pairs.before, pairs.after, rois, camera_size)
        if roi_scores is not None:
            roi_gate = choose_roi_change_threshold(picks, roi_scores, pairs.actions, keep)
            protos.roi_change_threshold = roi_gate.pop("roi_change_threshold")
            gate.update(roi_gate)
    chosen = choose_threshold(protos, picks, deltas, pairs.actions, keep, roi_scores)
    protos.threshold = chosen.pop("unknown_threshold")
    chosen.update(gate)
    if source:
        chosen["validation"]["source"] = source
    protos.info = chosen
    model.prototypes = protos
    return protos.meta()


def leave_one_out(deltas: np.ndarray) -> float | None:
    """The lowest cosine similarity of one example delta to the prototype of the others (None
    for fewer than 2 examples)."""
    if len(deltas) < 2:
        return None
    u = unit(deltas)
    return float(min(prototype(np.delete(deltas, j, 0)) @ u[j] for j in range(len(deltas))))


def enroll(model, deltas: np.ndarray, action: str, source: str = "") -> dict[str, Any]:
    """Add (or replace) the enrolled action `action` from the deltas of its k example pairs;
    with k >= 2, its own threshold is their `leave_one_out` similarity."""
    if model.prototypes is None:
        raise ValueError("the model has no prototypes of its own actions yet; make them first with "
                         "cde-ros calibrate MODEL VALIDATION_BAGS --unknown")
    if action in model.labels:
        raise ValueError(f"{action!r} is one of the classifier's labels ({', '.join(model.labels)}); enroll adds new "
                         f"actions")
    if action in (NONE, UNKNOWN) or not action.strip():
        raise ValueError(f"{action!r} cannot be an enrolled action")
    if len(deltas) == 0:
        raise ValueError(f"no example pairs of {action!r}")
    p = model.prototypes
    vec = prototype(deltas)
    labels, vectors = list(p.labels), p.vectors.copy()
    if action in labels:
        vectors[labels.index(action)] = vec
    else:
        labels.append(action)
        vectors = np.concatenate([vectors, vec[None]])
    counts = {**p.counts, action: int(len(deltas))}
    enrolled = list(p.enrolled) + ([action] if action not in p.enrolled else [])
    info = dict(p.info)
    info.setdefault("enrolled_from", {})[action] = source or f"{len(deltas)} example pairs"
    own = {a: v for a, v in p.own_thresholds.items() if a != action}
    loo = leave_one_out(deltas)
    if loo is not None:
        own[action] = loo
    model.prototypes = Prototypes(labels, vectors, counts, enrolled, p.threshold, info, p.change_threshold, own,
                                  p.roi_change_threshold)
    return model.prototypes.meta()
