"""Time stamps. Internally every stamp is an int of nanoseconds (ROS time); on the wire a
`{"sec": ..., "nanosec": ...}` mapping, exactly as `builtin_interfaces/Time`."""
from __future__ import annotations

from typing import Any, Mapping

NS_PER_S = 1_000_000_000


def to_ns(sec: int, nanosec: int) -> int:
    return int(sec) * NS_PER_S + int(nanosec)


def from_ns(ns: int) -> tuple[int, int]:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def to_dict(ns: int | None) -> dict[str, int] | None:
    if ns is None:
        return None
    sec, nanosec = from_ns(ns)
    return {"sec": sec, "nanosec": nanosec}


def parse_dict(value: Any) -> int:
    """`{"sec": s, "nanosec": n}` -> ns. Raises ValueError with a readable reason."""
    if not isinstance(value, Mapping):
        raise ValueError(f"stamp must be an object with sec and nanosec, got {value!r}")
    try:
        sec, nanosec = value["sec"], value.get("nanosec", 0)
    except KeyError:
        raise ValueError(f"stamp needs a 'sec' field, got {dict(value)!r}") from None
    if isinstance(sec, bool) or isinstance(nanosec, bool) or not isinstance(sec, int) or not isinstance(nanosec, int):
        raise ValueError(f"stamp sec and nanosec must be integers, got {dict(value)!r}")
    if sec < 0 or not 0 <= nanosec < NS_PER_S:
        raise ValueError(f"stamp out of range: {dict(value)!r}")
    return to_ns(sec, nanosec)


def seconds(ns: int) -> float:
    return ns / NS_PER_S
