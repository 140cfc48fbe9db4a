"""Simulated before/after pairs straight into Python (no bag): each episode rendered at the
camera's rate, its before and after frame chosen by the node's own `EventPairer`."""
from __future__ import annotations

import numpy as np

from ..core.dataset import PairSet
from ..data.events import EventPhase
from ..data.pairing import EventPairer, PairingConfig
from ..data.snapshot import Frame, SnapshotBuffer
from .episodes import Episode, EpisodeError, TimingConfig
from .record import MAX_ATTEMPTS
from .scene import SceneConfig
from .styles import sample_style
from .tasks import Draw


def simulate_pairs(split: str = "val", n: int = 4, style: str = "train", seed: int = 0, none_fraction: float = 0.2,
                   size: tuple[int, int] = (640, 480), pairing: PairingConfig = PairingConfig()) -> PairSet:
    """`n` episodes of a split as a PairSet of RGB frames (objects: the manipulated class)."""
    draw = Draw(split, style, seed, none_fraction)
    before, after, actions, objects = [], [], [], []
    for index in range(n):
        spec = draw.spec(index)
        for attempt in range(MAX_ATTEMPTS):
            rng = draw.rng(index, attempt)
            try:
                episode = Episode(spec, sample_style(rng, style), rng, SceneConfig(width=size[0], height=size[1]),
                                  TimingConfig())
                episode.check_reach()
                break
            except EpisodeError:
                continue
        else:
            raise RuntimeError(f"episode {index} ({spec.obj_class} {spec.attempted}) could not be played")
        pairer = EventPairer(pairing, SnapshotBuffer())
        events = [EventPhase("start", "e", int(episode.start_s * 1e9)), EventPhase("end", "e", int(episode.end_s * 1e9))]
        pair = None
        try:
            for t, rgb in episode.frames():
                stamp = int(round(t * 1e9))
                outcomes = []
                while events and events[0].stamp_ns <= stamp:
                    ev = events.pop(0)
                    outcomes += pairer.on_event(ev, ev.stamp_ns)
                outcomes += pairer.on_frame(Frame(stamp, rgb))
                pair = next((o for o in outcomes if o.kind == "pair"), pair)
        finally:
            episode.close()
        if pair is None:
            raise RuntimeError(f"episode {index} gave no pair (its frames do not cover the event)")
        before.append(pair.before.payload)
        after.append(pair.after.payload)
        actions.append(spec.action)
        objects.append(spec.obj_class)
    return PairSet(np.stack(before), np.stack(after), actions, objects)
