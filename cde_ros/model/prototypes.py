"""Class prototypes in delta space: changes the model does not know (`unknown_change`) and actions
learnt from a few examples without retraining (`cde-ros enroll`).

A prototype is the direction of a label's deltas: the mean of the unit-length deltas of its
example pairs, made unit length again (`prototype`). How close a pair's delta is to a label: the
cosine `sim_c = cos(delta, prototype_c)`. Two delta spaces hold prototypes:

- the model's aggregated (projected) delta, which the classifier reads: a prototype of each of
  the classifier's action labels (`labels`, `vectors`), for `unknown_change`;
- the backbone's global-token delta `phi(after) - phi(before)` before the projector: a
  prototype of every classifier label, `none` included, and of each enrolled action
  (`backbone_labels`, `backbone_vectors`), for naming the unknown changes. Training pulls the
  projected deltas of its labels together and leaves everything else out of them, so an action
  it never saw has no direction of its own there; the backbone's delta keeps it. (On the
  left-out actions' validation pairs of the two held-out models, k example pairs' prototypes
  told the two left-out actions apart 0.67-0.85 / 0.75-0.89 of the time at k = 1 / 5 in the
  backbone's space against 0.52-0.68 / 0.51-0.79 in the projected one; README, "Enrolled
  actions".)

The rule (`Prototypes.decide`), applied after the classifier and its `none` operating point:

1. The classifier reads `none`: the answer is `none` — unless the model has a `change_threshold`
   and the delta is longer than it, or the event carries the target's roi, the model has a
   `roi_change_threshold` and the frames changed inside the roi by more than it
   (`cde_ros.model.where.roi_change`): then the answer is `unknown_change` (something changed
   that the classifier has no label for).
2. The classifier reads an action: when the delta's similarity to that action's prototype is
   below `threshold`, the answer is `unknown_change` (something changed, but in no direction the
   model knows); otherwise the action stands.
3. An `unknown_change` answer is named by the enrolled actions: the backbone delta's most similar
   backbone prototype, among every classifier label's (`none` included) and every enrolled
   action's; when that is an enrolled action, it is the answer, else `unknown_change` stays. So
   an enrolled action never takes an answer of a known label, and it names an unknown change
   only where the change looks more like it than like any known label or like nothing at all.

Neither `unknown_change` nor an enrolled action comes from a pair the classifier reads as `none`
except through step 1's thresholds; `unknown_change` is not an action a planner expects, so it
never verifies one.

The thresholds are chosen on validation pairs of the known labels: `change_threshold` first
(`choose_change_threshold`: the length that `keep` of the `none` pairs the classifier reads as
`none` stay within), `roi_change_threshold` the same way on the change inside their rois (pairs
with a roi; `choose_roi_change_threshold`), then `threshold` (`choose_threshold`: the largest
similarity at which accuracy on those pairs stays at least `keep` of its value without the rule).
The backbone prototypes of the known labels come from the same pairs (`calibrate_unknown`).
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
CHANGED_UNKNOWN = -1  # Prototypes.best: read as none, a change by its length or its roi
FILE = "prototypes.safetensors"
DEFAULT_KEEP = 0.95
RULE = ("classifier reads none: none, unless the delta is longer than change_threshold or the change inside the "
        "event's roi is above roi_change_threshold (then unknown_change); classifier reads an action: unknown_change "
        "when the delta's cosine similarity to its prototype is below threshold, else the action; an unknown_change "
        "is the enrolled action whose backbone-delta prototype is the most similar of all backbone prototypes (every "
        "classifier label's, none included, and every enrolled action's), when one is")
CHANGE_RULE = ("the `keep` quantile of the delta lengths of the validation `none` pairs the classifier reads as "
               "none: a pair read as none whose delta is longer is a change (unknown_change, or an enrolled action)")
ROI_CHANGE_RULE = ("the `keep` quantile of the change inside the roi (where.roi_change) of the validation "
                   "`none` pairs with a roi the classifier reads as none: a pair read as none whose event carries a "
                   "roi and whose frames changed more inside it is a change (unknown_change, or an enrolled action)")
THRESHOLD_RULE = ("largest cosine similarity at which accuracy on the validation pairs of the known labels stays at "
                  "least `keep` of its value without the unknown_change rule")
ENROLL_RULE = ("an enrolled action's prototype is the unit mean of its example pairs' unit backbone deltas; it names an "
               "unknown_change whose backbone delta is more similar to it than to every other backbone prototype")
OLD_ENROLLED = ("its enrolled actions were made by an older cde_ros in the projected delta space; make the prototypes "
                "again (cde-ros calibrate MODEL VALIDATION_BAGS --unknown) and enroll the actions again")


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
    """Unit prototype vectors (P x D) of the classifier's action `labels` in the projected delta
    space, the `unknown_change` threshold (None: no unknown_change answer) and the gates of a pair
    read as `none`; unit prototypes (Q x B) of `backbone_labels` in the backbone's delta space:
    the classifier's labels, then the `enrolled` actions (the module docstring)."""

    labels: list[str]
    vectors: np.ndarray
    counts: dict[str, int]
    enrolled: list[str] = field(default_factory=list)
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # how they were made (model.json)
    # delta length above which a pair the classifier reads as none is a change (None: never)
    change_threshold: float | None = None
    # change inside an event's roi (where.roi_change) above which a pair read as none is a change
    # (None: never)
    roi_change_threshold: float | None = None
    # prototypes of the backbone's global-token delta (None: made by a cde_ros without them;
    # nothing can be enrolled then)
    backbone_labels: list[str] = field(default_factory=list)
    backbone_vectors: np.ndarray | None = None

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
        self.backbone_labels = list(self.backbone_labels)
        if self.backbone_vectors is not None:
            bv = np.asarray(self.backbone_vectors, dtype=np.float32)
            if bv.ndim != 2 or len(bv) != len(self.backbone_labels):
                raise ValueError(f"{len(self.backbone_labels)} backbone prototype labels but vectors of shape "
                                 f"{bv.shape}")
            if not np.isfinite(bv).all():
                raise ValueError("backbone prototype vectors hold NaN or infinite values")
            if len(set(self.backbone_labels)) != len(self.backbone_labels):
                raise ValueError(f"backbone prototype labels repeat: {self.backbone_labels}")
            self.backbone_vectors = unit(bv)
        elif self.backbone_labels:
            raise ValueError(f"backbone prototype labels {self.backbone_labels} without vectors")
        if set(self.enrolled) & set(self.labels):
            raise ValueError(f"enrolled actions {sorted(set(self.enrolled) & set(self.labels))} are classifier labels")
        if not set(self.enrolled) <= set(self.backbone_labels):
            raise ValueError(f"enrolled labels {sorted(set(self.enrolled) - set(self.backbone_labels))} have no "
                             f"prototype")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float)) and
                                               -1.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"the unknown_change threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        c = self.change_threshold
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= float(c) < np.inf):
            raise ValueError(f"the change threshold is a delta length >= 0, got {c}")
        r = self.roi_change_threshold
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 255.0):
            raise ValueError(f"the roi change threshold is a pixel change in [0, 255], got {r}")

    # -------------------------------------------------------------------- decisions

    def similarities(self, deltas: np.ndarray) -> np.ndarray:
        """N x P cosine similarities of `deltas` (N x D) to the classifier labels' prototypes."""
        return unit(np.atleast_2d(deltas)) @ self.vectors.T

    def backbone_similarities(self, backbone_deltas: np.ndarray) -> np.ndarray:
        """N x Q cosine similarities of backbone deltas (N x B) to the backbone prototypes."""
        if self.backbone_vectors is None:
            raise ValueError("these prototypes have none in the backbone's delta space")
        return unit(np.atleast_2d(backbone_deltas)) @ self.backbone_vectors.T

    def enrolled_similarities(self, backbone_deltas: np.ndarray) -> np.ndarray:
        """N x E cosine similarities of backbone deltas to the enrolled actions' prototypes."""
        idx = [self.backbone_labels.index(a) for a in self.enrolled]
        return self.backbone_similarities(backbone_deltas)[:, idx]

    def best(self, picks: list[str], sims: np.ndarray, lengths: np.ndarray | None = None,
             roi_changes: list[float | None] | None = None) -> list[int | None]:
        """Step 1 of the rule for N pairs, and the prototype step 2 judges: the index of the
        classifier's pick's prototype (None where the pick stands whatever the threshold: `none`,
        or a label without a prototype; CHANGED_UNKNOWN where a pair read as `none` is a change by
        its delta's length or by the change inside its roi). `lengths`: the deltas' lengths
        (None: step 1's exception off); `roi_changes`: each pair's change inside its event's roi
        (None for a pair without a roi, or for all)."""
        index = {a: i for i, a in enumerate(self.labels)}
        gate = self.change_threshold if lengths is not None else None
        roi_gate = self.roi_change_threshold if roi_changes is not None else None
        out: list[int | None] = []
        for j, pick in enumerate(picks):
            if pick == NONE:
                by_length = gate is not None and lengths[j] > gate
                by_roi = roi_gate is not None and roi_changes[j] is not None and roi_changes[j] > roi_gate
                out.append(CHANGED_UNKNOWN if by_length or by_roi else None)
            else:
                out.append(index.get(pick))
        return out

    def decide(self, picks: list[str], deltas: np.ndarray, threshold: float | None = "model",
               roi_changes: list[float | None] | None = None, backbone_deltas: np.ndarray | None = None
               ) -> tuple[list[str], np.ndarray]:
        """The rule of the module docstring for N pairs: the classifier's picks (at its operating
        point), their deltas, (pairs whose events carry a roi) the change inside it and (with
        enrolled actions) their backbone deltas. Returns (answers, N x P similarities to the
        classifier labels' prototypes). `threshold` replaces the model's (None: no unknown_change
        but by step 1)."""
        t = self.threshold if threshold == "model" else threshold
        deltas = np.atleast_2d(deltas)
        sims = self.similarities(deltas)
        best = self.best(picks, sims, np.linalg.norm(deltas, axis=-1), roi_changes)
        out = [pick if b is None else UNKNOWN if b == CHANGED_UNKNOWN or (t is not None and s[b] < t)
               else self.labels[b] for pick, s, b in zip(picks, sims, best)]
        if self.enrolled and UNKNOWN in out:
            if backbone_deltas is None:
                raise ValueError("a model with enrolled actions needs the pairs' backbone deltas")
            names = self.name_unknown(np.atleast_2d(backbone_deltas))
            out = [names[j] or a if a == UNKNOWN else a for j, a in enumerate(out)]
        return out, sims

    def name_unknown(self, backbone_deltas: np.ndarray) -> list[str | None]:
        """Step 3 for N backbone deltas: the enrolled action whose prototype is the most similar
        of all backbone prototypes, or None where a classifier label's is."""
        nearest = self.backbone_similarities(backbone_deltas).argmax(1)
        return [self.backbone_labels[i] if self.backbone_labels[i] in self.enrolled else None for i in nearest]

    # -------------------------------------------------------------------- files

    def digest(self) -> str:
        """What the model id takes in: vectors, labels, enrolled labels and thresholds."""
        h = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype="<f4").tobytes())
        h.update(repr((self.labels, sorted(self.enrolled), self.threshold)).encode())
        if self.change_threshold is not None:  # models made before it keep their ids
            h.update(repr(("change_threshold", float(self.change_threshold))).encode())
        if self.roi_change_threshold is not None:
            h.update(repr(("roi_change_threshold", float(self.roi_change_threshold))).encode())
        if self.backbone_vectors is not None:
            h.update(repr(("backbone", self.backbone_labels)).encode())
            h.update(np.ascontiguousarray(self.backbone_vectors, dtype="<f4").tobytes())
        return h.hexdigest()

    def meta(self) -> dict[str, Any]:
        return {"file": FILE, "labels": list(self.labels), "counts": dict(self.counts),
                "enrolled": list(self.enrolled), "unknown_threshold": self.threshold, "change_threshold":
                self.change_threshold, "roi_change_threshold": self.roi_change_threshold,
                "backbone_labels": list(self.backbone_labels) if self.backbone_vectors is not None else None,
                "rule": RULE, **self.info}

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32)}
        if self.backbone_vectors is not None:
            tensors["backbone"] = np.ascontiguousarray(self.backbone_vectors, dtype=np.float32)
        save_file(tensors, str(path))

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any]) -> "Prototypes":
        """From `prototypes.safetensors` and model.json's "prototypes"; ValueError when they do
        not fit together."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if meta.get("enrolled") and meta.get("backbone_labels") is None:
            raise ValueError(OLD_ENROLLED)
        try:
            tensors = load_file(str(path))
            vectors = tensors["vectors"]
            backbone = tensors.get("backbone") if meta.get("backbone_labels") is not None else None
        except (SafetensorError, OSError, KeyError) as exc:
            raise ValueError(f"{path} is not a prototypes file: {exc}") from None
        if meta.get("backbone_labels") is not None and backbone is None:
            raise ValueError(f"{path} holds no backbone prototypes, which model.json names")
        info = {k: v for k, v in meta.items() if k not in ("file", "labels", "counts", "enrolled", "unknown_threshold",
                                                           "change_threshold", "roi_change_threshold",
                                                           "backbone_labels", "rule", "own_thresholds")}
        return cls(list(meta["labels"]), vectors, dict(meta.get("counts", {})), list(meta.get("enrolled", [])),
                   meta.get("unknown_threshold"), info, meta.get("change_threshold"), meta.get("roi_change_threshold"),
                   list(meta.get("backbone_labels") or []), backbone)


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
    # without the rule: no unknown_change threshold and no change threshold (nor enrolled actions)
    protos = replace(protos, enrolled=[])
    without, _ = replace(protos, change_threshold=None, roi_change_threshold=None).decide(picks, deltas, None)
    base = float(np.mean(np.array(without) == np.array(truth)))
    gated, sims = protos.decide(picks, deltas, None, roi_changes)
    correct = np.array(gated) == np.array(truth)
    # the similarity each pair is judged by (its pick's prototype's); inf: never unknown_change;
    # -inf: unknown_change whatever the threshold (read as none, a change by its length or roi)
    best = protos.best(picks, sims, np.linalg.norm(np.atleast_2d(deltas), axis=-1), roi_changes)
    judged = np.array([np.inf if b is None else -np.inf if b == CHANGED_UNKNOWN else s[b] for s, b in zip(sims, best)])

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

def classifier_outputs(model, pairs, device="cpu") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(the classifier's answers at the model's `none` operating point, aggregated deltas N x D,
    its softmax N x C at that point, the backbone's global-token deltas N x B)."""
    import torch

    from .inference import predict_pairs

    logits, deltas, backbone = predict_pairs(model, pairs, device, backbone=True)
    probs = model.decide(torch.from_numpy(logits)).softmax(1).numpy()
    return [model.labels[i] for i in probs.argmax(1)], deltas, probs, backbone


