"""One episode's world: a room with a counter, the manipulated fixture, distractor props, the arm,
lights and the camera, compiled into a MuJoCo model; state in, camera frames out.

Coordinates: metres, z up, the counter's front edge towards -y (the camera's side), the back
wall at +y. The fixture stands on the counter (or hangs on the back wall); the arm stands on the
counter's front edge beside it; the camera looks at the fixture from the style's placement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import textures
from .fixtures.base import AlphaVar, Fixture, GlowVar, JointVar, LevelVar
from .gl import check_context, import_mujoco
from .mjcf import Builder, E
from .props import KINDS as PROP_KINDS
from .props import Prop, make_prop
from .robot import ArmIK, arm_body
from .styles import Style

WALL_Y = 0.36  # the back wall's face
COUNTER_FRONT = -0.36


@dataclass(frozen=True)
class SceneConfig:
    width: int = 640
    height: int = 480
    distractors: tuple[int, int] = (1, 4)
    shadow_size: int = 1024  # shadow map texels (the key light's shadows)
    # a second fixture of the same class beside the manipulated one, on the side away from the
    # arm, in the same state and never touched: the object a planner could have meant instead
    # (spatial verification's "right action, wrong object"). Off: no random draw changes; on: the
    # fixture, the arm and the room are drawn as without it, the props keep clear of it.
    twin: bool = False


TWIN_PREFIX = "twin"
TWIN_GAP = 0.06  # metres between the two fixtures' footprints


@dataclass
class CameraState:
    pos: np.ndarray
    look: np.ndarray
    fovy: float


def look_at_axes(pos: np.ndarray, look: np.ndarray) -> np.ndarray:
    """MuJoCo camera `xyaxes` (right, up) of a camera at `pos` looking at `look`."""
    f = look - pos
    f = f / np.linalg.norm(f)
    right = np.cross(f, (0, 0, 1))
    right = right / np.linalg.norm(right)
    up = np.cross(right, f)
    return np.concatenate([right, up])


def _quat_from_axes(xyaxes: np.ndarray) -> np.ndarray:
    x, y = xyaxes[:3], xyaxes[3:]
    z = np.cross(x, y)
    mat = np.column_stack([x, y, z])
    q = np.zeros(4)
    import_mujoco().mju_mat2Quat(q, mat.reshape(-1))
    return q


class Scene:
    """Build with a fixture instance, a style and a generator; then `apply`, `site_frame`,
    `solve_arm`, `render`. `close()` frees the renderer's OpenGL context."""

    def __init__(self, fixture: Fixture, style: Style, rng: np.random.Generator, cfg: SceneConfig = SceneConfig()
                 ) -> None:
        mj = import_mujoco()
        self.mj = mj
        self.cfg = cfg
        self.fixture = fixture
        self.style = style
        b = Builder()
        self.counter_z = float(rng.uniform(0.86, 0.94))
        self._room(b, rng, style)
        # the fixture: on the counter, towards the back wall, or on the wall
        fw, fd = fixture.footprint
        fx = float(rng.uniform(-0.18, 0.18))
        if fixture.mount == "wall":
            fz = self.counter_z + float(rng.uniform(*fixture.height_range))
            origin = np.array([fx, WALL_Y, fz])
        else:
            back = WALL_Y - 0.02 - fd / 2
            fy = float(rng.uniform(max(-0.12, back - 0.22), back))
            origin = np.array([fx, fy, self.counter_z])
        fixture.origin = origin
        b.add(fixture.build(b, origin, rng, style))
        # the arm stands on the counter beside the fixture, level with its front (so it reaches in
        # from the side, not from between the camera and the fixture)
        side = fixture.arm_side or (1.0 if rng.random() < 0.5 else -1.0)
        front = origin[1] - fd / 2 if fixture.mount == "counter" else WALL_Y - 0.4
        base_y = float(np.clip(front + rng.uniform(-0.12, 0.04), COUNTER_FRONT + 0.1, WALL_Y - 0.15))
        base = np.array([fx + side * float(rng.uniform(0.42, 0.55)), base_y, self.counter_z])
        self.arm_base = base
        yaw = math.atan2(origin[1] - base[1], origin[0] - base[0])
        b.add(arm_body(b, base, yaw, rng))
        self.twin: Fixture | None = None
        if cfg.twin:
            self.twin = type(fixture)(TWIN_PREFIX)
            self.twin.origin = origin + np.array([-side * (fw + TWIN_GAP), 0.0, 0.0])
        self.props: list[Prop] = []
        self._place_props(b, rng, origin, fw, fd, base)
        self._lights(b, rng, style)
        self.camera0 = self._camera(b, style, origin)
        if self.twin is not None:  # its materials drawn last: the fixture, arm and room come out as without it
            b.add(self.twin.build(b, self.twin.origin, rng, style))
        visual = E("visual",
                   E("global", offwidth=cfg.width, offheight=cfg.height, fovy=45),
                   # no multisampling: it doubled the time per frame (113 -> 51 ms at 640x480 on one
                   # llvmpipe thread), and the model sees frames area-resized to its input anyway
                   E("quality", shadowsize=cfg.shadow_size, offsamples=0),
                   E("headlight", ambient=(style.lighting.ambient,) * 3, diffuse=(0, 0, 0), specular=(0, 0, 0)),
                   E("map", znear=0.02, zfar=20, shadowclip=1.2, shadowscale=0.6))
        stat = E("statistic", center=(origin[0], 0.0, self.counter_z + 0.2), extent=1.6)
        xml = b.xml(visual, extra=[stat])
        self.xml = xml
        try:
            self.model = mj.MjModel.from_xml_string(xml, b.files)
        except ValueError as exc:  # MuJoCo's compiler error: a bug in a fixture's MJCF
            raise RuntimeError(f"the simulator built an invalid model for {fixture.name}: {exc}") from None
        self.data = mj.MjData(self.model)
        self.ik = ArmIK(mj, self.model)
        self._resolve()
        self.key_diffuse0 = self.model.light_diffuse[self._key].copy()
        self._renderer = None

    # ------------------------------------------------------------------ building

    def _surface_material(self, b: Builder, name: str, surf, rng) -> str:
        tex = b.texture(f"{name}_tex", textures.make(surf.family, rng, list(surf.colors)))
        return b.material(name, (1, 1, 1, 1), texture=tex, texrepeat=surf.repeat, specular=surf.specular,
                          shininess=surf.shininess)

    def _room(self, b: Builder, rng, style: Style) -> None:
        floor = self._surface_material(b, "floor", style.floor, rng)
        wall = self._surface_material(b, "wall", style.wall, rng)
        counter = self._surface_material(b, "counter", style.counter, rng)
        front = self._surface_material(b, "front", style.cabinet, rng)
        z = self.counter_z
        side_x = float(rng.choice([-1, 1])) * float(rng.uniform(1.1, 1.5))
        b.add(E("geom", name="floor", type="plane", size=(4, 4, 0.1), pos=(0, 0, 0), material=floor),
              E("geom", name="wall_back", type="box", size=(3, 0.05, 1.5), pos=(0, WALL_Y + 0.05, 1.5), material=wall),
              E("geom", name="wall_side", type="box", size=(0.05, 2, 1.5), pos=(side_x + np.sign(side_x) * 0.05, -1, 1.5),
                material=wall),
              E("geom", name="counter_top", type="box", size=(2.5, (WALL_Y - COUNTER_FRONT) / 2, 0.02),
                pos=(0, (WALL_Y + COUNTER_FRONT) / 2, z - 0.02), material=counter),
              E("geom", name="counter_front", type="box", size=(2.5, 0.02, (z - 0.12) / 2),
                pos=(0, COUNTER_FRONT + 0.04, 0.12 + (z - 0.12) / 2 - 0.04), material=front),
              E("geom", name="kick", type="box", size=(2.5, 0.02, 0.05), pos=(0, COUNTER_FRONT + 0.08, 0.05),
                rgba=(0.1, 0.1, 0.1, 1)))
        # cabinet door seams on the counter's front
        seam = b.material("seam", (0.08, 0.08, 0.08, 1), specular=0.1)
        for x in np.arange(-2.4, 2.5, float(rng.uniform(0.4, 0.6))):
            b.add(E("geom", type="box", size=(0.003, 0.005, (z - 0.2) / 2),
                    pos=(float(x), COUNTER_FRONT + 0.018, 0.12 + (z - 0.2) / 2), material=seam))

    def _place_props(self, b: Builder, rng, origin, fw, fd, base) -> None:
        n = int(rng.integers(self.cfg.distractors[0], self.cfg.distractors[1] + 1))
        taken: list[tuple[float, float, float]] = [(float(base[0]), float(base[1]), 0.18)]
        fx, fy = float(origin[0]), float(origin[1]) if self.fixture.mount == "counter" else WALL_Y - 0.1
        # the fixture's footprint, and the twin's beside it, stay clear of props
        footprints_x = [fx] + ([float(self.twin.origin[0])] if self.twin is not None else [])
        corridor = (np.array([base[0], base[1]]), np.array([fx, fy]))
        kinds = list(PROP_KINDS)
        for i in range(n):
            kind = kinds[rng.integers(len(kinds))]
            for _ in range(30):
                x = float(rng.uniform(-1.0, 1.0))
                y = float(rng.uniform(COUNTER_FRONT + 0.1, WALL_Y - 0.1))
                if abs(y - fy) < fd / 2 + 0.12 and any(abs(x - cx) < fw / 2 + 0.1 for cx in footprints_x):
                    continue
                a, c = corridor
                t = np.clip(np.dot([x, y] - a, c - a) / max(1e-9, np.dot(c - a, c - a)), 0, 1)
                if np.linalg.norm(a + t * (c - a) - [x, y]) < 0.16:
                    continue
                if any(np.hypot(x - px, y - py) < pr + 0.08 for px, py, pr in taken):
                    continue
                body, prop = make_prop(b, f"prop{i}", kind, (x, y, self.counter_z), rng)
                b.add(body)
                self.props.append(prop)
                taken.append((x, y, prop.radius))
                break

    def _lights(self, b: Builder, rng, style: Style) -> None:
        L = style.lighting
        u = np.array([math.sin(L.key_azimuth) * math.cos(L.key_elevation),
                      -math.cos(L.key_azimuth) * math.cos(L.key_elevation), math.sin(L.key_elevation)])
        b.add(E("light", name="key", directional=True, pos=tuple(u * 4 + (0, 0, 1)), dir=tuple(-u),
                diffuse=L.key_rgb, specular=(0.25, 0.25, 0.25), castshadow=True),
              E("light", name="fill", directional=True, pos=tuple(np.array([-u[0], u[1], 0.5]) * 4), dir=(u[0], -u[1], -0.5),
                diffuse=(L.fill,) * 3, specular=(0, 0, 0), castshadow=False))

    def _camera(self, b: Builder, style: Style, origin) -> CameraState:
        c = style.camera
        look = np.asarray(origin, float).copy()
        look[2] += self.fixture.look_up
        if self.fixture.mount == "wall":
            look[1] -= 0.25
        look += c.look_offset
        direction = np.array([math.sin(c.azimuth) * math.cos(c.elevation), -math.cos(c.azimuth) * math.cos(c.elevation),
                              math.sin(c.elevation)])
        # the style says from where, the fixture how far: its view_width fills the image's width
        hfov = 2 * math.atan(math.tan(math.radians(c.fovy) / 2) * self.cfg.width / self.cfg.height)
        distance = c.distance * self.fixture.view_width / (2 * math.tan(hfov / 2))
        pos = look + distance * direction
        b.add(E("camera", name="cam", pos=tuple(pos), xyaxes=tuple(look_at_axes(pos, look)), fovy=c.fovy))
        return CameraState(pos, look, c.fovy)

    # ------------------------------------------------------------------ state

    def _resolve(self) -> None:
        m = self.model
        self._key = m.light("key").id
        self._cam = m.camera("cam").id
        self._vars: dict[str, list[tuple]] = {}
        owners = [("", self.fixture.vars)] + [(p.name + ":", p.vars) for p in self.props]
        if self.twin is not None:
            owners.append((TWIN_PREFIX + ":", self.twin.vars))
        for owner, variables in owners:
            for name, reals in variables.items():
                out = []
                for r in reals:
                    if isinstance(r, JointVar):
                        out.append(("joint", m.jnt_qposadr[m.joint(r.joint).id], r.lo, r.hi))
                    elif isinstance(r, LevelVar):
                        out.append(("level", m.geom(r.geom).id, r.lo, r.hi, r.z0))
                    elif isinstance(r, GlowVar):
                        mats = [m.material(x).id for x in r.materials]
                        off = [m.mat_rgba[i].copy() for i in mats]
                        on = list(r.rgba_on) + [None] * (len(mats) - len(r.rgba_on))
                        out.append(("glow", mats, r.emission, [m.light(x).id for x in r.lights], r.threshold, off, on))
                    elif isinstance(r, AlphaVar):
                        out.append(("alpha", [m.geom(x).id for x in r.geoms], r.alpha, r.threshold))
                self._vars[owner + name] = out

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self._vars)

    def apply(self, values: dict[str, float]) -> None:
        """Set state variables (fixture variables by name, prop variables as '<prop>:<var>')."""
        m, d = self.model, self.data
        for name, v in values.items():
            for r in self._vars[name]:
                if r[0] == "joint":
                    d.qpos[r[1]] = r[2] + float(v) * (r[3] - r[2])
                elif r[0] == "level":  # the column's half height and centre
                    h = r[2] + float(v) * (r[3] - r[2])
                    m.geom_size[r[1], 1] = h / 2
                    m.geom_pos[r[1], 2] = r[4] + h / 2
                elif r[0] == "glow":
                    on = float(v) >= r[4]
                    for mid, off, rgba_on in zip(r[1], r[5], r[6]):
                        m.mat_emission[mid] = r[2] if on else 0.0
                        m.mat_rgba[mid] = rgba_on if (on and rgba_on is not None) else off
                    for lid in r[3]:
                        m.light_active[lid] = on
                else:
                    for gid in r[1]:
                        m.geom_rgba[gid, 3] = r[2] if float(v) >= r[3] else 0.0

    def kinematics(self) -> None:
        self.mj.mj_kinematics(self.model, self.data)

    def fixture_box(self) -> list[int] | None:
        """The manipulated fixture's box in the camera image, [x, y, w, h] pixels, as it is now
        (after `kinematics()`): the projection of every visible fixture geom's bounding box
        corners, clipped to the image. None when it is outside the view."""
        return self._box(self.fixture.p + "_")

    def twin_box(self) -> list[int] | None:
        """The same for the twin (`SceneConfig.twin`); None without one or out of view."""
        return self._box(TWIN_PREFIX + "_") if self.twin is not None else None

    def _box(self, prefix: str) -> list[int] | None:
        m, d = self.model, self.data
        R = d.cam_xmat[self._cam].reshape(3, 3)
        pos = d.cam_xpos[self._cam]
        f = (self.cfg.height / 2) / math.tan(math.radians(float(m.cam_fovy[self._cam])) / 2)
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        us, vs = [], []
        for g in range(m.ngeom):
            if not m.body(int(m.geom_bodyid[g])).name.startswith(prefix) or m.geom_rgba[g, 3] < 0.05:
                continue
            centre, half = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
            corners = d.geom_xpos[g] + (centre + signs * half) @ d.geom_xmat[g].reshape(3, 3).T
            cam = (corners - pos) @ R  # camera frame: x right, y up, looking along -z
            depth = -cam[:, 2]
            ok = depth > 1e-3
            us += list(self.cfg.width / 2 + f * cam[ok, 0] / depth[ok])
            vs += list(self.cfg.height / 2 - f * cam[ok, 1] / depth[ok])
        if not us:
            return None
        x0, x1 = max(0.0, min(us)), min(float(self.cfg.width), max(us))
        y0, y1 = max(0.0, min(vs)), min(float(self.cfg.height), max(vs))
        if x1 <= x0 or y1 <= y0:
            return None
        return [int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))]

    def site_frame(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and rotation (3x3, columns x y z) of a site, after `kinematics()`."""
        sid = self.model.site(name).id
        return self.data.site_xpos[sid].copy(), self.data.site_xmat[sid].reshape(3, 3).copy()

    def set_camera(self, pos_offset: np.ndarray, look_offset: np.ndarray) -> None:
        c = self.camera0
        pos, look = c.pos + pos_offset, c.look + look_offset
        self.model.cam_pos[self._cam] = pos
        self.model.cam_quat[self._cam] = _quat_from_axes(look_at_axes(pos, look))

    def set_key_light(self, gain: float) -> None:
        self.model.light_diffuse[self._key] = self.key_diffuse0 * gain

    # ------------------------------------------------------------------ rendering

    def render(self) -> np.ndarray:
        """The camera's view as HxWx3 uint8 RGB (kinematics are brought up to date first)."""
        if self._renderer is None:
            check_context(self.mj)
            self._renderer = self.mj.Renderer(self.model, self.cfg.height, self.cfg.width)
        self.mj.mj_kinematics(self.model, self.data)
        self.mj.mj_camlight(self.model, self.data)
        self._renderer.update_scene(self.data, camera="cam")
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
