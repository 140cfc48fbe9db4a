"""MJCF text with a little structure: elements, and a builder that collects one model's assets.

MuJoCo compiles the text and takes texture files from an in-memory dict
(`MjModel.from_xml_string(xml, assets)`), so nothing is written to disk. Angles are radians
(`<compiler angle="radian"/>`).
"""
from __future__ import annotations

from typing import Any, Iterable

import cv2
import numpy as np


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "0" if abs(v) < 5e-7 else f"{v:.5g}"
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list, np.ndarray)):
        return " ".join(fmt(v) for v in value)
    raise TypeError(f"cannot write {type(value).__name__} into MJCF")


class E:
    """An MJCF element. Keyword attributes; a trailing underscore is dropped (`class_`)."""

    __slots__ = ("tag", "attrs", "children")

    def __init__(self, tag: str, *children: "E", **attrs: Any) -> None:
        self.tag = tag
        self.attrs = {k.rstrip("_"): v for k, v in attrs.items() if v is not None}
        self.children: list[E] = list(children)

    def add(self, *children: "E") -> "E":
        self.children.extend(c for c in children if c is not None)
        return self

    def xml(self, indent: int = 0) -> str:
        pad = "  " * indent
        attrs = "".join(f' {k}="{fmt(v)}"' for k, v in self.attrs.items())
        if not self.children:
            return f"{pad}<{self.tag}{attrs}/>"
        inner = "\n".join(c.xml(indent + 1) for c in self.children)
        return f"{pad}<{self.tag}{attrs}>\n{inner}\n{pad}</{self.tag}>"


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


class Builder:
    """One model: assets (textures, materials), worldbody children and extra sections."""

    def __init__(self) -> None:
        self.assets: list[E] = []
        self.files: dict[str, bytes] = {}
        self.world: list[E] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate MJCF asset name {name!r}")
        self._names.add(name)
        return name

    def texture(self, name: str, image: np.ndarray) -> str:
        """A 2-D texture from an RGB array; returns its name."""
        self._unique(name)
        fname = f"{name}.png"
        self.files[fname] = png(image)
        self.assets.append(E("texture", name=name, type="2d", file=fname))
        return name

    def material(self, name: str, rgba: Iterable[float] = (1, 1, 1, 1), texture: str | None = None,
                 texrepeat: tuple[float, float] | None = None, texuniform: bool | None = None,
                 specular: float = 0.3, shininess: float = 0.3, emission: float = 0.0) -> str:
        self._unique(name)
        self.assets.append(E("material", name=name, rgba=tuple(rgba), texture=texture, texrepeat=texrepeat,
                             texuniform=texuniform, specular=specular, shininess=shininess, emission=emission))
        return name

    def add(self, *elements: E) -> None:
        self.world.extend(elements)

    def xml(self, visual: E, extra: Iterable[E] = ()) -> str:
        root = E("mujoco", model="cde_sim")
        # boundmass / boundinertia: bodies that only carry a joint (a carry rig) need some mass to compile
        root.add(E("compiler", angle="radian", autolimits=True, boundmass=0.001, boundinertia=1e-6),
                 E("option", E("flag", contact="disable", gravity="disable")),
                 visual, E("asset", *self.assets), E("worldbody", *self.world), *extra)
        return root.xml()
