"""Headless OpenGL for MuJoCo: choose the backend before `mujoco` is first imported.

MuJoCo's Python renderer reads `MUJOCO_GL` once, at import. Without a display the usable
backends are EGL (Mesa's llvmpipe renders surfaceless on the CPU, or a GPU driver) and OSMesa.
`import_mujoco()` keeps a `MUJOCO_GL` the user set; otherwise it takes EGL when libEGL can be
loaded, else OSMesa when libOSMesa can, else it stops with the Debian package names. The backend
in use is reported by `backend()` (the recorder logs it), so nothing falls back silently.
"""
from __future__ import annotations

import ctypes.util
import os

EGL_PACKAGES = "libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"
OSMESA_PACKAGES = "libosmesa6"
_BACKENDS = ("egl", "osmesa", "glfw")


class GLError(RuntimeError):
    """No headless OpenGL backend can be used; the message names what to install."""


def _missing_message() -> str:
    return (f"headless rendering needs EGL or OSMesa: install the Debian/Ubuntu packages {EGL_PACKAGES} "
            f"(or {OSMESA_PACKAGES} and set MUJOCO_GL=osmesa); ./dev installs them when run as root")


def choose_backend() -> str:
    """The backend `import_mujoco` will use (sets MUJOCO_GL and, for OSMesa, PYOPENGL_PLATFORM)."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen not in _BACKENDS:
            raise GLError(f"MUJOCO_GL={chosen!r} is not one of {', '.join(_BACKENDS)}")
    elif ctypes.util.find_library("EGL"):
        chosen = "egl"
    elif ctypes.util.find_library("OSMesa"):
        chosen = "osmesa"
    else:
        raise GLError(_missing_message())
    os.environ["MUJOCO_GL"] = chosen
    if chosen in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def _load_triton_first() -> None:
    """Mesa's software renderer and triton (which torch imports for its compiler, e.g. through
    timm) each bring their own LLVM. Loaded after Mesa, triton's crashes the process (a
    segmentation fault in `import triton`, seen with torch 2.15 and Mesa 22.3); loaded first,
    both work. So in a process that may use both, triton goes first."""
    import importlib.util
    import sys

    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def import_mujoco():
    """`mujoco`, imported with a headless backend chosen (see the module docstring)."""
    import sys

    if "mujoco" not in sys.modules:
        choose_backend()
        _load_triton_first()
    try:
        import mujoco
    except ImportError as exc:
        raise GLError(f"MuJoCo is not installed ({exc}); ./dev setup installs it (requirements.txt)") from None
    return mujoco


def backend() -> str:
    return os.environ.get("MUJOCO_GL", "")


_checked = False


def check_context(mujoco) -> None:
    """Create and free one offscreen context (once per process), turning the backend's
    low-level failure into GLError."""
    global _checked
    if _checked:
        return
    try:
        ctx = mujoco.GLContext(16, 16)
        ctx.make_current()
        ctx.free()
        _checked = True
    except Exception as exc:  # noqa: BLE001  PyOpenGL raises its own types, or AttributeError on a missing lib
        raise GLError(f"MUJOCO_GL={backend()} cannot create an OpenGL context ({type(exc).__name__}: {exc}); "
                      + _missing_message()) from None
