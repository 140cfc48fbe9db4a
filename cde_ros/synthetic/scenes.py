"""Synthetic intervention scenes with the structure of the Causal Triplet benchmark.

A scene holds one manipulated object (single) or that object plus 2-4 distractors (cluttered) on a
textured background. An *action* changes the state of the manipulated object; `none` is an action
that failed, so nothing about the object changes. Every action has the same visual signature on
every object class (a lid lifts and shows the dark inside, an indicator lights up, a liquid level
rises, the object slides), while classes differ in shape, size and colour: that is what lets the
delta embedding generalise to unseen object-action combinations and unseen classes.

Nuisances between the two views: a lighting change (gain and tint), a small camera shift, sensor
noise, and in cluttered scenes distractor changes unrelated to any action (colour, size, jitter)
plus a robot-arm-like occluder that moves between the views.

For training data, objects can be painted random colours (`SceneConfig.random_color_p`) and
drawn with a random body outline (`SceneConfig.random_shape_p`): domain randomisation. Test splits
keep every class's own colours and outline; a class's parts (lid, light, tank) and size are never
randomised, so a held-out class's mix of parts is still never seen in training.

Splits (deterministic): `iid` (training combinations), `val` (training combinations, other
samples), `comp` (held-out object-action combinations; every action and class still seen in
training), `syst` (held-out object classes).

Everything is rendered in normalised coordinates, so any resolution can be asked for.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..core.actions import ACTIONS, OPPOSITE  # noqa: F401  (re-exported)
from ..core.dataset import PairSet

_PART_ACTIONS = {"lid": ("open", "close"), "light": ("turn_on", "turn_off"),
                 "tank": ("fill", "empty"), "movable": ("push_left", "push_right")}


@dataclass(frozen=True)
class ObjectClass:
    name: str
    shape: str  # rect | round | tall | wide | tri | ellipse (rect, tall and wide all draw a box)
    size: tuple[float, float]  # width, height as a fraction of the image
    colors: tuple[tuple[int, int, int], ...]
    parts: frozenset[str]

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a for p in ("lid", "light", "tank", "movable") if p in self.parts for a in _PART_ACTIONS[p])


def _cls(name, shape, size, colors, *parts) -> ObjectClass:
    return ObjectClass(name, shape, size, tuple(colors), frozenset(parts))


OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    _cls("box", "rect", (0.26, 0.22), [(176, 124, 72), (150, 100, 60)], "lid", "movable"),
    _cls("jar", "round", (0.22, 0.26), [(120, 180, 200), (150, 200, 170)], "lid", "tank"),
    _cls("cabinet", "tall", (0.22, 0.34), [(200, 190, 160), (170, 150, 120)], "lid"),
    _cls("lamp", "tri", (0.24, 0.28), [(230, 200, 90), (210, 120, 80)], "light", "movable"),
    _cls("laptop", "wide", (0.32, 0.18), [(150, 150, 160), (70, 70, 80)], "lid", "light"),
    _cls("bottle", "tall", (0.14, 0.32), [(90, 170, 90), (60, 130, 160)], "tank", "movable"),
    _cls("cup", "round", (0.18, 0.18), [(230, 230, 230), (220, 90, 90)], "tank", "movable"),
    _cls("kettle", "ellipse", (0.26, 0.24), [(200, 60, 60), (80, 80, 90)], "light", "tank"),
    _cls("microwave", "wide", (0.32, 0.22), [(220, 220, 215), (50, 50, 55)], "lid", "light"),
    _cls("book", "wide", (0.26, 0.16), [(140, 40, 60), (40, 80, 140)], "lid", "movable"),
    _cls("drawer", "rect", (0.28, 0.20), [(160, 110, 70), (120, 90, 60)], "lid"),
    _cls("toaster", "rect", (0.24, 0.20), [(190, 190, 200), (230, 150, 40)], "light", "movable"),
    _cls("pot", "ellipse", (0.28, 0.22), [(110, 110, 120), (170, 80, 40)], "lid", "tank"),
    _cls("fan", "round", (0.24, 0.24), [(80, 140, 220), (240, 240, 240)], "light", "movable"),
)
CLASS_BY_NAME = {c.name: c for c in OBJECT_CLASSES}
# the distinct outlines _draw_object draws (rect, tall and wide are all boxes of the class's size)
BODY_SHAPES: tuple[str, ...] = ("rect", "round", "ellipse", "tri")

# Held-out object classes for the systematic split: each has a different mix of parts, and every
# action keeps at least three training classes.
SYSTEMATIC_CLASSES: tuple[str, ...] = ("kettle", "book", "fan")


def _compositional_holdout() -> frozenset[tuple[str, str]]:
    """One held-out action per training class, chosen round-robin so each action is held out about
    equally often and still stays in training with >= 2 other classes."""
    train = [c for c in OBJECT_CLASSES if c.name not in SYSTEMATIC_CLASSES]
    seen_count = {a: sum(a in c.actions for c in train) for a in ACTIONS if a != "none"}
    held: set[tuple[str, str]] = set()
    rotation = [a for a in ACTIONS if a != "none"]
    k = 0
    for c in train:
        for step in range(len(rotation)):
            a = rotation[(k + step) % len(rotation)]
            if a in c.actions and seen_count[a] > 2:
                held.add((c.name, a))
                seen_count[a] -= 1
                k = (k + step + 1) % len(rotation)
                break
    return frozenset(held)


COMPOSITIONAL_HOLDOUT: frozenset[tuple[str, str]] = _compositional_holdout()
SPLITS = ("iid", "val", "comp", "syst")


def combinations(split: str) -> list[tuple[str, str]]:
    """(object class, action) pairs a split draws from; `none` is added for every class."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    out = []
    for c in OBJECT_CLASSES:
        if (split == "syst") != (c.name in SYSTEMATIC_CLASSES):
            continue
        for a in c.actions:
            held = (c.name, a) in COMPOSITIONAL_HOLDOUT
            if split == "comp" and held or split in ("iid", "val", "syst") and not held:
                out.append((c.name, a))
        if split != "comp":
            out.append((c.name, "none"))
    if split == "comp":  # failed actions on the held-out combinations' classes
        out += sorted({(o, "none") for o, _ in out})
    return out


