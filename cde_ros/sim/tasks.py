"""Which manipulations each split holds, like the Causal Triplet benchmark.

- `train`, `val`: the training combinations (object class, action), other episodes for `val`.
- `comp`: held-out combinations: one action of each training class, chosen round-robin so each
  action is held out about equally often and still seen on at least two training classes.
- `syst`: held-out object classes (never in training, in any role but as a distractor's
  look-alike): kettle, toaster, fridge, book. Each has a different mix of parts and every action
  keeps at least three training classes.

Orthogonal to the split is the scene style (`styles.DOMAINS`): `train`, `heldout`, or `varied`
(more training diversity, disjoint from `heldout`). The held-out
scene style of the issue is `--split val --style heldout` (training combinations in a cell never
seen); `comp` and `syst` can be drawn in the held-out style too (the few-shot benchmark does).

A `none` episode of a split attempts one of that split's combinations and fails (so the attempt
looks like the action it was meant to be). Everything is deterministic in (split, style, seed,
episode index).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.actions import ACTIONS
from .episodes import EpisodeSpec
from .fixtures import CLASSES
from .styles import DOMAINS

SPLITS = ("train", "val", "comp", "syst")
SYSTEMATIC_CLASSES: tuple[str, ...] = ("kettle", "toaster", "fridge", "book")


def _affords() -> dict[str, tuple[str, ...]]:
    return {name: tuple(cls.specs) for name, cls in CLASSES.items()}


def _compositional_holdout() -> frozenset[tuple[str, str]]:
    affords = _affords()
    train = [c for c in CLASSES if c not in SYSTEMATIC_CLASSES]
    seen = {a: sum(a in affords[c] for c in train) for a in ACTIONS if a != "none"}
    rotation = [a for a in ACTIONS if a != "none"]
    held: set[tuple[str, str]] = set()
    k = 0
    for c in train:
        for step in range(len(rotation)):
            a = rotation[(k + step) % len(rotation)]
            if a in affords[c] and seen[a] > 2:
                held.add((c, a))
                seen[a] -= 1
                k = (k + step + 1) % len(rotation)
                break
    return frozenset(held)


COMPOSITIONAL_HOLDOUT = _compositional_holdout()


def combinations(split: str) -> list[tuple[str, str]]:
    """(object class, action) pairs a split's successful episodes draw from."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    affords = _affords()
    out = []
    for c in CLASSES:
        if (split == "syst") != (c in SYSTEMATIC_CLASSES):
            continue
        for a in affords[c]:
            held = (c, a) in COMPOSITIONAL_HOLDOUT
            if (split == "comp") == held:
                out.append((c, a))
    return out


@dataclass(frozen=True)
class Draw:
    split: str = "train"
    style: str = "train"
    seed: int = 0
    none_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose from {', '.join(SPLITS)}")
        if self.style not in DOMAINS:
            raise ValueError(f"unknown scene style {self.style!r}; choose from {', '.join(DOMAINS)}")
        if not 0.0 <= self.none_fraction < 1.0:
            raise ValueError(f"none_fraction must be within [0, 1), got {self.none_fraction}")

    def rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS.index(self.split), DOMAINS.index(self.style), index, attempt])

    def spec(self, index: int) -> EpisodeSpec:
        """Episode `index`: the split's combinations in a shuffled cycle, `none` (a failed attempt
        at one of them) with probability `none_fraction`."""
        combos = combinations(self.split)
        order = np.random.default_rng([self.seed, SPLITS.index(self.split), 7]).permutation(len(combos))
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), DOMAINS.index(self.style), index, 99])
        obj, act = combos[order[index % len(combos)]]
        if rng.random() < self.none_fraction:
            obj, act = combos[rng.integers(len(combos))]
            return EpisodeSpec(obj, "none", act)
        return EpisodeSpec(obj, act, act)
