"""Scene styles: what a robot cell looks like apart from the objects in it.

A style fixes the room's materials (floor, walls, counter), the lighting (a key light with
shadows, a fill light, ambient; its direction, colour and strength) and where the camera is.
Two style domains are drawn from disjoint families:

- `train`: wood / tile / checker floors, plaster / tile / wallpaper walls, wood / marble /
  laminate counters; white-to-warm key light from above the camera side; cameras in front,
  front-left, front-right or high.
- `heldout`: concrete floors, brick walls, granite / brushed-steel counters; tinted key light
  low from the side; cameras low and far to the side, or nearly top-down. None of these is ever
  drawn for training pairs: it stands in for a new robot cell.
- `varied`: more training diversity that stays clear of `heldout` (materials, light, cameras
  within 34 degrees of the front).
- `randomized`: domain randomisation (Tobin et al. 2017) to widen what training sees (measured,
  not used by the shipped model: README "Your robot, your actions"): the training material
  families in any colour, dimmed or not; a key light from any direction above the counter (up
  to 120 degrees from the front) in any colour temperature or tint, at 0.4-1 of the strength,
  with weaker fill and ambient light; cameras anywhere within 70 degrees of the front from 6 to
  84 degrees of elevation.
  The held-out style's own regions are cut out with a margin: its camera placements (low and far
  to the side, nearly top-down) and its light directions (low from the side) are never drawn,
  nor are its material families. So a cell of the held-out style still differs from every
  training cell, but along each factor it now lies among training cells instead of beyond them.

Per episode a style is drawn from its domain's families with random colours, angles and
distances, so a domain is a distribution, not a handful of scenes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

DOMAINS = ("train", "heldout", "varied", "randomized")  # the order is part of every episode's seed: append only


@dataclass(frozen=True)
class Surface:
    family: str  # textures.FAMILIES
    colors: tuple[tuple[int, int, int], ...]
    repeat: tuple[float, float]
    specular: float
    shininess: float


@dataclass(frozen=True)
class Lighting:
    key_azimuth: float  # radians, 0 = from the camera's side of the counter, + = from the right
    key_elevation: float  # radians above the horizon
    key_rgb: tuple[float, float, float]  # diffuse colour x intensity
    fill: float  # fill light strength (no shadows)
    ambient: float
    drift: float  # relative change of the key light between the before and the after view


@dataclass(frozen=True)
class CameraPlacement:
    name: str
    azimuth: float  # radians around the counter, 0 = straight in front
    elevation: float  # radians above the horizon
    distance: float  # relative distance: 1 = the fixture's view_width fills the image's width
    fovy: float  # degrees
    look_offset: tuple[float, float, float]  # look-at point relative to the work area's centre
    shake: float  # std of the camera's shake between frames while the arm moves (metres)


@dataclass(frozen=True)
class Style:
    domain: str
    floor: Surface
    wall: Surface
    counter: Surface
    cabinet: Surface  # carcasses of drawers and cabinets standing on the counter
    lighting: Lighting
    camera: CameraPlacement


def _color(rng, lo=40, hi=230) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _tone(rng, base: tuple[int, int, int], spread: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(b + rng.integers(-spread, spread + 1), 0, 255)) for b in base)


WOODS = ((170, 120, 75), (120, 80, 50), (200, 160, 110), (95, 60, 40), (185, 140, 95))
NEUTRALS = ((235, 232, 225), (210, 205, 195), (190, 195, 200), (225, 215, 190), (200, 210, 215))


def _surface(rng, family: str, domain: str, kind: str) -> Surface:
    if family == "wood":
        colors = (_tone(rng, WOODS[rng.integers(len(WOODS))]),)
    elif family in ("plaster", "concrete"):
        colors = (_tone(rng, NEUTRALS[rng.integers(len(NEUTRALS))], 25) if domain == "train" or rng.random() < 0.5
                  else _color(rng, 90, 200),)
    elif family == "granite":
        colors = (_color(rng, 50, 170),)
    elif family == "brushed":
        g = int(rng.integers(140, 210))
        colors = ((g, g, min(255, g + 8)),)
    else:
        colors = (_color(rng, 60, 235), _color(rng, 30, 235))
    rep = {"floor": (4, 4), "wall": (3, 2), "counter": (2, 1), "cabinet": (1, 1)}[kind]
    jitter = rng.uniform(0.7, 1.4)
    metal = family == "brushed"
    return Surface(family, colors, (rep[0] * jitter, rep[1] * jitter),
                   specular=0.8 if metal else float(rng.uniform(0.1, 0.4)),
                   shininess=0.8 if metal else float(rng.uniform(0.1, 0.5)))


_FAMILIES = {
    "train": {"floor": ("wood", "tiles", "checker"), "wall": ("plaster", "tiles", "fabric"),
              "counter": ("wood", "marble", "plaster"), "cabinet": ("wood", "plaster")},
    "heldout": {"floor": ("concrete",), "wall": ("brick",), "counter": ("granite", "brushed"),
                "cabinet": ("brushed", "granite")},
    "varied": {kind: ("wood", "tiles", "checker", "marble", "plaster", "fabric")
               for kind in ("floor", "wall", "counter", "cabinet")},
}
_FAMILIES["randomized"] = _FAMILIES["varied"]  # the training families (never the held-out style's), dimmed or not

# camera placement families: (name, azimuth deg, elevation deg, relative distance, fovy deg)
_CAMERAS = {
    "train": (("front", 0, 32, 1.0, 50), ("front_left", -22, 30, 1.0, 50), ("front_right", 22, 30, 1.0, 50),
              ("high", 0, 50, 1.0, 52)),
    "heldout": (("low_left", -42, 14, 1.1, 46), ("low_right", 42, 14, 1.1, 46), ("top", 0, 68, 0.95, 58)),
}
# `varied` camera families: (name, azimuth range deg, elevation range deg); distance 0.85-1.25,
# fovy 42-60 for all. Disjoint from `heldout`'s (azimuth 36-48 to the side below 18 degrees of
# elevation, or elevation 64-72).
_VARIED_CAMERAS = (("wide_left", (-34, -8)), ("wide_front", (-14, 14)), ("wide_right", (8, 34)))
_VARIED_ELEVATION = (20, 60)
# `randomized` camera families by elevation (degrees); azimuth within +-70 for all, distance
# 0.8-1.35, fovy 40-64. Cut out, with a 4 degree margin around the held-out placements' ranges
# (azimuth 42 +- 6 at elevation 14 +- 4; azimuth 0 +- 6 at elevation 68 +- 4):
_RANDOMIZED_CAMERAS = (("rand_low", (6, 30)), ("rand_mid", (30, 56)), ("rand_high", (56, 84)))
_RANDOMIZED_AZIMUTH = 70


def _held_out_camera(az_deg: float, el_deg: float) -> bool:
    """Whether a camera direction lies in (or within 4 degrees of) a held-out placement's range."""
    return (32 <= abs(az_deg) <= 52 and el_deg <= 22) or (abs(az_deg) <= 10 and 60 <= el_deg <= 76)