# ----------------------------------------------------------------------------------------- state

@dataclass
class ObjState:
    cls: ObjectClass
    x: float  # centre, fraction of the image
    y: float
    scale: float
    color: tuple[int, int, int]
    is_open: bool = False
    is_on: bool = False
    fill: float = 0.2

    def copy(self) -> "ObjState":
        return dataclasses.replace(self)


@dataclass
class Scene:
    target: ObjState
    distractors: list[ObjState]
    background: np.ndarray  # (R, R, 3) uint8 texture in normalised coordinates, resampled per render
    action: str  # what really happens (the label); `none` for a failed action
    obj_class: str
    attempted: str = ""  # what the robot tried: the action itself, or for `none` the one that failed
    arm_before: tuple[float, float] | None = None
    arm_after: tuple[float, float] | None = None
    # per-view nuisance parameters: (gain, tint(3), shift_x, shift_y)
    view_before: tuple = (1.0, (1.0, 1.0, 1.0), 0.0, 0.0)
    view_after: tuple = (1.0, (1.0, 1.0, 1.0), 0.0, 0.0)
    after_target: ObjState | None = None
    after_distractors: list[ObjState] = field(default_factory=list)


PUSH_DISTANCE = 0.16
FILL_LOW, FILL_HIGH = (0.1, 0.35), (0.7, 0.92)