def classifier_picks(model, pairs, device="cpu") -> tuple[list[str], np.ndarray]:
    """(the classifier's answers at the model's `none` operating point, aggregated deltas N x D)."""
    picks, deltas, _, _ = classifier_outputs(model, pairs, device)
    return picks, deltas


def backbone_prototypes(backbone_deltas: np.ndarray, actions: list[str], labels: list[str]
                        ) -> tuple[list[str], np.ndarray]:
    """The backbone prototypes of every label (`none` included) with examples among `actions`."""
    actions_arr = np.asarray(actions)
    names = [a for a in labels if np.any(actions_arr == a)]
    return names, np.stack([prototype(backbone_deltas[actions_arr == a]) for a in names])


def calibrate_unknown(model, pairs, keep: float = DEFAULT_KEEP, device="cpu", source: str = "",
                      change: bool = True, rois: list | None = None,
                      camera_size: tuple[float, float] | None = None) -> dict[str, Any]:
    """Make `model`'s prototypes of its labels from validation `pairs` (of its action labels in
    the projected delta space; of every label, `none` included, in the backbone's) and choose on
    the same pairs the change threshold (`choose_change_threshold`; `change` False: none), the roi
    change threshold where pairs have a roi (`rois`, one per pair or None, in the pixels of
    `camera_size` frames; `choose_roi_change_threshold`; `change` False: none) and then the
    unknown_change threshold (`choose_threshold`). Actions enrolled before keep their prototypes
    (in the backbone's space, which calibrating does not move). Pairs of labels the model does
    not know are left out. Returns what went into model.json; ValueError when an action label has
    no pair."""
    known = np.flatnonzero(np.isin(pairs.actions, model.labels))
    if not len(known):
        raise ValueError(f"none of the pairs is labelled with one of the model's labels {model.labels}")
    if rois is not None and len(rois) != len(pairs):
        raise ValueError(f"{len(rois)} rois for {len(pairs)} pairs")
    rois = [rois[i] for i in known] if rois is not None else None
    pairs = pairs.subset(known)
    picks, deltas, _, backbone = classifier_outputs(model, pairs, device)
    protos = from_pairs(deltas, pairs.actions, model.labels)
    missing = [a for a in model.labels if a != NONE and a not in protos.labels]
    if missing:
        raise ValueError(f"the pairs hold no example of {', '.join(missing)}: every action label needs its prototype")
    names, vectors = backbone_prototypes(backbone, pairs.actions, model.labels)
    old = model.prototypes
    if old is not None and old.enrolled and old.backbone_vectors is not None:
        keep_idx = [old.backbone_labels.index(a) for a in old.enrolled]
        names, vectors = names + list(old.enrolled), np.concatenate([vectors, old.backbone_vectors[keep_idx]])
        protos.counts.update({a: old.counts.get(a, 0) for a in old.enrolled})
        protos.enrolled = list(old.enrolled)
    protos.backbone_labels, protos.backbone_vectors = names, vectors
    protos = replace(protos)  # checked again
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
    chosen["backbone_counts"] = {a: int(np.sum(np.asarray(pairs.actions) == a)) for a in names if a not in
                                 protos.enrolled}
    if source:
        chosen["validation"]["source"] = source
    if old is not None and old.info.get("enrolled_from"):
        chosen["enrolled_from"] = {a: v for a, v in old.info["enrolled_from"].items() if a in protos.enrolled}
    protos.info = chosen
    model.prototypes = protos
    return protos.meta()


