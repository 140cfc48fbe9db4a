"""The reference client: how a planner uses `/cde/action` to verify what it commanded.

A planner publishes the start and end of each manipulation on `cde/event` with the action it
commanded (`action`), then waits for that event's one answer on `cde/action`:

- `verified: true`: the commanded action happened; go on.
- `verified: false` and `action: "none"`: the manipulation failed (nothing changed): retry, up
  to `max_retries` times, then report it as failed.
- `verified: false` and another action: something else happened (the wrong part moved, the
  wrong way): stop and re-plan.
- `status` other than `ok`: the node could not judge (no frames, a bad image, no model): treat
  as unknown, check the camera, do not assume success.
- `action: "unknown_change"` (something changed, unlike any action the model knows) or
  `"unknown"` (below the node's `confidence_threshold`): do not assume success; check.

`VerifyingPlanner` is the part a planner embeds; `PlannerNode` runs it as a node that only
listens (the manipulations come from a recording or a simulator) and logs each verdict:
`ros2 run cde_ros example_planner` or `cde-ros planner`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from ..core import stamps
from ..data.events import EventPhase

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def verdict(result: dict) -> str:
    """What a planner does with one `/cde/action` answer: done, retry, replan or check."""
    if result.get("status") != "ok" or result.get("action") in ("unknown", "unknown_change"):
        return "check"
    if result.get("verified"):
        return "done"
    if result.get("verified") is None:
        return "done" if result.get("action") not in (None, "none") else "retry"
    return "retry" if result.get("action") == "none" else "replan"


@dataclass
class Attempt:
    event_id: str
    action: str
    result: dict | None = None
    decision: str = ""


@dataclass
class VerifyingPlanner:
    """Publishes events for manipulations it commands and waits for their verdicts."""

    node: Node
    event_topic: str = "cde/event"
    action_topic: str = "cde/action"
    max_retries: int = 2
    results: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition()
        self._pub = self.node.create_publisher(String, self.event_topic, RELIABLE)
        self.node.create_subscription(String, self.action_topic, self._on_result, RELIABLE)

    def _on_result(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            return
        with self._arrived:
            self.results[str(data.get("event_id"))] = data
            self._arrived.notify_all()

    def mark(self, phase: str, event_id: str, action: str, stamp_ns: int | None = None) -> None:
        """Publish the start or end of a commanded manipulation (stamp: now on the node's clock)."""
        t = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        self._pub.publish(String(data=EventPhase(phase, event_id, t, action).to_json()))

    def wait(self, event_id: str, timeout_s: float = 10.0) -> dict | None:
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while event_id not in self.results:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._arrived.wait(left)
            return self.results[event_id]

    def run(self, action: str, execute, event_prefix: str = "cmd", timeout_s: float = 10.0) -> list[Attempt]:
        """Command `action` through `execute()` (the robot's motion), marked by start/end
        events; retry while the node says nothing changed. Returns every attempt."""
        attempts: list[Attempt] = []
        for k in range(self.max_retries + 1):
            eid = f"{event_prefix}-{len(self.results) + k:04d}-{stamps.seconds(time.time_ns()):.0f}"
            self.mark("start", eid, action)
            execute()
            self.mark("end", eid, action)
            a = Attempt(eid, action, self.wait(eid, timeout_s))
            a.decision = verdict(a.result) if a.result is not None else "check"
            attempts.append(a)
            if a.decision != "retry":
                break
        return attempts


class PlannerNode(Node):
    """Listens to `cde/event` and `cde/action` and logs, per manipulation, what was commanded,
    what the node saw and what a planner would do (the demo's planner side)."""

    def __init__(self, name: str = "cde_example_planner", **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.commanded: dict[str, str] = {}
        self.decisions: dict[str, str] = {}
        self.create_subscription(String, "cde/event", self._on_event, RELIABLE)
        self.create_subscription(String, "cde/action", self._on_result, RELIABLE)

    def _on_event(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
            self.commanded[str(data["event_id"])] = str(data.get("action"))
        except (ValueError, KeyError, TypeError):
            pass

    def _on_result(self, msg: String) -> None:
        try:
            r = json.loads(msg.data)
        except ValueError:
            return
        eid = str(r.get("event_id"))
        d = verdict(r)
        self.decisions[eid] = d
        what = {"done": "done", "retry": "FAILED (nothing changed): retry", "replan": f"MISMATCH ({r.get('action')}): "
                "re-plan", "check": f"no verdict ({r.get('status')}): check the camera"}[d]
        self.get_logger().info(f"{eid}: commanded {self.commanded.get(eid, r.get('expected_action'))}, saw "
                               f"{r.get('action')} ({r.get('confidence')}): {what}")


def main(args: list[str] | None = None) -> None:
    import rclpy

    rclpy.init(args=args)
    node = PlannerNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
