"""Before/after pairs as arrays: what synthetic scenes and bag recordings both turn into, what
the trainer and evaluator consume, and what the bag cache stores (npz, never pickled)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class PairSet:
    """N before/after pairs (uint8 N x H x W x 3) plus their labels.

    `objects` names the manipulated object class where known (synthetic data), else "".
    `envs` names the recording environment of each pair (the bag it came from, a scene style),
    which the environment-invariance loss term aligns across; "" when unknown.
    `rois` holds each pair's target region where its event carried one (`"roi"`), as fractions of
    the camera frame (x, y, w, h in 0..1: the frames are stored resized), else None."""

    before: np.ndarray
    after: np.ndarray
    actions: list[str]
    objects: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    envs: list[str] = field(default_factory=list)
    rois: list[tuple[float, float, float, float] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.actions)
        if self.before.shape != self.after.shape or self.before.shape[0] != n:
            raise ValueError(f"pair arrays do not match: before {self.before.shape}, after {self.after.shape}, {n} labels")
        self.objects = list(self.objects) or [""] * n
        self.event_ids = list(self.event_ids) or [""] * n
        self.envs = list(self.envs) or [""] * n
        self.rois = [None if r is None else tuple(float(v) for v in r) for r in self.rois] or [None] * n
        if len(self.rois) != n:
            raise ValueError(f"{len(self.rois)} rois for {n} pairs")

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, index) -> "PairSet":
        index = np.asarray(index, dtype=np.int64)
        pick = lambda seq: [seq[i] for i in index]  # noqa: E731
        return PairSet(self.before[index], self.after[index], pick(self.actions), pick(self.objects), pick(self.event_ids),
                       pick(self.envs), pick(self.rois))

    @staticmethod
    def concat(parts: list["PairSet"]) -> "PairSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no pairs to concatenate")
        return PairSet(np.concatenate([p.before for p in parts]), np.concatenate([p.after for p in parts]),
                       sum((p.actions for p in parts), []), sum((p.objects for p in parts), []),
                       sum((p.event_ids for p in parts), []), sum((p.envs for p in parts), []),
                       sum((p.rois for p in parts), []))

    def save(self, path: str | Path) -> None:
        """Atomic npz write (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pairs.", suffix=".npz", dir=path.parent)
        os.close(fd)
        np.savez(tmp, before=self.before, after=self.after, actions=np.array(self.actions, dtype=str),
                 objects=np.array(self.objects, dtype=str), event_ids=np.array(self.event_ids, dtype=str),
                 envs=np.array(self.envs, dtype=str),
                 rois=np.array([r if r is not None else (-1.0,) * 4 for r in self.rois], dtype=np.float64).reshape(-1, 4))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "PairSet":
        with np.load(path, allow_pickle=False) as z:
            envs = z["envs"].tolist() if "envs" in z.files else []  # files written before envs existed
            rois = [None if r[0] < 0 else tuple(r) for r in z["rois"].tolist()] if "rois" in z.files else []
            return cls(z["before"], z["after"], z["actions"].tolist(), z["objects"].tolist(), z["event_ids"].tolist(),
                       envs, rois)