def _held_out_light(az_deg: float, el_deg: float) -> bool:
    """Whether a key light direction lies in (or near) the held-out style's: from the side
    (azimuth 70-110 degrees either way) and low (20-38 degrees); cut out with an 8 / 6 degree margin."""
    return 62 <= abs(az_deg) <= 118 and el_deg <= 44


def _kelvin_rgb(k: float) -> tuple[float, float, float]:
    t = (np.clip(k, 2700, 6500) - 2700) / 3800
    warm, cool = np.array([1.0, 0.8, 0.6]), np.array([0.9, 0.95, 1.0])
    return tuple(float(v) for v in warm * (1 - t) + cool * t)


def camera_names(domain: str) -> tuple[str, ...]:
    if domain == "varied":
        return tuple(c[0] for c in _VARIED_CAMERAS)
    if domain == "randomized":
        return tuple(c[0] for c in _RANDOMIZED_CAMERAS)
    return tuple(c[0] for c in _CAMERAS[domain])


def sample_style(rng: np.random.Generator, domain: str = "train", camera: str | None = None) -> Style:
    """A style of `domain`; `camera` fixes the camera placement family (else drawn)."""
    if domain not in DOMAINS:
        raise ValueError(f"style domain must be one of {DOMAINS}, got {domain!r}")
    if camera is not None and camera not in camera_names(domain):
        raise ValueError(f"camera placement {camera!r} is not one of the {domain} style's {camera_names(domain)}")
    fam = _FAMILIES[domain]
    pick = lambda kind: _surface(rng, fam[kind][rng.integers(len(fam[kind]))], domain, kind)  # noqa: E731
    if domain == "varied":
        return _sample_varied(rng, pick, camera)
    if domain == "randomized":
        return _sample_randomized(rng, pick, camera)
    if domain == "train":
        az = math.radians(rng.uniform(-60, 60))
        el = math.radians(rng.uniform(45, 80))
        rgb = np.array(_kelvin_rgb(rng.uniform(2700, 6500)))
    else:
        az = math.radians(rng.choice([-1, 1]) * rng.uniform(70, 110))
        el = math.radians(rng.uniform(20, 38))
        tints = np.array([[0.7, 0.85, 1.0], [0.75, 1.0, 0.8], [1.0, 0.75, 0.9], [1.0, 0.95, 0.6]])
        rgb = tints[rng.integers(len(tints))]
    lighting = Lighting(az, el, tuple(float(v) for v in rgb * rng.uniform(0.55, 0.9)),
                        fill=float(rng.uniform(0.15, 0.35)), ambient=float(rng.uniform(0.12, 0.28)),
                        drift=float(rng.uniform(0.0, 0.12)))
    drawn = int(rng.integers(len(_CAMERAS[domain])))  # drawn either way: the rest of the style stays the same
    name, az_c, el_c, dist, fovy = _CAMERAS[domain][camera_names(domain).index(camera) if camera else drawn]
    camera = CameraPlacement(
        name, math.radians(az_c + rng.uniform(-6, 6)), math.radians(el_c + rng.uniform(-4, 4)),
        dist * rng.uniform(0.9, 1.12), fovy + float(rng.uniform(-4, 4)),
        (float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.06))),
        shake=float(rng.uniform(0.0005, 0.003)))
    return Style(domain, pick("floor"), pick("wall"), pick("counter"), pick("cabinet"), lighting, camera)


