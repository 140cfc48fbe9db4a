"""A bounded ring of recent camera frames keyed by `header.stamp`, kept exactly as received.

Frames are not decoded here: an event picks two frames and only those are decoded. The buffer is
bounded by age (relative to the newest stamp), by count and by bytes; out-of-order stamps are
inserted in place; a stamp that jumps back by more than `jump_back_ns` (a bag loop, a simulator
reset) clears the buffer, because the old frames belong to another time line.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Frame:
    stamp_ns: int
    payload: Any  # the image message as received (rclpy or rosbags), or an RGB array
    frame_id: str = ""
    nbytes: int = 0


@dataclass
class BufferStats:
    added: int = 0
    evicted: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    clock_jumps: int = 0
    too_old: int = 0


@dataclass
class SnapshotBuffer:
    max_age_ns: int = 10_000_000_000
    max_frames: int = 600
    max_bytes: int = 512 * 1024 * 1024
    jump_back_ns: int = 1_000_000_000
    stats: BufferStats = field(default_factory=BufferStats)

    def __post_init__(self) -> None:
        if self.max_age_ns <= 0 or self.max_frames <= 0 or self.max_bytes <= 0:
            raise ValueError("buffer bounds must be positive")
        self._stamps: list[int] = []
        self._frames: list[Frame] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def newest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    @property
    def oldest_ns(self) -> int | None:
        return self._stamps[0] if self._stamps else None

    def add(self, frame: Frame) -> bool:
        """Insert a frame. Returns True when it was a backwards clock jump (buffer cleared first)."""
        jumped = False
        newest = self.newest_ns
        if newest is not None and frame.stamp_ns < newest - self.jump_back_ns:
            self.clear()
            self.stats.clock_jumps += 1
            jumped = True
            newest = None
        if newest is not None and frame.stamp_ns < newest - self.max_age_ns:
            self.stats.too_old += 1
            return jumped
        i = bisect.bisect_right(self._stamps, frame.stamp_ns)
        if i > 0 and self._stamps[i - 1] == frame.stamp_ns:  # same stamp: keep the newer message
            self._bytes -= self._frames[i - 1].nbytes
            self._frames[i - 1] = frame
            self._bytes += frame.nbytes
            self.stats.duplicates += 1
        else:
            if i < len(self._stamps):
                self.stats.out_of_order += 1
            self._stamps.insert(i, frame.stamp_ns)
            self._frames.insert(i, frame)
            self._bytes += frame.nbytes
        self.stats.added += 1
        self._evict()
        return jumped

    def _evict(self) -> None:
        newest = self._stamps[-1]
        drop = 0
        n, b = len(self._frames), self._bytes
        while drop < n - 1 and (newest - self._stamps[drop] > self.max_age_ns or n - drop > self.max_frames
                                or b > self.max_bytes):
            b -= self._frames[drop].nbytes
            drop += 1
        if drop:
            del self._stamps[:drop]
            del self._frames[:drop]
            self._bytes = b
            self.stats.evicted += drop

    def clear(self) -> None:
        self._stamps.clear()
        self._frames.clear()
        self._bytes = 0

    def newest_at_or_before(self, t_ns: int) -> Frame | None:
        i = bisect.bisect_right(self._stamps, t_ns)
        return self._frames[i - 1] if i else None

    def oldest_at_or_after(self, t_ns: int) -> Frame | None:
        i = bisect.bisect_left(self._stamps, t_ns)
        return self._frames[i] if i < len(self._frames) else None