def precondition_state(obj: ObjState, action: str, rng: np.random.Generator) -> None:
    """Set the object's state so the action is possible (only closed things open, ...)."""
    obj.is_open = action == "close" if action in ("open", "close") else bool(rng.random() < 0.5)
    obj.is_on = action == "turn_off" if action in ("turn_on", "turn_off") else bool(rng.random() < 0.5)
    if action == "fill":
        obj.fill = float(rng.uniform(*FILL_LOW))
    elif action == "empty":
        obj.fill = float(rng.uniform(*FILL_HIGH))
    else:
        obj.fill = float(rng.uniform(FILL_LOW[0], FILL_HIGH[1]))
    half_w = obj.cls.size[0] * obj.scale / 2
    if action == "push_left":
        obj.x = float(rng.uniform(0.06 + half_w + PUSH_DISTANCE, 0.94 - half_w))
    elif action == "push_right":
        obj.x = float(rng.uniform(0.06 + half_w, 0.94 - half_w - PUSH_DISTANCE))


def apply_action(obj: ObjState, action: str, progress: float = 1.0) -> ObjState:
    """The object's state after `progress` (0..1) of the action; `none` changes nothing."""
    out = obj.copy()
    if action == "none" or progress <= 0:
        return out
    p = min(1.0, progress)
    if action in ("open", "close") and p >= 0.5:
        out.is_open = action == "open"
    elif action in ("turn_on", "turn_off") and p >= 0.5:
        out.is_on = action == "turn_on"
    elif action in ("fill", "empty"):
        target = FILL_HIGH[1] - 0.04 if action == "fill" else FILL_LOW[0] + 0.02
        out.fill = obj.fill + (target - obj.fill) * p
    elif action in ("push_left", "push_right"):
        out.x = obj.x + (-1 if action == "push_left" else 1) * PUSH_DISTANCE * p
    return out


# ------------------------------------------------------------------------------------- rendering

def _shade(color, f):
    return tuple(int(max(0, min(255, c * f))) for c in color)


