"""Scripted manipulation episodes: a scene, the arm's trajectory through the fixture's plan, the
camera frames it produces and the start/end events around it.

Timeline of an episode (sim time, seconds from its first frame):

    idle (arm still at its start pose)  | start event | approach, act, release, retract to an
    end pose drawn anew (never the start pose) | end event | hold (everything still)

Frames are rendered only at the camera's rate. During the manipulation the camera shakes a
little and settles at a slightly different pose, the key light drifts, and props may move a
little on their own (a bumped counter) or a tablet's screen may change: nuisances that are no
action. For a failed attempt (`none`) the fixture's plan is replayed through
`fixtures.base.failure`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np

from .fixtures import CLASSES
from .fixtures.base import Segment, failure
from .robot import frame as grip_frame
from .scene import TWIN_PREFIX, Scene, SceneConfig
from .styles import Style


class EpisodeError(RuntimeError):
    """An episode that cannot be played (the arm cannot reach a target); the recorder draws another."""


@dataclass(frozen=True)
class EpisodeSpec:
    obj_class: str
    action: str  # what really happens: the label (`none` for a failed attempt)
    attempted: str  # what the robot tries (equals `action` unless it is `none`)
    failure: str | None = None  # failure mode of a `none` episode


@dataclass(frozen=True)
class TimingConfig:
    rate_hz: float = 10.0
    idle_s: tuple[float, float] = (0.4, 0.8)
    hold_s: tuple[float, float] = (0.7, 1.0)
    retract_s: tuple[float, float] = (0.6, 1.0)
    jitter_s: float = 0.002  # camera stamp jitter


@dataclass
class EpisodeTruth:
    """What really happened, recorded beside the events (`/sim/ground_truth`)."""

    obj_class: str
    action: str
    attempted: str
    failure: str | None
    style: str
    camera: str
    start_s: float
    end_s: float
    frames: int = 0
    prop_changes: int = 0
    ik_max_error_m: float = 0.0
    mean_render_ms: float = 0.0
    # the manipulated fixture's box in the after frame, [x, y, w, h] camera pixels (None: out of view)
    target_box: list | None = None
    # the twin's box there (recorded with a twin, SceneConfig.twin; else None)
    twin_box: list | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def smooth(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def _quat(mj, rot: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mj.mju_mat2Quat(q, np.ascontiguousarray(rot).reshape(-1))
    return q


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(d)
    return (math.sin((1 - s) * th) * q0 + math.sin(s * th) * q1) / math.sin(th)


def _mat(mj, q: np.ndarray) -> np.ndarray:
    m = np.zeros(9)
    mj.mju_quat2Mat(m, q)
    return m.reshape(3, 3)


class Episode:
    """One manipulation in a fresh scene. `frames()` yields (t seconds, RGB) at the camera rate;
    `start_s` / `end_s` are the event times; `truth` what happened."""

    def __init__(self, spec: EpisodeSpec, style: Style, rng: np.random.Generator,
                 scene_cfg: SceneConfig = SceneConfig(), timing: TimingConfig = TimingConfig()) -> None:
        if spec.obj_class not in CLASSES:
            raise ValueError(f"unknown object class {spec.obj_class!r}; choose from {sorted(CLASSES)}")
        self.spec, self.style, self.rng, self.timing = spec, style, rng, timing
        fixture = CLASSES[spec.obj_class]("f")
        if spec.attempted not in fixture.specs:
            raise ValueError(f"{spec.obj_class} does not afford {spec.attempted!r} (it affords {fixture.actions})")
        self.scene = Scene(fixture, style, rng, scene_cfg)
        self.fixture = fixture
        self.state0 = fixture.initial_state(spec.attempted, rng)
        plan = fixture.plan(spec.attempted, rng)
        self.ghosts: set[str] = set()
        if spec.action == "none":
            mode = spec.failure or str(rng.choice(fixture.specs[spec.attempted].failures))
            plan, self.ghosts = failure(plan, mode, self.state0, rng)
            self.failure = mode
        else:
            self.failure = None
        self.roll_free = fixture.specs[spec.attempted].motion in ("press", "push")
        self.scene.apply(self.state0)
        twin = self.scene.twin
        if twin is not None:  # the twin looks as the fixture did before (what it shares), and stays so
            self.scene.apply({f"{TWIN_PREFIX}:{name}": self.state0.get(name, twin.state.get(name, 0.0))
                              for name in twin.vars})
        self.scene.kinematics()
        start_pose = self._free_pose()
        end_pose = self._free_pose()
        while np.linalg.norm(end_pose[0] - start_pose[0]) < 0.08:  # never back where it started
            end_pose = self._free_pose()
        self.segments = [*plan, Segment(float(rng.uniform(*timing.retract_s)), "retract", pose=end_pose, fingers=0.6)]
        self.idle = float(rng.uniform(*timing.idle_s))
        self.hold = float(rng.uniform(*timing.hold_s))
        self.start_s = self.idle
        self.end_s = self.idle + sum(s.duration for s in self.segments)
        self.duration = self.end_s + self.hold
        # segment boundaries and the planned variables at each boundary
        self._t0 = np.cumsum([0.0] + [s.duration for s in self.segments])[:-1] + self.idle
        self._vars_at = [dict(self.state0)]
        for s in self.segments:
            self._vars_at.append({**self._vars_at[-1], **s.vars})
        self._start_pose = start_pose
        self._seg_start: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        self._nuisances()
        self.ik_max_error = 0.0
        # the arm at its start pose
        self.scene.ik.set_fingers(self.scene.data, 0.6)
        res = self.scene.ik.solve_anywhere(self.scene.data, start_pose[0], start_pose[1], roll_free=True)
        if res.position_error > 0.01:
            raise EpisodeError(f"the arm cannot reach its start pose ({res.position_error:.3f} m off)")
        self._q_start = self.scene.data.qpos.copy()
        self.truth = EpisodeTruth(spec.obj_class, spec.action, spec.attempted, self.failure, style.domain,
                                  style.camera.name, self.start_s, self.end_s)

    # ------------------------------------------------------------------ set-up

    def _free_pose(self, tries: int = 60) -> tuple[np.ndarray, np.ndarray]:
        """A resting pose of the gripper near the arm's base, pointing down-ish (start and end
        poses), one the arm can reach."""
        rng, sc = self.rng, self.scene
        to_fixture = math.atan2(self.fixture.origin[1] - sc.arm_base[1], self.fixture.origin[0] - sc.arm_base[0])
        saved = sc.data.qpos.copy()
        for _ in range(tries):
            phi = to_fixture + float(rng.uniform(-1.2, 1.2))
            r = float(rng.uniform(0.25, 0.42))
            pos = sc.arm_base + np.array([r * math.cos(phi), r * math.sin(phi), float(rng.uniform(0.3, 0.55))])
            alpha, psi = float(rng.uniform(0.0, 1.0)), float(rng.uniform(-math.pi, math.pi))
            approach = np.array([math.cos(psi) * math.sin(alpha), math.sin(psi) * math.sin(alpha), -math.cos(alpha)])
            rot = grip_frame(approach)
            # mostly clear of the fixture, so the after view shows what happened (the arm may
            # still hide part of it, as on a real robot)
            if np.hypot(*(pos[:2] - self.fixture.origin[:2])) < 0.2 and rng.random() < 0.95:
                continue
            if pos[1] < sc.arm_base[1] - 0.08 or np.linalg.norm(pos - sc.camera0.pos) < 0.5:
                continue  # not between the camera and the scene
            ok = sc.ik.solve_anywhere(sc.data, pos, rot, roll_free=True).position_error < 0.005
            sc.data.qpos[:] = saved
            if ok:
                return pos, rot
        raise EpisodeError("no reachable resting pose for the arm was found")

    def _nuisances(self) -> None:
        rng = self.rng
        self.prop_changes: list[tuple[float, str, float, float]] = []  # (time, variable, before, after)
        for p in self.scene.props:
            if rng.random() < 0.3:
                when = float(rng.uniform(self.start_s, self.end_s))
                for axis, spread in (("x", 0.35), ("y", 0.35), ("yaw", 0.25)):
                    self.prop_changes.append((when, f"{p.name}:{axis}", 0.5, 0.5 + float(rng.uniform(-spread, spread))))
            if "screen" in p.vars:
                on = float(rng.random() < 0.5)
                flips = rng.random() < 0.4
                self.prop_changes.append((float(rng.uniform(self.start_s, self.end_s)), f"{p.name}:screen", on,
                                          1.0 - on if flips else on))
        shake = self.style.camera.shake
        self.cam_before = rng.normal(0, shake, 3)
        self.cam_after = self.cam_before + rng.normal(0, shake, 3)
        self.look_before = rng.normal(0, shake, 3)
        self.look_after = self.look_before + rng.normal(0, shake, 3)
        self.light_after = 1.0 + float(rng.uniform(-1, 1)) * self.style.lighting.drift
        self._shake_rng = np.random.default_rng(int(rng.integers(1 << 31)))

    # ------------------------------------------------------------------ the trajectory

    def _resolve(self, seg: Segment, planned: dict[str, float], offset: float, lateral) -> tuple[np.ndarray, np.ndarray]:
        """The gripper target of a segment with `planned` variable values (ghosts included)."""
        sc = self.scene
        if seg.site is None:
            return seg.pose
        sc.apply(planned)
        sc.kinematics()
        pos, rot = sc.site_frame(seg.site)
        return pos - offset * rot[:, 2] + lateral[0] * rot[:, 0] + lateral[1] * rot[:, 1], rot

    def state_at(self, t: float) -> tuple[dict, dict, Segment | None, float, int]:
        """(planned variables, real variables, segment, progress, segment index) at time t."""
        i = int(np.searchsorted(self._t0, t, side="right")) - 1
        if i < 0:
            return dict(self.state0), dict(self.state0), None, 0.0, -1
        i = min(i, len(self.segments) - 1)
        seg = self.segments[i]
        s = smooth((t - self._t0[i]) / seg.duration)
        a, b = self._vars_at[i], self._vars_at[i + 1]
        planned = {k: a[k] + s * (b[k] - a[k]) for k in a}
        real = {k: (self.state0[k] if k in self.ghosts else v) for k, v in planned.items()}
        return planned, real, seg, s, i

    def _segment_start(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        if i not in self._seg_start:
            if i == 0:
                pose = self._start_pose
                fingers = 0.6
            else:
                prev = self.segments[i - 1]
                pose = self._resolve(prev, self._vars_at[i], prev.offset, prev.lateral)
                fingers = prev.fingers
            self._seg_start[i] = (pose[0], pose[1], fingers)
        return self._seg_start[i]

    def gripper_at(self, t: float, planned: dict, seg: Segment | None, s: float, i: int):
        """Target position, rotation and finger opening of the gripper at time t."""
        if seg is None:
            return self._start_pose[0], self._start_pose[1], 0.6
        p0, r0, f0 = self._segment_start(i)
        prev = self.segments[i - 1] if i > 0 else None
        fingers = f0 + s * (seg.fingers - f0)
        if seg.site is not None and prev is not None and prev.site == seg.site:
            off = prev.offset + s * (seg.offset - prev.offset)
            lat = tuple(a + s * (b - a) for a, b in zip(prev.lateral, seg.lateral))
            pos, rot = self._resolve(seg, planned, off, lat)
            return pos, rot, fingers
        p1, r1 = self._resolve(seg, planned, seg.offset, seg.lateral)
        mj = self.scene.mj
        rot = _mat(mj, _slerp(_quat(mj, r0), _quat(mj, r1), s))
        return p0 + s * (p1 - p0), rot, fingers

    # ------------------------------------------------------------------ frames

    def _nuisance_state(self, t: float) -> dict[str, float]:
        out = {}
        for when, name, before, after in self.prop_changes:
            out[name] = after if t >= when else before
        return out

    def _camera(self, t: float) -> None:
        sc = self.scene
        if t < self.start_s:
            pos, look = self.cam_before, self.look_before
        elif t >= self.end_s:
            pos, look = self.cam_after, self.look_after
        else:
            u = (t - self.start_s) / max(1e-6, self.end_s - self.start_s)
            jitter = self._shake_rng.normal(0, self.style.camera.shake, 3)
            pos = self.cam_before + u * (self.cam_after - self.cam_before) + jitter
            look = self.look_before + u * (self.look_after - self.look_before)
        sc.set_camera(pos, look)
        u = 0.0 if t < self.start_s else min(1.0, (t - self.start_s) / max(1e-6, self.end_s - self.start_s))
        sc.set_key_light(1.0 + u * (self.light_after - 1.0))

    def pose_arm(self, t: float, arm_q: np.ndarray | None = None) -> None:
        """Put every joint where it is at time t (fixture, props, arm). `arm_q`: the arm's joints
        as solved before for this time (no IK)."""
        sc = self.scene
        planned, real, seg, s, i = self.state_at(t)
        pos, rot, fingers = self.gripper_at(t, planned, seg, s, i)
        sc.apply({**real, **self._nuisance_state(t)})
        sc.ik.set_fingers(sc.data, fingers)
        if arm_q is not None:
            sc.data.qpos[sc.ik.qpos] = arm_q
            self._camera(t)
            return
        res = sc.ik.solve(sc.data, pos, rot, iterations=40, roll_free=self.roll_free)
        if res.position_error > 0.01 and not self.roll_free:  # let the fingers roll about their axis
            res = sc.ik.solve(sc.data, pos, rot, iterations=40, roll_free=True)
        if res.position_error > 0.01:  # warm start stuck at a joint limit: start afresh
            res = sc.ik.solve_anywhere(sc.data, pos, rot, roll_free=True)
        if seg is not None and seg.role in ("grasp", "act"):
            self.ik_max_error = max(self.ik_max_error, res.position_error)
        self._camera(t)

    def frame_times(self) -> np.ndarray:
        period = 1.0 / self.timing.rate_hz
        return np.arange(int(math.floor(self.duration / period)) + 1) * period

    def check_reach(self, tolerance_m: float = 0.015) -> float:
        """Play the trajectory without rendering; EpisodeError when the gripper misses a grasp
        or act target by more than `tolerance_m`. Returns the largest miss. The episode then
        starts again from its first frame (same joints: IK is warm-started frame to frame)."""
        self._arm_q = []
        for t in self.frame_times():
            self.pose_arm(float(t))
            self._arm_q.append(self.scene.data.qpos[self.scene.ik.qpos].copy())
        worst = self.ik_max_error
        self.scene.data.qpos[:] = self._q_start
        if worst > tolerance_m:
            raise EpisodeError(f"the arm cannot reach the {self.spec.obj_class}'s targets ({worst:.3f} m off)")
        return worst

    def frames(self, around_event_only: bool = False) -> Iterator[tuple[float, np.ndarray]]:
        """The episode's camera frames as (time, rgb). `around_event_only`: only the frames before
        the start and from the end on are rendered and yielded (the ones pairing picks from; the
        motion between is played but not rendered): the same pairs at a third of the cost."""
        import time

        times = self.frame_times()
        # the arm's joints solved by check_reach (the same warm-started IK, so the same poses)
        solved = getattr(self, "_arm_q", None)
        if solved is None:
            self.ik_max_error = 0.0
        n = 0
        render_s = 0.0
        for k, t in enumerate(times):
            t = float(t)
            jitter = float(self.rng.uniform(-self.timing.jitter_s, self.timing.jitter_s))
            if around_event_only and self.start_s <= t < self.end_s:
                continue
            self.pose_arm(t, None if solved is None else solved[k])
            t0 = time.perf_counter()
            img = self.scene.render()
            render_s += time.perf_counter() - t0
            self.truth.frames += 1
            n += 1
            if t >= self.end_s and self.truth.target_box is None:  # the first frame after the event
                self.truth.target_box = self.scene.fixture_box()
                self.truth.twin_box = self.scene.twin_box()
            yield max(0.0, t + jitter), img
        self.truth.prop_changes = sum(1 for _, name, b, a in self.prop_changes if a != b and not name.endswith(":y")
                                      and not name.endswith(":yaw"))
        self.truth.ik_max_error_m = round(self.ik_max_error, 4)
        self.truth.mean_render_ms = round(render_s / max(1, n) * 1e3, 1)

    def close(self) -> None:
        self.scene.close()