def _sample_varied(rng: np.random.Generator, pick, camera: str | None) -> Style:
    az = math.radians(rng.uniform(-65, 65))
    el = math.radians(rng.uniform(40, 85))
    rgb = np.array(_kelvin_rgb(rng.uniform(2700, 6500))) * rng.uniform(0.45, 1.0)
    lighting = Lighting(az, el, tuple(float(v) for v in rgb), fill=float(rng.uniform(0.1, 0.4)),
                        ambient=float(rng.uniform(0.1, 0.3)), drift=float(rng.uniform(0.0, 0.15)))
    names = camera_names("varied")
    drawn = int(rng.integers(len(names)))
    name, (az_lo, az_hi) = _VARIED_CAMERAS[names.index(camera) if camera else drawn]
    placement = CameraPlacement(
        name, math.radians(rng.uniform(az_lo, az_hi)), math.radians(rng.uniform(*_VARIED_ELEVATION)),
        float(rng.uniform(0.85, 1.25)), float(rng.uniform(42, 60)),
        (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.07))),
        shake=float(rng.uniform(0.0005, 0.003)))
    return Style("varied", pick("floor"), pick("wall"), pick("counter"), pick("cabinet"), lighting, placement)


def _dimmed(surface: Surface, factor: float) -> Surface:
    return replace(surface, colors=tuple(tuple(int(v * factor) for v in c) for c in surface.colors))


def _sample_randomized(rng: np.random.Generator, pick, camera: str | None) -> Style:
    def dimmed_or_not(kind: str) -> Surface:
        surface = pick(kind)
        return _dimmed(surface, float(rng.uniform(0.4, 1.0))) if rng.random() < 0.5 else surface

    floor, wall, counter, cabinet = (dimmed_or_not(kind) for kind in ("floor", "wall", "counter", "cabinet"))
    while True:
        az, el = float(rng.uniform(-120, 120)), float(rng.uniform(10, 85))
        if not _held_out_light(az, el):
            break
    if rng.random() < 0.5:
        rgb = np.array(_kelvin_rgb(rng.uniform(2700, 6500)))
    else:  # a tint: every channel 0.55-1, the strongest 1
        rgb = rng.uniform(0.55, 1.0, 3)
        rgb = rgb / rgb.max()
    lighting = Lighting(math.radians(az), math.radians(el), tuple(float(v) for v in rgb * rng.uniform(0.4, 1.0)),
                        fill=float(rng.uniform(0.05, 0.4)), ambient=float(rng.uniform(0.08, 0.3)),
                        drift=float(rng.uniform(0.0, 0.15)))
    names = camera_names("randomized")
    drawn = int(rng.integers(len(names)))
    name, (el_lo, el_hi) = _RANDOMIZED_CAMERAS[names.index(camera) if camera else drawn]
    while True:
        cam_az, cam_el = float(rng.uniform(-_RANDOMIZED_AZIMUTH, _RANDOMIZED_AZIMUTH)), float(rng.uniform(el_lo, el_hi))
        if not _held_out_camera(cam_az, cam_el):
            break
    placement = CameraPlacement(
        name, math.radians(cam_az), math.radians(cam_el), float(rng.uniform(0.8, 1.35)), float(rng.uniform(40, 64)),
        (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.07))),
        shake=float(rng.uniform(0.0005, 0.003)))
    return Style("randomized", floor, wall, counter, cabinet, lighting, placement)
