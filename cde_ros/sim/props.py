"""Distractor props on the counter: cans, bottles, boxes, fruit, plates, cups, jars, plants and a
tablet whose screen can change. Each stands on slides (x, y) and a hinge (yaw), so a prop can
move a little on its own between the before and the after view (a bumped counter); the tablet's
screen can change brightness and colour. Neither is any action: the model has to ignore them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fixtures.base import GlowVar, JointVar, box, cyl, ring
from .mjcf import Builder, E

KINDS = ("can", "bottle", "box", "fruit", "plate", "cup", "jar", "plant", "tablet", "board")


@dataclass
class Prop:
    name: str
    kind: str
    radius: float  # footprint radius (m) for placement
    vars: dict  # variable -> realisations (x, y, yaw; screen)


def _rgba(rng, lo=0.1, hi=0.95, a=1.0):
    return (*[float(v) for v in rng.uniform(lo, hi, 3)], a)


def make_prop(b: Builder, name: str, kind: str, pos, rng: np.random.Generator) -> tuple[E, Prop]:
    mat = b.material(f"{name}_m", _rgba(rng), specular=float(rng.uniform(0.1, 0.8)), shininess=float(rng.uniform(0.1, 0.8)))
    geoms: list[E] = []
    radius = 0.05
    pvars: dict = {}
    if kind == "can":
        r, h = rng.uniform(0.025, 0.035), rng.uniform(0.08, 0.13)
        geoms = [cyl(None, r, h, (0, 0, h / 2), mat)]
        radius = r
    elif kind == "bottle":
        r, h = rng.uniform(0.025, 0.04), rng.uniform(0.16, 0.26)
        geoms = [cyl(None, r, h * 0.7, (0, 0, h * 0.35), mat), cyl(None, r * 0.4, h * 0.3, (0, 0, h * 0.85), mat)]
        radius = r
    elif kind == "box":
        s = rng.uniform((0.06, 0.04, 0.1), (0.14, 0.08, 0.24))
        geoms = [box(None, s, (0, 0, s[2] / 2), mat)]
        radius = float(np.hypot(s[0], s[1]) / 2)
    elif kind == "fruit":
        n = int(rng.integers(1, 4))
        for i in range(n):
            r = rng.uniform(0.03, 0.045)
            geoms.append(E("geom", type="ellipsoid", size=(r, r, r * rng.uniform(0.85, 1.1)),
                           pos=(0.05 * i - 0.05 * (n - 1) / 2, rng.uniform(-0.01, 0.01), r),
                           material=b.material(f"{name}_m{i}", _rgba(rng, 0.2, 1.0), specular=0.5)))
        radius = 0.04 * n
    elif kind == "plate":
        r = rng.uniform(0.08, 0.12)
        geoms = [cyl(None, r, 0.012, (0, 0, 0.006), mat), cyl(None, r * 0.7, 0.004, (0, 0, 0.013), mat)]
        radius = r
    elif kind == "cup":
        r, h = rng.uniform(0.03, 0.045), rng.uniform(0.07, 0.1)
        geoms = ring(f"{name}_w", r, h, 0.005, 10, mat) + [cyl(None, r, 0.006, (0, 0, 0.003), mat)]
        radius = r
    elif kind == "jar":
        r, h = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.14)
        lid = b.material(f"{name}_lid", _rgba(rng), specular=0.7)
        glass = b.material(f"{name}_glass", _rgba(rng, 0.5, 0.95, 0.5), specular=0.9, shininess=0.9)
        geoms = [cyl(None, r, h, (0, 0, h / 2), glass), cyl(None, r * 1.02, 0.02, (0, 0, h + 0.01), lid),
                 cyl(None, r * 0.8, h * rng.uniform(0.3, 0.8), (0, 0, h * 0.25), mat)]
        radius = r
    elif kind == "plant":
        r, h = rng.uniform(0.04, 0.06), rng.uniform(0.06, 0.1)
        leaf = b.material(f"{name}_leaf", (float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.4, 0.7)),
                                           float(rng.uniform(0.1, 0.3)), 1), specular=0.3)
        geoms = [cyl(None, r, h, (0, 0, h / 2), mat)]
        for i in range(int(rng.integers(3, 6))):
            geoms.append(E("geom", type="ellipsoid", size=(rng.uniform(0.02, 0.04), 0.012, rng.uniform(0.05, 0.09)),
                           pos=(rng.uniform(-r, r) * 0.6, rng.uniform(-r, r) * 0.6, h + 0.05),
                           euler=tuple(rng.uniform(-0.6, 0.6, 3)), material=leaf))
        radius = r
    elif kind == "tablet":
        w, hh = rng.uniform(0.14, 0.22), rng.uniform(0.1, 0.15)
        b.material(f"{name}_screen", _rgba(rng, 0.05, 0.3), specular=0.9, shininess=0.9, emission=0.0)
        tilt = rng.uniform(0.9, 1.3)
        geoms = [box(None, (w, 0.012, hh), (0, 0, hh / 2 * np.sin(tilt) + 0.01), mat, euler=(tilt - np.pi / 2, 0, 0)),
                 box(None, (w * 0.9, 0.004, hh * 0.85), (0, -0.007 * np.sin(tilt), hh / 2 * np.sin(tilt) + 0.012),
                     f"{name}_screen", euler=(tilt - np.pi / 2, 0, 0)),
                 box(None, (w * 0.4, 0.06, 0.01), (0, 0.03, 0.005), mat)]
        radius = float(w / 2)
        pvars["screen"] = [GlowVar((f"{name}_screen",), emission=float(rng.uniform(0.3, 0.8)), threshold=0.5,
                                   rgba_on=(_rgba(rng, 0.3, 1.0),))]
    elif kind == "board":
        s = rng.uniform((0.2, 0.14, 0.012), (0.32, 0.22, 0.02))
        geoms = [box(None, s, (0, 0, s[2] / 2), mat)]
        radius = float(np.hypot(s[0], s[1]) / 2)
    else:
        raise ValueError(f"unknown prop kind {kind!r}")
    yaw0 = float(rng.uniform(-np.pi, np.pi))
    for axis, jtype, ax, rng_ in (("x", "slide", (1, 0, 0), (-0.05, 0.05)), ("y", "slide", (0, 1, 0), (-0.05, 0.05)),
                                  ("yaw", "hinge", (0, 0, 1), (-0.8, 0.8))):
        pvars[axis] = [JointVar(f"{name}_{axis}", rng_[0], rng_[1])]
    body = E("body", E("joint", name=f"{name}_x", type="slide", axis=(1, 0, 0), range=(-0.05, 0.05)),
             E("joint", name=f"{name}_y", type="slide", axis=(0, 1, 0), range=(-0.05, 0.05)),
             E("joint", name=f"{name}_yaw", type="hinge", axis=(0, 0, 1), range=(-0.8, 0.8)),
             E("body", *geoms, euler=(0, 0, yaw0)), name=name, pos=tuple(pos))
    return body, Prop(name, kind, radius, pvars)