def enroll(model, backbone_deltas: np.ndarray, action: str, source: str = "") -> dict[str, Any]:
    """Add (or replace) the enrolled action `action`: its prototype in the backbone's delta space
    from the backbone deltas (k x B) of its k example pairs (`ENROLL_RULE`)."""
    p = model.prototypes
    if p is None:
        raise ValueError("the model has no prototypes of its own actions yet; make them first with "
                         "cde-ros calibrate MODEL VALIDATION_BAGS --unknown")
    if p.backbone_vectors is None:
        raise ValueError("the model's prototypes were made by an older cde_ros, without prototypes in the backbone's "
                         "delta space; make them again with cde-ros calibrate MODEL VALIDATION_BAGS --unknown")
    if action in model.labels:
        raise ValueError(f"{action!r} is one of the classifier's labels ({', '.join(model.labels)}); enroll adds new "
                         f"actions")
    if action in (NONE, UNKNOWN) or not action.strip():
        raise ValueError(f"{action!r} cannot be an enrolled action")
    backbone_deltas = np.atleast_2d(np.asarray(backbone_deltas, dtype=np.float32))
    if len(backbone_deltas) == 0:
        raise ValueError(f"no example pairs of {action!r}")
    if backbone_deltas.shape[1] != p.backbone_vectors.shape[1]:
        raise ValueError(f"backbone deltas of {backbone_deltas.shape[1]} dimensions for backbone prototypes of "
                         f"{p.backbone_vectors.shape[1]}")
    vec = prototype(backbone_deltas)
    labels, vectors = list(p.backbone_labels), p.backbone_vectors.copy()
    if action in labels:
        vectors[labels.index(action)] = vec
    else:
        labels.append(action)
        vectors = np.concatenate([vectors, vec[None]])
    info = dict(p.info)
    info["enroll_rule"] = ENROLL_RULE
    info["enrolled_from"] = {**info.get("enrolled_from", {}), action: source or f"{len(backbone_deltas)} example pairs"}
    model.prototypes = replace(p, counts={**p.counts, action: int(len(backbone_deltas))},
                               enrolled=list(p.enrolled) + ([action] if action not in p.enrolled else []), info=info,
                               backbone_labels=labels, backbone_vectors=vectors)
    return model.prototypes.meta()
