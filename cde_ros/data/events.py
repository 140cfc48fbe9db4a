"""Manipulation event phases: the JSON on `/cde/event` (see CONTRACT.md) and its parser."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..core import stamps

PHASES = ("start", "end")


class EventParseError(ValueError):
    """An event message that does not follow the contract; the message says why."""


@dataclass(frozen=True)
class EventPhase:
    phase: str  # "start" | "end"
    event_id: str | None = None  # pairs a start with its end; None: an end closes the latest start
    stamp_ns: int | None = None  # when it happened; None: the receiver stamps it on arrival
    action: str | None = None  # commanded / expected action (the label in recordings)
    # the target's image region [x, y, w, h] in camera pixels: verified only when the change is there
    roi: tuple[int, int, int, int] | None = None

    def to_json(self) -> str:
        out: dict = {"phase": self.phase}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.stamp_ns is not None:
            out["stamp"] = stamps.to_dict(self.stamp_ns)
        if self.action is not None:
            out["action"] = self.action
        if self.roi is not None:
            out["roi"] = list(self.roi)
        return json.dumps(out)


MAX_EVENT_BYTES = 64 * 1024


def parse_event(text: str) -> EventPhase:
    """Parse the `data` of a `/cde/event` message. Accepts the shorthands "start" and "end"."""
    if not isinstance(text, str):
        raise EventParseError(f"event must be a string, got {type(text).__name__}")
    if len(text) > MAX_EVENT_BYTES:
        raise EventParseError(f"event is {len(text)} bytes, more than {MAX_EVENT_BYTES}")
    raw = text.strip()
    if raw in PHASES:
        return EventPhase(raw)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EventParseError(f"event is neither 'start', 'end' nor JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:  # '[[[[...' nested deeper than the parser goes
        raise EventParseError("event JSON is nested too deeply to be an event") from None
    if not isinstance(data, dict):
        raise EventParseError(f"event JSON must be an object, got {type(data).__name__}")
    phase = data.get("phase")
    if phase not in PHASES:
        raise EventParseError(f"event 'phase' must be 'start' or 'end', got {phase!r}")
    event_id = data.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        if isinstance(event_id, int) and not isinstance(event_id, bool):
            event_id = str(event_id)
        else:
            raise EventParseError(f"event_id must be a string, got {event_id!r}")
    stamp_ns = None
    if data.get("stamp") is not None:
        try:
            stamp_ns = stamps.parse_dict(data["stamp"])
        except ValueError as exc:
            raise EventParseError(f"event stamp: {exc}") from None
    action = data.get("action")
    if action is not None and not isinstance(action, str):
        raise EventParseError(f"event action must be a string, got {action!r}")
    roi = data.get("roi")
    if roi is not None:
        if (not isinstance(roi, list) or len(roi) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e9
                           for v in roi)
                or roi[0] < 0 or roi[1] < 0 or roi[2] <= 0 or roi[3] <= 0):
            raise EventParseError(f"event roi must be [x, y, w, h] in pixels (x, y >= 0, w, h > 0), got {roi!r}")
        roi = tuple(int(round(v)) for v in roi)
    return EventPhase(phase, event_id, stamp_ns, action or None, roi)
