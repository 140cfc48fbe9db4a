"""Pair manipulation events with their before and after frames (CONTRACT.md).

The "before" frame is the newest frame with stamp <= start - pre_offset; the "after" frame is the
oldest frame with stamp >= end + post_settle. The node (live) and the trainer (bags) both feed
frames and events into an `EventPairer` in arrival order and act on what it emits, so the two
cannot pick different frames.

Outcomes:
- `Outcome(kind="before")`: the before frame of an open event is known (the node encodes it now).
- `Outcome(kind="pair", status="ok")`: both frames are known.
- `Outcome(kind="error", status=...)`: the event ends without a pair: `no_before_frame` (none
  at all, or only one older than `max_before_age_s` before start - pre_offset: the camera was
  silent), `no_after_frame` (none came within `after_wait_s`), `late_after_frame` (the first
  frame at or after end + post_settle is stamped more than `after_wait_s` later: after such a
  silence it shows a later scene, so it is not taken), `timeout` (a start that never ended), `end_without_start`,
  `end_before_start`, `dropped` (too many open events), `clock_jump`, `bad_event` (a stamp
  more than `max_stamp_skew_s` from the data clock).

Exactly one pair or error per event id ever seen: a second start of an open id, and any phase
of an id already answered, are absorbed and counted (`stats.absorbed`), not answered again.
A frame stamped more than `max_stamp_skew_s` ahead of the newest frame is a clock jump (open
events are answered `clock_jump`, the frame is not kept): a glitch can never become a before
or after frame.
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
    # how long after `end + post_settle` to wait for an after frame before giving up (a frame
    # stamped later than that is not taken either: late_after_frame)
    after_wait_s: float = 2.0
    max_open_events: int = 32
    # the before frame may be at most this much older than start - pre_offset (a silent camera)
    max_before_age_s: float = 2.0
    # events and frames stamped further than this from the data clock are refused (bad_event) /
    # a clock jump
    max_stamp_skew_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("pre_offset_s", "post_settle_s", "after_wait_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_before_age_s <= 0 or self.max_stamp_skew_s <= 0:
            raise ValueError("max_before_age_s and max_stamp_skew_s must be > 0")
        if self.max_event_duration_s <= 0 or self.max_open_events < 1:
            raise ValueError("max_event_duration_s must be > 0 and max_open_events >= 1")

    @classmethod
    def of_model(cls, meta: dict) -> "PairingConfig":
        """The pairing a model was trained with (its model.json's `pairing`; the defaults for a
        model written before it was recorded): what every reader of pairs for that model uses, so
        that evaluation, benchmarks and training cannot drift apart."""
        return cls(**meta["pairing"]) if "pairing" in meta else cls()


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
    roi: tuple[int, int, int, int] | None = None  # the event's target region (camera pixels)


@dataclass
class _Open:
    event_id: str
    start_ns: int
    action: str | None
    roi: tuple[int, int, int, int] | None = None
    before: Frame | None = None
    before_done: bool = False
    end_ns: int | None = None
    after: Frame | None = None


@dataclass
class PairingStats:
    events: int = 0
    pairs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    absorbed: dict[str, int] = field(default_factory=dict)  # phases not answered (one answer per id)
    frames_ahead: int = 0  # frames refused as a jump ahead of the data clock

    def count(self, status: str) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1

    def absorb(self, why: str) -> None:
        self.absorbed[why] = self.absorbed.get(why, 0) + 1


ANSWERED_MEMORY = 10_000  # event ids remembered as answered (their later phases are absorbed)


class EventPairer:
    """Feed `on_frame`, `on_event` and `expire` in arrival order; each returns new outcomes."""

    def __init__(self, config: PairingConfig, buffer: SnapshotBuffer) -> None:
        self.cfg = config
        self.buffer = buffer
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._auto = 0
        # ids of events already answered: any later phase of theirs is absorbed (one answer per id)
        self._answered: OrderedDict[str, None] = OrderedDict()
        self.stats = PairingStats()

    @property
    def open_events(self) -> int:
        return len(self._open)

    # ---------------------------------------------------------------------------- inputs

    def on_frame(self, frame: Frame) -> list[Outcome]:
        out: list[Outcome] = []
        newest = self.buffer.newest_ns
        if newest is not None and frame.stamp_ns > newest + self._skew:
            self.stats.frames_ahead += 1
            self.buffer.clear()
            self.buffer.stats.clock_jumps += 1
            for ev in list(self._open.values()):
                out.append(self._fail(ev, "clock_jump", f"a frame stamped {stamps.seconds(frame.stamp_ns - newest):.1f} s "
                                                        f"ahead of the last one arrived; the buffer was cleared"))
            return out
        if self.buffer.add(frame):  # time went backwards: open events belong to the old time line
            for ev in list(self._open.values()):
                out.append(self._fail(ev, "clock_jump", "camera stamps jumped back; the buffer was cleared"))
        for ev in list(self._open.values()):
            out += self._advance(ev)
        return out

    def on_event(self, event: EventPhase, received_ns: int) -> list[Outcome]:
        """`received_ns`: the data clock when the event arrived; it stamps events that carry
        none, and an event stamped further than `max_stamp_skew_s` from it is refused."""
        t = event.stamp_ns if event.stamp_ns is not None else received_ns
        if event.event_id is not None and event.event_id in self._answered:
            self.stats.absorb(f"{event.phase}_of_answered_event")
            return []
        if abs(t - received_ns) > self._skew:
            return self._skewed(event, t, received_ns)
        if event.phase == "start":
            return self._start(event, t)
        return self._end(event, t)

    def _skewed(self, event: EventPhase, t: int, now: int) -> list[Outcome]:
        detail = (f"its stamp {stamps.seconds(t):.3f} s is {stamps.seconds(abs(t - now)):.1f} s from the data clock "
                  f"({stamps.seconds(now):.3f} s), more than max_stamp_skew {self.cfg.max_stamp_skew_s:g} s")
        ev = self._open.get(event.event_id) if event.event_id is not None else None
        if ev is not None:
            return [self._fail(ev, "bad_event", f"its {event.phase} is refused: {detail}")]
        self.stats.events += 1
        return [self._error(event.event_id or "unknown", "bad_event", f"{event.phase} refused: {detail}",
                            event.action, t if event.phase == "start" else None)]

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

    @property
    def _skew(self) -> int:
        return int(self.cfg.max_stamp_skew_s * NS)

    def _start(self, event: EventPhase, t: int) -> list[Outcome]:
        self.stats.events += 1
        if event.event_id is None:
            self._auto += 1
            eid = f"auto-{self._auto:06d}"
        else:
            eid = event.event_id
        if eid in self._open:  # the open event will be answered once
            self.stats.absorb("duplicate_start")
            return []
        if len(self._open) >= self.cfg.max_open_events:
            return [self._error(eid, "dropped", f"{len(self._open)} events already open (max_open_events)",
                                event.action, t)]
        ev = _Open(eid, t, event.action, event.roi)
        self._open[eid] = ev
        return self._advance(ev)

    def _end(self, event: EventPhase, t: int) -> list[Outcome]:
        if event.event_id is None:
            candidates = [e for e in self._open.values() if e.end_ns is None]
            ev = max(candidates, key=lambda e: e.start_ns) if candidates else None
        else:
            ev = self._open.get(event.event_id)
        if ev is not None and ev.end_ns is not None:  # a second end of an event waiting for its after frame
            self.stats.absorb("duplicate_end")
            return []
        if ev is None:
            self.stats.events += 1
            eid = event.event_id or "unknown"
            return [self._error(eid, "end_without_start", "an end arrived for no open start", event.action, None, t)]
        if t < ev.start_ns:
            return [self._fail(ev, "end_before_start",
                               f"end stamp {stamps.seconds(t):.3f} s is before start {stamps.seconds(ev.start_ns):.3f} s")]
        ev.end_ns = t
        if event.action and not ev.action:
            ev.action = event.action
        if event.roi and not ev.roi:
            ev.roi = event.roi
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
        limit = ev.start_ns - self._pre - int(self.cfg.max_before_age_s * NS)
        if ev.before is not None and ev.before.stamp_ns < limit:
            age = stamps.seconds(ev.start_ns - self._pre - ev.before.stamp_ns)
            ev.before = None
            return [self._fail(ev, "no_before_frame",
                               f"the newest frame before {stamps.seconds(ev.start_ns - self._pre):.3f} s is {age:.1f} s "
                               f"older (more than max_before_age {self.cfg.max_before_age_s:g} s: the camera was silent)")]
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
        late = after.stamp_ns - (ev.end_ns + self._post)
        if late > self.cfg.after_wait_s * NS:  # the camera was silent: that frame shows a later scene
            return [self._fail(ev, "late_after_frame",
                               f"the first frame after {stamps.seconds(ev.end_ns + self._post):.3f} s came "
                               f"{stamps.seconds(late):.1f} s later, more than after_wait {self.cfg.after_wait_s:g} s")]
        del self._open[ev.event_id]
        self.stats.pairs += 1
        self._remember(ev.event_id)
        return [Outcome("pair", ev.event_id, "ok", "", ev.action, ev.start_ns, ev.end_ns, ev.before, after, ev.roi)]

    def _remember(self, eid: str) -> None:
        if eid == "unknown":
            return
        self._answered[eid] = None
        while len(self._answered) > ANSWERED_MEMORY:
            self._answered.popitem(last=False)

    def _fail(self, ev: _Open, status: str, detail: str) -> Outcome:
        self._open.pop(ev.event_id, None)
        return self._error(ev.event_id, status, detail, ev.action, ev.start_ns, ev.end_ns, ev.before)

    def _error(self, eid: str, status: str, detail: str, action: str | None, start_ns: int | None,
               end_ns: int | None = None, before: Frame | None = None) -> Outcome:
        self.stats.count(status)
        self._remember(eid)
        return Outcome("error", eid, status, detail, action, start_ns, end_ns, before, None)
