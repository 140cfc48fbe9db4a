"""`cde-ros demo`: in one process, a synthetic camera with manipulation events, the perception
node, and a planner-like listener that prints what was commanded and what was recognised.

The camera publishes real `sensor_msgs/Image` messages and `/cde/event` JSON through rclpy;
the node answers on `/cde/action`; the listener checks each answer against the ground truth the
synthetic scene knows (including failed manipulations, whose truth is `none`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core.events import EventPhase
from ..core.synthetic import SceneConfig, StreamConfig, stream
from . import conversions
from .perception_node import PerceptionNode, start
from .spin_thread import SpinThread

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class SyntheticCamera(Node):
    """Plays the synthetic stream: frames on the image topic, events on the event topic.

    Stamps are the stream's own times shifted to start at the node's clock `now()`; playback
    runs `realtime` times faster than real time. `truth` maps event_id -> true action."""

    def __init__(self, split: str = "val", events: int = 10, scenes: str = "single", seed: int = 1,
                 rate_hz: float = 20.0, realtime: float = 4.0, image_topic: str = "/camera/image_raw",
                 event_topic: str = "/cde/event", frame_id: str = "camera_optical_frame",
                 send_commanded: bool = True, name: str = "cde_synthetic_camera", reliable: bool = False,
                 **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        # reliable: a deep history so that a subscriber with a backlog loses nothing (tests)
        self.pub_image = self.create_publisher(Image, image_topic, QoSProfile(
            depth=1000, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data)
        self.pub_event = self.create_publisher(String, event_topic, RELIABLE)
        self.items = list(stream(split, events, SceneConfig(clutter=scenes == "cluttered"),
                                 StreamConfig(rate_hz=rate_hz), seed=seed))
        self.truth = {ev.event_id: ev.action for kind, _, ev in self.items if kind == "event"}
        self.commanded = {ev.event_id: ev.commanded for kind, _, ev in self.items if kind == "event"}
        self.frame_id = frame_id
        self.realtime = realtime
        self.send_commanded = send_commanded
        self.done = threading.Event()
        self.published_frames: list[int] = []  # stamps, in publishing order
        self.published_events: list[EventPhase] = []

    def play(self, base_ns: int | None = None) -> None:
        """Publish everything with pacing (call from a thread of its own)."""
        base = self.get_clock().now().nanoseconds if base_ns is None else base_ns
        t0_stream = self.items[0][1]
        t0_wall = time.monotonic()
        for kind, stamp, item in self.items:
            due = (stamp - t0_stream) / 1e9 / self.realtime
            delay = due - (time.monotonic() - t0_wall)
            if delay > 0:
                time.sleep(delay)
            if not self.context.ok():
                return
            t = base + (stamp - t0_stream)
            if kind == "frame":
                self.pub_image.publish(conversions.rgb_to_image_msg(item, t, self.frame_id))
                self.published_frames.append(t)
            else:
                expected = item.commanded if self.send_commanded else item.action
                ev = EventPhase(item.phase, item.event_id, t, expected)
                self.pub_event.publish(String(data=ev.to_json()))
                self.published_events.append(ev)
        self.done.set()


@dataclass
class PlannerListener:
    """Collects `/cde/action` results (a subscription on a node of the caller's)."""

    node: Node
    topic: str = "/cde/action"
    results: dict[str, dict] = field(default_factory=dict)
    on_result: object = None

    def __post_init__(self) -> None:
        self.arrived = threading.Condition()
        self.node.create_subscription(String, self.topic, self._cb, RELIABLE)

    def _cb(self, msg: String) -> None:
        data = json.loads(msg.data)
        with self.arrived:
            self.results[data["event_id"]] = data
            self.arrived.notify_all()
        if callable(self.on_result):
            self.on_result(data)

    def wait_for(self, event_ids, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not set(event_ids) <= set(self.results):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True


def isolate_ros_domain() -> None:
    """Keep demo traffic on this machine: localhost discovery only."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def run_demo(args: argparse.Namespace) -> int:
    isolate_ros_domain()
    rclpy.init()
    overrides = [rclpy.parameter.Parameter("device", value=args.device)]
    if args.model:
        overrides.append(rclpy.parameter.Parameter("model_dir", value=args.model))
    perception = PerceptionNode(parameter_overrides=overrides)
    camera = SyntheticCamera(split=args.split, events=args.events, scenes=args.scenes, seed=args.seed,
                             rate_hz=args.rate, realtime=args.realtime)
    planner = Node("cde_demo_planner")
    stats = {"right": 0, "n": 0, "failed_caught": 0, "failed": 0}

    def show(r: dict) -> None:
        eid = r["event_id"]
        truth, commanded = camera.truth.get(eid), camera.commanded.get(eid)
        if r["status"] != "ok":
            print(f"{eid}  commanded {commanded:<11} -> status {r['status']}: {r.get('detail', '')}", flush=True)
            stats["n"] += 1
            return
        ok = r["action"] == truth
        stats["n"] += 1
        stats["right"] += ok
        if truth == "none":
            stats["failed"] += 1
            stats["failed_caught"] += r["action"] == "none"
        verdict = "done" if r["verified"] else ("FAILED (nothing changed)" if r["action"] == "none" else "MISMATCH")
        print(f"{eid}  commanded {commanded:<11} recognised {r['action']:<11} ({r['confidence']:.2f})  "
              f"truth {truth:<11} {'ok ' if ok else 'ERR'}  planner: {verdict}  [{r['latency_ms']:.0f} ms]", flush=True)

    listener = PlannerListener(planner, on_result=show)
    if not start(perception):
        print("cde-ros demo: the perception node could not be configured/activated", file=sys.stderr)
        return 1
    executor = MultiThreadedExecutor(num_threads=4)
    for n in (perception, camera, planner):
        executor.add_node(n)
    spinner = SpinThread(executor).start()
    time.sleep(1.0)  # discovery
    print(f"demo: {args.events} {args.scenes}-object manipulations from the '{args.split}' split, "
          f"camera at {args.rate:g} Hz x{args.realtime:g} speed, model "
          f"{perception._predictor.model_id if perception._predictor else 'NONE'}", flush=True)
    player = threading.Thread(target=camera.play, daemon=True)
    player.start()
    player.join()
    ok = listener.wait_for(camera.truth.keys(), timeout=30.0)
    if not spinner.stop():
        print("cde-ros demo: the executor thread did not stop within 10 s", file=sys.stderr)
    perception.trigger_shutdown()
    for n in (perception, camera, planner):
        n.destroy_node()
    rclpy.shutdown()
    n = stats["n"]
    print(f"accuracy {stats['right']}/{n} = {stats['right'] / max(1, n):.2f}; failed manipulations caught "
          f"{stats['failed_caught']}/{stats['failed']}" + ("" if ok else "; some events got no answer"), flush=True)
    return 0 if ok else 1
