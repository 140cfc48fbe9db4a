"""Pair manipulation events with their before and after frames (CONTRACT.md).

The "before" frame is the newest frame with stamp <= start - pre_offset; the "after" frame is the
oldest frame with stamp >= end + post_settle. The node (live) and the trainer (bags) both feed
frames and events into an `EventPairer` in arrival order and act on what it emits, so the two
cannot pick different frames.

Outcomes:
- `Outcome(kind="before")`: the before frame of an open event is known (the node encodes it now).
- `Outcome(kind="pair", status="ok")`: both frames are known.
- `Outcome(kind="error", status=...)`: the event ends without a pair: `no_before_frame`,
  `no_after_frame`, `timeout` (a start that never ended), `end_without_start`,
  `end_before_start`, `duplicate_event_id`, `dropped` (too many open events), `clock_jump`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..core import stamps
from .events import EventPhase
from .snapshot import Frame, SnapshotBuffer

NS = stamps.NS_PER_S


@dataclass
class PairingConfig:
    pre_offset_s: float = 0.1
    post_settle_s: float = 0.3
    max_event_duration_s: float = 30.0
    # how long after `end + post_settle` to wait for an after frame before giving up
    after_wait_s: float = 2.0
    max_open_events: int = 32

    def __post_init__(self) -> None:
        for name in ("pre_offset_s", "post_settle_s", "after_wait_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_event_duration_s <= 0 or self.max_open_events < 1:
            raise ValueError("max_event_duration_s must be > 0 and max_open_events >= 1")


@dataclass
class Outcome:
    kind: str  # before | pair | error
    event_id: str
    status: str = "ok"
    detail: str = ""
    expected_action: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    before: Frame | None = None
    after: Frame | None = None


@dataclass
class _Open:
    event_id: str
    start_ns: int
    action: str | None
    before: Frame | None = None
    before_done: bool = False
    end_ns: int | None = None
    after: Frame | None = None


@dataclass
class PairingStats:
    events: int = 0
    pairs: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1


class EventPairer:
    """Feed `on_frame`, `on_event` and `expire` in arrival order; each returns new outcomes."""

    def __init__(self, config: PairingConfig, buffer: SnapshotBuffer) -> None:
        self.cfg = config
        self.buffer = buffer
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._auto = 0
        # ids of events already answered (an error at start): their end is absorbed, not reported twice
        self._closed: OrderedDict[str, None] = OrderedDict()
        self.stats = PairingStats()

    @property
    def open_events(self) -> int:
        return len(self._open)

    # ---------------------------------------------------------------------------- inputs

    def on_frame(self, frame: Frame) -> list[Outcome]:
        out: list[Outcome] = []
        if self.buffer.add(frame):  # time went backwards: open events belong to the old time line
            for ev in list(self._open.values()):
                out.append(self._fail(ev, "clock_jump", "camera stamps jumped back; the buffer was cleared"))
        for ev in list(self._open.values()):
            out += self._advance(ev)
        return out

    def on_event(self, event: EventPhase, received_ns: int) -> list[Outcome]:
        """`received_ns` stamps events that carry none (the receiver's clock)."""
        t = event.stamp_ns if event.stamp_ns is not None else received_ns
        if event.phase == "start":
            return self._start(event, t)
        return self._end(event, t)

    def expire(self, now_ns: int) -> list[Outcome]:
        """Time out starts that never ended and ends whose after frame never came."""
        out = []
        for ev in list(self._open.values()):
            if ev.end_ns is None and now_ns - ev.start_ns > self.cfg.max_event_duration_s * NS:
                out.append(self._fail(ev, "timeout",
                                      f"no end within max_event_duration {self.cfg.max_event_duration_s} s"))
            elif ev.end_ns is not None and now_ns > ev.end_ns + self._post + self.cfg.after_wait_s * NS:
                out += self._close(ev)
        return out

    def flush(self) -> list[Outcome]:
        """End of the input (a bag): close every open event with what is known."""
        out = []
        for ev in list(self._open.values()):
            if ev.end_ns is None:
                out.append(self._fail(ev, "timeout", "the recording ended before the event's end"))
            else:
                out += self._close(ev)
        return out

    def _close(self, ev: _Open) -> list[Outcome]:
        """No more frames will come for this ended event: pair it with what there is."""
        out = [] if ev.before_done else self._resolve_before(ev)
        if ev.event_id in self._open:
            out += self._resolve_after(ev, final=True)
        return out

    # ---------------------------------------------------------------------------- internals

    @property
    def _pre(self) -> int:
        return int(self.cfg.pre_offset_s * NS)

    @property
    def _post(self) -> int:
        return int(self.cfg.post_settle_s * NS)

    def _start(self, event: EventPhase, t: int) -> list[Outcome]:
        self.stats.events += 1
        if event.event_id is None:
            self._auto += 1
            eid = f"auto-{self._auto:06d}"
        else:
            eid = event.event_id
        if eid in self._open:
            return [self._error(eid, "duplicate_event_id", f"a start with event_id {eid!r} is still open",
                                event.action, t)]
        if len(self._open) >= self.cfg.max_open_events:
            return [self._error(eid, "dropped", f"{len(self._open)} events already open (max_open_events)",
                                event.action, t)]
        ev = _Open(eid, t, event.action)
        self._open[eid] = ev
        return self._advance(ev)

    def _end(self, event: EventPhase, t: int) -> list[Outcome]:
        if event.event_id is None:
            candidates = [e for e in self._open.values() if e.end_ns is None]
            ev = max(candidates, key=lambda e: e.start_ns) if candidates else None
        else:
            ev = self._open.get(event.event_id)
        if ev is None and event.event_id in self._closed:
            self.stats.count("end_of_closed_event")  # already answered with an error; one result per event
            return []
        if ev is None or ev.end_ns is not None:
            self.stats.events += 1
            eid = event.event_id or "unknown"
            return [self._error(eid, "end_without_start", "an end arrived for no open start", event.action, None, t)]
        if t < ev.start_ns:
            return [self._fail(ev, "end_before_start",
                               f"end stamp {stamps.seconds(t):.3f} s is before start {stamps.seconds(ev.start_ns):.3f} s")]
        ev.end_ns = t
        if event.action and not ev.action:
            ev.action = event.action
        return self._advance(ev)

    def _advance(self, ev: _Open) -> list[Outcome]:
        """Resolve what the frames seen so far make final for this event. Frames may lag behind
        events (another topic, a backlog), so the before frame is taken only once frames have
        reached start - pre_offset, and the after frame once they reach end + post_settle."""
        newest = self.buffer.newest_ns
        if newest is None:
            return []
        out = []
        if not ev.before_done and newest >= ev.start_ns - self._pre:
            out += self._resolve_before(ev)
        ended = ev.end_ns is not None and ev.before_done
        if ev.event_id in self._open and ended and newest >= ev.end_ns + self._post:
            out += self._resolve_after(ev)
        return out

    def _resolve_before(self, ev: _Open) -> list[Outcome]:
        ev.before_done = True
        ev.before = self.buffer.newest_at_or_before(ev.start_ns - self._pre)
        if ev.before is None:
            oldest = self.buffer.oldest_ns
            why = ("no frame had arrived yet" if oldest is None else
                   f"the oldest buffered frame is at {stamps.seconds(oldest):.3f} s")
            return [self._fail(ev, "no_before_frame",
                               f"no frame at or before {stamps.seconds(ev.start_ns - self._pre):.3f} s ({why})")]
        return [Outcome("before", ev.event_id, expected_action=ev.action, start_ns=ev.start_ns, before=ev.before)]

    def _resolve_after(self, ev: _Open, final: bool = False) -> list[Outcome]:
        assert ev.end_ns is not None
        after = self.buffer.oldest_at_or_after(ev.end_ns + self._post)
        if after is None:
            if not final:
                return []
            return [self._fail(ev, "no_after_frame",
                               f"no frame at or after {stamps.seconds(ev.end_ns + self._post):.3f} s arrived")]
        del self._open[ev.event_id]
        self.stats.pairs += 1
        return [Outcome("pair", ev.event_id, "ok", "", ev.action, ev.start_ns, ev.end_ns, ev.before, after)]

    def _fail(self, ev: _Open, status: str, detail: str) -> Outcome:
        self._open.pop(ev.event_id, None)
        if ev.end_ns is None:
            self._closed[ev.event_id] = None
            while len(self._closed) > 1000:
                self._closed.popitem(last=False)
        return self._error(ev.event_id, status, detail, ev.action, ev.start_ns, ev.end_ns, ev.before)

    def _error(self, eid: str, status: str, detail: str, action: str | None, start_ns: int | None,
               end_ns: int | None = None, before: Frame | None = None) -> Outcome:
        self.stats.count(status)
        return Outcome("error", eid, status, detail, action, start_ns, end_ns, before, None)
