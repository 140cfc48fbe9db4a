"""Procedural textures (HxWx3 uint8 RGB): wood, tiles, marble, plaster, brick, granite, brushed
metal, fabric, checker, sky. Each takes a generator and base colours, so a scene style draws
endless variations of a few families. Made at 256 px (the counter and walls are seen at a few
hundred pixels; more only costs texture upload)."""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

SIZE = 256


def _noise(rng: np.random.Generator, size: int, scales: tuple[int, ...] = (4, 8, 16, 32),
           falloff: float = 0.55) -> np.ndarray:
    """Fractal value noise in [-1, 1]: random grids of several sizes, upsampled and summed."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for s in scales:
        grid = rng.standard_normal((s, s)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= falloff
    out /= total
    return out / (np.abs(out).max() + 1e-6)


def _mix(base: np.ndarray, other: np.ndarray, t: np.ndarray) -> np.ndarray:
    return base[None, None] * (1 - t[..., None]) + other[None, None] * t[..., None]


def _rgb(c) -> np.ndarray:
    return np.asarray(c, np.float32)


def _done(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def wood(rng: np.random.Generator, color, size: int = SIZE) -> np.ndarray:
    c = _rgb(color)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp = _noise(rng, size, (3, 6, 12)) * rng.uniform(0.6, 1.4)
    rings = np.sin(2 * math.pi * (rng.uniform(8, 22) * yy + 1.5 * warp))
    fine = _noise(rng, size, (64, 128), 0.7)
    t = 0.5 + 0.25 * rings + 0.12 * fine
    return _done(_mix(c * 1.12, c * 0.62, t))


def tiles(rng: np.random.Generator, color, grout, n: int | None = None, size: int = SIZE) -> np.ndarray:
    n = n or int(rng.integers(3, 7))
    c, g = _rgb(color), _rgb(grout)
    img = np.empty((size, size, 3), np.float32)
    cell = size / n
    for i in range(n):
        for j in range(n):
            y0, y1, x0, x1 = int(i * cell), int((i + 1) * cell), int(j * cell), int((j + 1) * cell)
            img[y0:y1, x0:x1] = c * rng.uniform(0.9, 1.08)
    img += 10 * _noise(rng, size, (32, 64))[..., None]
    w = max(2, int(cell * 0.06))
    for k in range(n + 1):
        p = int(k * cell)
        img[max(0, p - w // 2):p + w // 2 + 1] = g
        img[:, max(0, p - w // 2):p + w // 2 + 1] = g
    return _done(img)


def marble(rng: np.random.Generator, color, vein, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, math.pi)
    turb = _noise(rng, size, (4, 8, 16, 32), 0.6)
    v = np.abs(np.sin(2 * math.pi * (rng.uniform(1.5, 4) * (xx * math.cos(ang) + yy * math.sin(ang)) + 2.2 * turb)))
    t = np.clip((1 - v) ** 6, 0, 1)
    return _done(_mix(_rgb(color), _rgb(vein), t) + 6 * _noise(rng, size, (64,))[..., None])


def plaster(rng: np.random.Generator, color, size: int = SIZE) -> np.ndarray:
    return _done(_rgb(color)[None, None] * (1 + 0.05 * _noise(rng, size, (8, 16, 32, 64))[..., None]))


def brick(rng: np.random.Generator, color, mortar, size: int = SIZE) -> np.ndarray:
    c, m = _rgb(color), _rgb(mortar)
    img = np.empty((size, size, 3), np.float32)
    img[:] = m
    rows = int(rng.integers(6, 10))
    h = size / rows
    bw = h * rng.uniform(1.8, 2.4)
    gap = max(2, int(h * 0.12))
    for r in range(rows):
        off = (r % 2) * bw / 2
        x = -off
        while x < size:
            x0, x1 = int(max(0, x) + gap / 2), int(min(size, x + bw) - gap / 2)
            y0, y1 = int(r * h + gap / 2), int((r + 1) * h - gap / 2)
            if x1 > x0:
                img[y0:y1, x0:x1] = c * rng.uniform(0.8, 1.15)
            x += bw
    img += 12 * _noise(rng, size, (32, 64, 128), 0.7)[..., None]
    return _done(img)


def granite(rng: np.random.Generator, color, size: int = SIZE) -> np.ndarray:
    c = _rgb(color)
    img = c[None, None] * (1 + 0.08 * _noise(rng, size, (16, 32))[..., None])
    for tone in (0.35, 0.6, 1.45):
        mask = rng.random((size, size)) < 0.05
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
        img[mask] = c * tone
    return _done(img)


def brushed(rng: np.random.Generator, color, size: int = SIZE) -> np.ndarray:
    # fine streaks along x: noise per row, barely varying along the row
    streak = cv2.resize(rng.standard_normal((size, 8)).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return _done(_rgb(color)[None, None] * (1 + 0.06 * streak[..., None] + 0.04 * _noise(rng, size, (4, 8))[..., None]))


def fabric(rng: np.random.Generator, color, stripe, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    f = rng.uniform(6, 18)
    t = (np.sin(2 * math.pi * f * xx) > rng.uniform(-0.3, 0.6)).astype(np.float32) * 0.8
    weave = 0.06 * np.sin(2 * math.pi * 64 * xx) * np.sin(2 * math.pi * 64 * yy)
    return _done(_mix(_rgb(color), _rgb(stripe), t) * (1 + weave[..., None]))


def checker(rng: np.random.Generator, color, other, size: int = SIZE) -> np.ndarray:
    n = int(rng.integers(2, 5))
    yy, xx = np.mgrid[0:size, 0:size] * n // size
    t = ((yy + xx) % 2).astype(np.float32)
    return _done(_mix(_rgb(color), _rgb(other), t) + 5 * _noise(rng, size, (64,))[..., None])


def concrete(rng: np.random.Generator, color, size: int = SIZE) -> np.ndarray:
    img = _rgb(color)[None, None] * (1 + 0.12 * _noise(rng, size, (8, 16, 32, 64, 128), 0.7)[..., None])
    pits = rng.random((size, size)) < 0.01
    img[pits] *= 0.6
    return _done(img)


def sky(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    top, horizon = _rgb(rng.uniform((60, 110, 180), (120, 170, 230))), _rgb((215, 225, 235))
    img = top[None, None] * (1 - yy[..., None]) + horizon[None, None] * yy[..., None]
    clouds = np.clip(_noise(rng, size, (4, 8, 16, 32), 0.6) - 0.1, 0, 1)
    img = img * (1 - clouds[..., None] * 0.7) + 250 * clouds[..., None] * 0.7
    return _done(np.broadcast_to(img, (size, size, 3)).copy())


# family name -> (function, number of colour arguments)
FAMILIES: dict[str, tuple[Callable, int]] = {
    "wood": (wood, 1), "tiles": (tiles, 2), "marble": (marble, 2), "plaster": (plaster, 1),
    "brick": (brick, 2), "granite": (granite, 1), "brushed": (brushed, 1), "fabric": (fabric, 2),
    "checker": (checker, 2), "concrete": (concrete, 1),
}


def make(family: str, rng: np.random.Generator, colors: list) -> np.ndarray:
    fn, n = FAMILIES[family]
    return fn(rng, *colors[:n])
