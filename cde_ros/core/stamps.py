"""Time stamps. Internally every stamp is an int of nanoseconds (ROS time); on the wire a
`{"sec": ..., "nanosec": ...}` mapping, exactly as `builtin_interfaces/Time`."""
from __future__ import annotations

from collections import deque
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


class FrameGaps:
    """Frames a camera sent that never arrived, estimated from the gaps between header stamps.

    The camera's period is `expected_rate_hz` when it is known; else it is estimated as the 10th
    percentile of the last 200 stamp intervals (right while most frames still arrive; with a heavy
    loss the estimate itself is too long, so give the rate). A gap of more than 1.5 periods
    counts `round(gap / period) - 1` missing frames. Stamps that go back (a replay restarted, a
    clock jump) are not gaps. `take()` gives (received, missing) since the last call."""

    def __init__(self, expected_rate_hz: float = 0.0, min_intervals: int = 20) -> None:
        self.expected_rate_hz = float(expected_rate_hz)
        self.min_intervals = min_intervals
        self._intervals: deque[int] = deque(maxlen=200)
        self._estimate: float | None = None  # the estimated period, renewed every min_intervals intervals
        self._since_estimate = 0
        self._last: int | None = None
        self.received = 0
        self.missing = 0
        self._taken = (0, 0)

    def period_ns(self) -> float | None:
        if self.expected_rate_hz > 0:
            return NS_PER_S / self.expected_rate_hz
        return self._estimate

    def observe(self, stamp_ns: int) -> int:
        """One frame arrived; returns the frames estimated missing right before it. (Runs in the
        image callback: the percentile is recomputed every `min_intervals` frames, not per frame.)"""
        self.received += 1
        last, self._last = self._last, int(stamp_ns)
        if last is None or stamp_ns <= last:
            return 0
        gap = int(stamp_ns) - last
        period = self.period_ns()
        if self.expected_rate_hz <= 0:
            self._intervals.append(gap)
            self._since_estimate += 1
            if self._since_estimate >= self.min_intervals:
                self._since_estimate = 0
                self._estimate = float(sorted(self._intervals)[len(self._intervals) // 10])
        if period is None or gap <= 1.5 * period:
            return 0
        missed = max(0, int(round(gap / period)) - 1)
        self.missing += missed
        return missed

    def take(self) -> tuple[int, int]:
        now = (self.received, self.missing)
        got = (now[0] - self._taken[0], now[1] - self._taken[1])
        self._taken = now
        return got
