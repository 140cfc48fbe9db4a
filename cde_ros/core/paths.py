"""Where the shipped model lives, in the three ways cde_ros can be installed."""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "cde_ros"
SHIPPED_MODEL = "default"


def shipped_model_dir() -> Path:
    """The model shipped in `models/default`, looked up in this order (the first that exists):

    1. the ament index (`share/cde_ros/models/default` of a colcon install; ROS 2 workspace),
    2. `<sys.prefix>/share/cde_ros/models/default` (pip install of the package),
    3. `models/default` next to the source tree (editable install, `./dev`).

    Raises FileNotFoundError naming every place looked at."""
    tried: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            tried.append(Path(get_package_share_directory(PACKAGE)) / "models" / SHIPPED_MODEL)
        except (PackageNotFoundError, LookupError, ValueError, KeyError, OSError):
            pass  # not a sourced ROS 2 install (OSError: AMENT_PREFIX_PATH unset)
    except ImportError:
        pass
    tried.append(Path(sys.prefix) / "share" / PACKAGE / "models" / SHIPPED_MODEL)
    tried.append(Path(__file__).resolve().parents[2] / "models" / SHIPPED_MODEL)
    for p in tried:
        if (p / "model.json").is_file():
            return p
    raise FileNotFoundError("the shipped model was not found; looked in " + ", ".join(map(str, tried)))