def _draw_object(img: np.ndarray, o: ObjState) -> None:
    h, w = img.shape[:2]
    bw, bh = o.cls.size[0] * o.scale * w, o.cls.size[1] * o.scale * h
    cx, cy = o.x * w, o.y * h
    x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
    P = lambda x, y: (int(round(x)), int(round(y)))  # noqa: E731
    aa = cv2.LINE_AA
    color, dark = o.color, _shade(o.color, 0.55)
    shape = o.cls.shape
    if shape in ("rect", "tall", "wide"):
        cv2.rectangle(img, P(x0, y0), P(x1, y1), color, -1, aa)
        cv2.rectangle(img, P(x0, y0), P(x1, y1), dark, max(1, w // 96), aa)
    elif shape in ("round", "ellipse"):
        axes = P(bw / 2, bh / 2) if shape == "ellipse" else P(min(bw, bh) / 2, min(bw, bh) / 2)
        cv2.ellipse(img, P(cx, cy), axes, 0, 0, 360, color, -1, aa)
        cv2.ellipse(img, P(cx, cy), axes, 0, 0, 360, dark, max(1, w // 96), aa)
    elif shape == "tri":
        pts = np.array([P(cx, y0), P(x1, y1), P(x0, y1)], np.int32)
        cv2.fillPoly(img, [pts], color, aa)
        cv2.polylines(img, [pts], True, dark, max(1, w // 96), aa)
    parts = o.cls.parts
    if "lid" in parts:
        lid_h = bh * 0.26
        if o.is_open:  # dark inside shows, the lid stands up beside the opening
            cv2.rectangle(img, P(x0 + bw * 0.1, y0), P(x1 - bw * 0.1, y0 + lid_h), (22, 18, 16), -1, aa)
            cv2.rectangle(img, P(x0 - bw * 0.05, y0 - lid_h * 1.6), P(x0 + bw * 0.55, y0 - lid_h * 0.4),
                          _shade(color, 0.8), -1, aa)
        else:
            cv2.rectangle(img, P(x0 - bw * 0.04, y0 - lid_h * 0.3), P(x1 + bw * 0.04, y0 + lid_h * 0.5),
                          _shade(color, 0.8), -1, aa)
    if "light" in parts:
        r = max(1.5, min(bw, bh) * 0.14)
        lx, ly = cx + bw * 0.22, cy + bh * 0.05
        if o.is_on:
            cv2.circle(img, P(lx, ly), int(round(r * 1.9)), (255, 250, 190), -1, aa)
            cv2.circle(img, P(lx, ly), int(round(r)), (255, 255, 120), -1, aa)
        else:
            cv2.circle(img, P(lx, ly), int(round(r)), (45, 45, 45), -1, aa)
    if "tank" in parts:
        tx0, tx1 = cx - bw * 0.3, cx - bw * 0.02
        ty0, ty1 = cy - bh * 0.05, y1 - bh * 0.12
        cv2.rectangle(img, P(tx0, ty0), P(tx1, ty1), (225, 228, 232), -1, aa)
        level = ty1 - (ty1 - ty0) * o.fill
        cv2.rectangle(img, P(tx0, level), P(tx1, ty1), (40, 90, 235), -1, aa)


def _draw_arm(img: np.ndarray, tip: tuple[float, float]) -> None:
    h, w = img.shape[:2]
    tx, ty = tip[0] * w, tip[1] * h
    base = (tx + 0.25 * w, -0.05 * h)
    thick = max(2, int(0.07 * w))
    cv2.line(img, (int(base[0]), int(base[1])), (int(tx), int(ty)), (95, 95, 105), thick, cv2.LINE_AA)
    cv2.circle(img, (int(tx), int(ty)), thick // 2 + 1, (60, 60, 70), -1, cv2.LINE_AA)
    f = int(0.05 * w)
    for s in (-1, 1):
        cv2.line(img, (int(tx), int(ty)), (int(tx + s * f * 0.6), int(ty + f)), (60, 60, 70), max(1, thick // 3), cv2.LINE_AA)


def _background(rng: np.random.Generator, res: int = 64) -> np.ndarray:
    base = rng.integers(60, 200, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32) / res
    kind = rng.integers(0, 3)
    if kind == 0:  # stripes
        f, ang = rng.uniform(3, 9), rng.uniform(0, math.pi)
        pat = np.sin(2 * math.pi * f * (xx * math.cos(ang) + yy * math.sin(ang)))
    elif kind == 1:  # checker
        f = rng.integers(3, 8)
        pat = ((np.floor(xx * f) + np.floor(yy * f)) % 2) * 2 - 1
    else:  # blotches
        pat = cv2.GaussianBlur(rng.standard_normal((res, res)).astype(np.float32), (0, 0), res / 16)
        pat /= np.abs(pat).max() + 1e-6
    amp = rng.uniform(8, 28)
    grad = (xx * rng.uniform(-30, 30) + yy * rng.uniform(-30, 30))[..., None]
    bg = base[None, None] + amp * pat[..., None] * rng.uniform(0.5, 1.0, size=3) + grad
    return np.clip(bg, 0, 255).astype(np.uint8)


def render(scene_bg: np.ndarray, objects: Sequence[ObjState], arm: tuple[float, float] | None,
           view: tuple, size: tuple[int, int], rng: np.random.Generator, noise: float = 4.0) -> np.ndarray:
    """One camera view: background, objects, arm, then camera shift, lighting and noise."""
    w, h = size
    gain, tint, sx, sy = view
    img = cv2.resize(scene_bg, (w, h), interpolation=cv2.INTER_LINEAR)
    for o in sorted(objects, key=lambda o: o.y):
        _draw_object(img, o)
    if arm is not None:
        _draw_arm(img, arm)
    if sx or sy:
        m = np.float32([[1, 0, sx * w], [0, 1, sy * h]])
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = img.astype(np.float32)
    out *= (gain * np.asarray(tint, np.float32))[None, None]
    if noise > 0:
        out += noise * rng.standard_normal(out.shape, dtype=np.float32)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------------- generation

@dataclass(frozen=True)
class SceneConfig:
    clutter: bool = False
    size: tuple[int, int] = (128, 128)  # width, height of the rendered views
    lighting: float = 0.15  # max relative gain change between views
    shift: float = 0.03  # max camera shift, fraction of the image
    noise: float = 4.0  # sensor noise std (0..255)
    distractors: tuple[int, int] = (2, 4)
    distractor_change_p: float = 0.5
    # Probability that an object (target or distractor) is painted a uniformly random colour
    # instead of one of its class's colours. Domain randomisation for training data: colour then
    # tells nothing about the class, so a model has to read the change itself. Test splits keep
    # 0 (class colours), so held-out classes still look as they are defined.
    random_color_p: float = 0.0
    # Probability that an object is drawn with a random body outline (BODY_SHAPES) instead of its
    # class's; size and parts stay the class's. Domain randomisation for training data, like
    # random_color_p: outline then tells nothing about which parts can change.
    random_shape_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("random_color_p", "random_shape_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")


# The shipped model's domain randomisation of its training pairs: half the objects in random
# colours, half with random outlines. `train-synthetic` and the benchmark use it unless told otherwise.
TRAIN_RANDOM_COLOR_P = 0.5
TRAIN_RANDOM_SHAPE_P = 0.5


def _place(objs: list[ObjState], o: ObjState, rng, tries=30) -> bool:
    half_w, half_h = o.cls.size[0] * o.scale / 2, o.cls.size[1] * o.scale / 2
    for _ in range(tries):
        o.x = float(rng.uniform(0.08 + half_w, 0.92 - half_w))
        o.y = float(rng.uniform(0.14 + half_h, 0.94 - half_h))
        if all(abs(o.x - p.x) > half_w + p.cls.size[0] * p.scale / 2 + 0.02 or
               abs(o.y - p.y) > half_h + p.cls.size[1] * p.scale / 2 + 0.06 for p in objs):
            return True
    return False


def _view(cfg: SceneConfig, rng) -> tuple:
    gain = 1.0 + rng.uniform(-cfg.lighting, cfg.lighting)
    tint = tuple(1.0 + rng.uniform(-cfg.lighting / 3, cfg.lighting / 3, size=3))
    return (gain, tint, rng.uniform(-cfg.shift, cfg.shift), rng.uniform(-cfg.shift, cfg.shift))


def make_scene(obj_class: str, action: str, cfg: SceneConfig, rng: np.random.Generator) -> Scene:
    cls = CLASS_BY_NAME[obj_class]
    if action != "none" and action not in cls.actions:
        raise ValueError(f"{obj_class} does not afford {action!r} (it affords {cls.actions})")
    scale = cfg.clutter and 0.8 or 1.0
    target = ObjState(cls, 0.5, 0.5, scale * rng.uniform(0.9, 1.15),
                      tuple(int(c) for c in np.clip(np.array(cls.colors[rng.integers(len(cls.colors))]) +
                                                     rng.integers(-25, 26, 3), 0, 255)))
    _maybe_randomise(target, cfg, rng)
    # the failed action is one the object affords; its precondition holds, nothing happens
    pre_action = action if action != "none" else cls.actions[rng.integers(len(cls.actions))]
    placed: list[ObjState] = []
    _place(placed, target, rng)
    precondition_state(target, pre_action, rng)
    if pre_action in ("push_left", "push_right"):
        target.y = float(rng.uniform(0.2 + target.cls.size[1] / 2, 0.9 - target.cls.size[1] / 2))
    placed.append(target)
    swept = dataclasses.replace(target, x=(target.x + apply_action(target, pre_action).x) / 2,
                                scale=target.scale * 1.0) if pre_action.startswith("push") else None
    distractors: list[ObjState] = []
    if cfg.clutter:
        n = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
        keepout = placed + ([swept] if swept else [])
        for _ in range(n):
            dc = OBJECT_CLASSES[rng.integers(len(OBJECT_CLASSES))]
            d = ObjState(dc, 0.5, 0.5, 0.7 * rng.uniform(0.85, 1.1), dc.colors[rng.integers(len(dc.colors))],
                         is_open=bool(rng.random() < 0.5), is_on=bool(rng.random() < 0.5),
                         fill=float(rng.uniform(0.2, 0.8)))
            _maybe_randomise(d, cfg, rng)
            if _place(keepout, d, rng):
                keepout.append(d)
                distractors.append(d)
    after_target = apply_action(target, action)
    after_distractors = []
    for d in distractors:
        d2 = d.copy()
        if rng.random() < cfg.distractor_change_p:  # a change that is not any action
            kind = rng.integers(3)
            if kind == 0:
                d2.color = tuple(int(c) for c in np.clip(np.array(d.color) + rng.integers(-70, 71, 3), 0, 255))
            elif kind == 1:
                d2.scale = d.scale * rng.uniform(0.85, 1.15)
            else:
                d2.x += rng.uniform(-0.02, 0.02)
                d2.y += rng.uniform(-0.02, 0.02)
        after_distractors.append(d2)
    arm_b = arm_a = None
    if cfg.clutter:
        arm_b = _arm_position(target, rng)
        arm_a = _arm_position(target, rng)
    return Scene(target=target, distractors=distractors, background=_background(rng), action=action,
                 obj_class=obj_class, attempted=pre_action, arm_before=arm_b, arm_after=arm_a,
                 view_before=_view(cfg, rng), view_after=_view(cfg, rng),
                 after_target=after_target, after_distractors=after_distractors)


def _maybe_randomise(o: ObjState, cfg: SceneConfig, rng: np.random.Generator) -> None:
    """Repaint `o` a uniformly random colour with probability `cfg.random_color_p`, and give it a
    random body outline with probability `cfg.random_shape_p`. A probability of 0 draws no random
    numbers, so data made without randomisation does not change when an option is added."""
    if cfg.random_color_p and rng.random() < cfg.random_color_p:
        o.color = tuple(int(c) for c in rng.integers(30, 240, 3))
    if cfg.random_shape_p and rng.random() < cfg.random_shape_p:
        o.cls = dataclasses.replace(o.cls, shape=BODY_SHAPES[rng.integers(len(BODY_SHAPES))])


def _arm_position(target: ObjState, rng) -> tuple[float, float]:
    """A gripper tip somewhere the target is not (the arm occludes distractors, not the target)."""
    for _ in range(20):
        p = (float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.1, 0.6)))
        if abs(p[0] - target.x) > 0.22 or p[1] < target.y - target.cls.size[1] * target.scale - 0.1:
            return p
    return (0.05 if target.x > 0.5 else 0.95, 0.1)


def render_pair(scene: Scene, cfg: SceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    before = render(scene.background, [scene.target, *scene.distractors], scene.arm_before,
                    scene.view_before, cfg.size, rng, cfg.noise)
    after = render(scene.background, [scene.after_target, *scene.after_distractors], scene.arm_after,
                   scene.view_after, cfg.size, rng, cfg.noise)
    return before, after


def split_seed(split: str, seed: int) -> int:
    return seed * 1000 + SPLITS.index(split) + 17


def generate_pairs(split: str, n: int, cfg: SceneConfig = SceneConfig(), seed: int = 0,
                   none_fraction: float = 1 / 9) -> PairSet:
    """`n` pairs from a split, deterministic in (split, n, cfg, seed). `none` makes up
    `none_fraction` of the pairs; the rest cycle evenly through the split's combinations."""
    rng = np.random.default_rng(split_seed(split, seed))
    combos = combinations(split)
    acting = [c for c in combos if c[1] != "none"]
    idle = [c for c in combos if c[1] == "none"]
    w, h = cfg.size
    before = np.empty((n, h, w, 3), np.uint8)
    after = np.empty((n, h, w, 3), np.uint8)
    actions, objects = [], []
    order = rng.permutation(len(acting))
    k = 0
    for i in range(n):
        if rng.random() < none_fraction:
            obj, act = idle[rng.integers(len(idle))]
        else:
            obj, act = acting[order[k % len(order)]]
            k += 1
        scene = make_scene(obj, act, cfg, rng)
        before[i], after[i] = render_pair(scene, cfg, rng)
        actions.append(act)
        objects.append(obj)
    return PairSet(before, after, actions, objects)


# ------------------------------------------------------------------------------- timed streams

@dataclass(frozen=True)
class StreamEvent:
    phase: str  # start | end
    event_id: str
    stamp_ns: int
    action: str  # the label (what really happened)
    commanded: str = ""  # what the robot tried (differs from `action` when it is `none`)


@dataclass(frozen=True)
class StreamConfig:
    rate_hz: float = 20.0
    idle_s: tuple[float, float] = (0.8, 1.2)  # scene visible before the manipulation starts
    manipulation_s: tuple[float, float] = (1.5, 2.5)
    hold_s: tuple[float, float] = (0.8, 1.0)  # after-state visible after the end
    jitter_s: float = 0.002  # camera stamp jitter
    start_ns: int = 1_000_000_000


def stream(split: str, n_events: int, scene_cfg: SceneConfig = SceneConfig(),
           stream_cfg: StreamConfig = StreamConfig(), seed: int = 0,
           ) -> Iterator[tuple[str, int, object]]:
    """A timed camera stream with manipulation events, in stamp order.

    Yields ("frame", stamp_ns, rgb) and ("event", stamp_ns, StreamEvent). Each event shows a new
    scene: idle (before state), the arm reaches the target while the state changes, the arm
    leaves, the after state holds. Lighting drifts slowly between before and after."""
    rng = np.random.default_rng(split_seed(split, seed) + 7)
    pairs_rng = np.random.default_rng(split_seed(split, seed) + 11)
    combos = combinations(split)
    period = 1.0 / stream_cfg.rate_hz
    t = stream_cfg.start_ns / 1e9
    for i in range(n_events):
        obj, act = combos[pairs_rng.integers(len(combos))]
        scene = make_scene(obj, act, scene_cfg, rng)
        idle = rng.uniform(*stream_cfg.idle_s)
        manip = rng.uniform(*stream_cfg.manipulation_s)
        hold = rng.uniform(*stream_cfg.hold_s)
        t_start, t_end = t + idle, t + idle + manip
        t_stop = t_end + hold
        rest = scene.arm_before or (0.9, 0.05)
        eid = f"ev-{i:04d}"
        events = [StreamEvent("start", eid, int(round(t_start * 1e9)), act, scene.attempted),
                  StreamEvent("end", eid, int(round(t_end * 1e9)), act, scene.attempted)]
        while t < t_stop:
            for ev in list(events):
                if ev.stamp_ns <= int(round(t * 1e9)):
                    yield ("event", ev.stamp_ns, ev)
                    events.remove(ev)
            if t < t_start:
                p, arm, view = 0.0, rest, scene.view_before
            elif t < t_end:
                p = (t - t_start) / manip
                reach = math.sin(math.pi * p)  # the arm goes to the target and back
                tip = (scene.target.x, scene.target.y - 0.05)
                arm = (rest[0] + (tip[0] - rest[0]) * reach, rest[1] + (tip[1] - rest[1]) * reach)
                view = tuple(np.array(scene.view_before[:1]) * (1 - p) + np.array(scene.view_after[:1]) * p) + \
                    (tuple(np.array(scene.view_before[1]) * (1 - p) + np.array(scene.view_after[1]) * p),
                     scene.view_before[2], scene.view_before[3])
            else:
                p, arm = 1.0, scene.arm_after or rest
                view = scene.view_after[:2] + scene.view_before[2:]
            target = apply_action(scene.target, act, p)
            dist = scene.after_distractors if p >= 1.0 else scene.distractors
            frame = render(scene.background, [target, *dist], arm if scene_cfg.clutter else None,
                           view, scene_cfg.size, rng, scene_cfg.noise)
            stamp = int(round((t + rng.uniform(-stream_cfg.jitter_s, stream_cfg.jitter_s)) * 1e9))
            yield ("frame", stamp, frame)
            t += period
        for ev in events:
            yield ("event", ev.stamp_ns, ev)
