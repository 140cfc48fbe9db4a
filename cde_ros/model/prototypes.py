"""Class prototypes in delta space: changes the model does not know (`unknown_change`) and actions
learnt from a few examples without retraining (`cde-ros enroll`).

A prototype is the direction of a label's deltas: the mean of the unit-length aggregated deltas
of its example pairs, made unit length again (`prototype`). How close a pair's delta is to a
label: the cosine `sim_c = cos(delta, prototype_c)`.

The rule (`Prototypes.decide`), applied after the classifier and its `none` operating point:

1. The classifier reads `none`: the answer is `none` (whether *anything* changed stays the
   calibrated classifier's call, so the false-success rate does not move).
2. Otherwise the candidates are the classifier's action and every enrolled action; the one whose
   prototype is the most similar to the delta wins (an enrolled action takes over only where its
   prototype is closer than the classifier's own pick).
3. When that best similarity is below `threshold`, the answer is `unknown_change`: something
   changed, but in no direction the model knows.

`threshold` is chosen on validation pairs of the known labels (`choose_threshold`): the largest
similarity at which accuracy on those pairs stays at least `keep` of its value without the rule.
Prototypes and threshold live in `prototypes.safetensors` (the vectors) and `model.json`
("prototypes": labels, example counts, enrolled labels, threshold and the numbers it rests on);
they are part of the model id.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decision import NONE

UNKNOWN = "unknown_change"
FILE = "prototypes.safetensors"
DEFAULT_KEEP = 0.95
RULE = ("classifier reads none: none; else the candidate (classifier's action or an enrolled action) whose "
        "prototype is the most cosine-similar to the delta; unknown_change when that similarity is below threshold")
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

    # -------------------------------------------------------------------- decisions

    def similarities(self, deltas: np.ndarray) -> np.ndarray:
        """N x P cosine similarities of `deltas` (N x D) to the prototypes."""
        return unit(np.atleast_2d(deltas)) @ self.vectors.T

    def best(self, picks: list[str], sims: np.ndarray) -> list[int | None]:
        """Steps 1-2 of the rule for N pairs: the index of the winning prototype per pair (None
        where the classifier's pick stands: `none`, or a label without a prototype and nothing
        enrolled)."""
        index = {a: i for i, a in enumerate(self.labels)}
        enrolled = [index[a] for a in self.enrolled]
        out: list[int | None] = []
        for pick, s in zip(picks, sims):
            cands = [] if pick == NONE else ([index[pick]] if pick in index else []) + enrolled
            out.append(max(cands, key=lambda i: s[i]) if cands else None)
        return out

    def decide(self, picks: list[str], deltas: np.ndarray, threshold: float | None = "model"
               ) -> tuple[list[str], np.ndarray]:
        """The rule of the module docstring for N pairs: the classifier's picks (at its operating
        point) and their deltas. Returns (answers, N x P similarities). `threshold` replaces the
        model's (None: no unknown_change)."""
        t = self.threshold if threshold == "model" else threshold
        sims = self.similarities(deltas)
        out = [pick if b is None else UNKNOWN if t is not None and s[b] < t else self.labels[b]
               for pick, s, b in zip(picks, sims, self.best(picks, sims))]
        return out, sims

    # -------------------------------------------------------------------- files

    def digest(self) -> str:
        """What the model id takes in: vectors, labels, enrolled labels and threshold."""
        h = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype="<f4").tobytes())
        h.update(repr((self.labels, sorted(self.enrolled), self.threshold)).encode())
        return h.hexdigest()

    def meta(self) -> dict[str, Any]:
        return {"file": FILE, "labels": list(self.labels), "counts": dict(self.counts),
                "enrolled": list(self.enrolled), "unknown_threshold": self.threshold, "rule": RULE, **self.info}

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
                                                           "rule")}
        return cls(list(meta["labels"]), vectors, dict(meta.get("counts", {})), list(meta.get("enrolled", [])),
                   meta.get("unknown_threshold"), info)


# ------------------------------------------------------------------------ making them

def from_pairs(deltas: np.ndarray, actions: list[str], labels: list[str]) -> Prototypes:
    """The prototypes of every action label (not `none`) with examples among `actions`."""
    actions_arr = np.asarray(actions)
    names = [a for a in labels if a != NONE and np.any(actions_arr == a)]
    vectors = (np.stack([prototype(deltas[actions_arr == a]) for a in names]) if names
               else np.zeros((0, deltas.shape[1])))
    return Prototypes(names, vectors, {a: int(np.sum(actions_arr == a)) for a in names})


def choose_threshold(protos: Prototypes, picks: list[str], deltas: np.ndarray, truth: list[str],
                     keep: float = DEFAULT_KEEP) -> dict[str, Any]:
    """`THRESHOLD_RULE` on validation pairs of the known labels (their classifier picks, deltas,
    true labels). Returns the threshold and what it rests on (for model.json)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    without, sims = protos.decide(picks, deltas, None)
    correct = np.array(without) == np.array(truth)
    # the similarity each pair is judged by (its winning prototype's); inf: never unknown_change
    judged = np.array([np.inf if b is None else s[b] for s, b in zip(sims, protos.best(picks, sims))])

    def accuracy(t: float) -> float:  # at threshold t: the pairs judged below it become unknown_change
        return float(np.mean(correct & ~(judged < t)))

    base = accuracy(-np.inf)
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


def calibrate_unknown(model, pairs, keep: float = DEFAULT_KEEP, device="cpu", source: str = "") -> dict[str, Any]:
    """Make `model`'s prototypes of its action labels from the deltas of validation `pairs` and
    choose the unknown_change threshold on the same pairs (`choose_threshold`). Actions enrolled
    before keep their prototypes. Pairs of labels the model does not know are left out. Returns
    what went into model.json; ValueError when an action label has no pair."""
    known = np.flatnonzero(np.isin(pairs.actions, model.labels))
    if not len(known):
        raise ValueError(f"none of the pairs is labelled with one of the model's labels {model.labels}")
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
                            {**protos.counts, **{a: old.counts.get(a, 0) for a in old.enrolled}}, list(old.enrolled))
    chosen = choose_threshold(protos, picks, deltas, pairs.actions, keep)
    protos.threshold = chosen.pop("unknown_threshold")
    if source:
        chosen["validation"]["source"] = source
    protos.info = chosen
    model.prototypes = protos
    return protos.meta()


def enroll(model, deltas: np.ndarray, action: str, source: str = "") -> dict[str, Any]:
    """Add (or replace) the enrolled action `action` from the deltas of its k example pairs."""
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
    model.prototypes = Prototypes(labels, vectors, counts, enrolled, p.threshold, info)
    return model.prototypes.meta()
