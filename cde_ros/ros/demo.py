"""`cde-ros demo`: a simulated robot at a kitchen counter, the perception node, and a planner.

The robot's manipulations are a MuJoCo recording (`cde-ros record-sim`, made once and cached):
an arm opening drawers and doors, pressing buttons, turning knobs, pushing and pouring, some of
its attempts failing (a slipped grasp, a missed button). A `BagPlayer` publishes the camera
(JPEG `CompressedImage`) and the planner's `/cde/event` start/end, with the action the planner
commanded, through rclpy; the perception node answers on `/cde/action`; the planner side prints,
per manipulation, what was commanded, what the node saw, the verdict a planner acts on (done, or
failed: retry) and what really happened. A picture of every event's before and after frame (the
ones the node picked, by their stamps) with its verdict is written beside.

`SyntheticCamera` (the 2D stream, in-process) stays for the node's fast tests.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core import stamps
from ..data.events import EventPhase
from ..synthetic.scenes import SceneConfig, StreamConfig, stream
from . import conversions
from .perception_node import PerceptionNode, start
from .spin_thread import SpinThread, create_executor

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
    answers: dict[str, int] = field(default_factory=dict)  # how many answers each event id got

    def __post_init__(self) -> None:
        self.arrived = threading.Condition()
        self.node.create_subscription(String, self.topic, self._cb, RELIABLE)

    def _cb(self, msg: String) -> None:
        data = json.loads(msg.data)
        with self.arrived:
            self.results[data["event_id"]] = data
            self.answers[data["event_id"]] = self.answers.get(data["event_id"], 0) + 1
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


def demo_recording(args: argparse.Namespace, log=print) -> Path:
    """The demo's simulated recording: made with `record-sim` the first time (about 4 s per
    episode), then reused from ~/.cache/cde_ros/demo (keyed by the arguments and the simulator's
    source, so a changed simulator records anew)."""
    from ..data.bags import default_cache_dir

    sim_dir = Path(__file__).resolve().parents[1] / "sim"
    source = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(sim_dir.rglob("*.py")))).hexdigest()[:12]
    key = hashlib.sha256(json.dumps([args.split, args.style, args.seed, args.events, args.rate, source]).encode())
    out = default_cache_dir().parent / "demo" / key.hexdigest()[:16] / "bag"
    if (out / "metadata.yaml").is_file():
        return out
    if out.exists():  # an interrupted recording
        import shutil

        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"demo: simulating {args.events} manipulations once (cached in {out.parent}) ...")
    # in a process of its own: this one runs the model, and rendering leaves nothing behind in it
    import subprocess

    cmd = [sys.executable, "-m", "cde_ros.cli", "record-sim", str(out), "--episodes", str(args.events), "--split",
           args.split, "--style", args.style, "--seed", str(args.seed), "--none-fraction", "0.25", "--image",
           "compressed", "--rate", str(args.rate), "--event-action", "commanded"] + ([] if sys.stderr.isatty() else ["--quiet"])
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=None if sys.stderr.isatty() else subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the demo's simulation failed: {(proc.stderr or '').strip().splitlines()[-1:] or proc.returncode}")
    return out


def _verdict(r: dict) -> str:
    if r["status"] != "ok":
        return f"no answer ({r['status']}): check the camera"
    if r["verified"]:
        return "done"
    if r["action"] == "none":
        return "FAILED (nothing changed): retry"
    return f"MISMATCH (saw {r['action']}): re-plan"


def write_verdict_picture(bag: Path, results: list[dict], truth: dict[str, dict], path: Path, width: int = 320) -> Path:
    """Every event's before and after frame (the ones the node chose, found by stamp), with what
    was commanded, what the node said, the verdict and the truth."""
    import cv2

    from ..data.bags import BagReport, _bag_messages, _typestore

    wanted = {}
    for r in results:
        for key in ("before_stamp", "after_stamp"):
            if r.get(key):
                wanted[stamps.parse_dict(r[key])] = None
    ts = _typestore()
    topics, _, messages = _bag_messages(bag, ("/camera/image_raw/compressed",), BagReport(str(bag)))
    for topic, msgtype, _, raw in messages:
        if topic != "/camera/image_raw/compressed":
            continue
        msg = ts.deserialize_cdr(raw, msgtype)
        t = stamps.to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        if t in wanted:
            wanted[t] = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    h = width * 3 // 4
    rows = []
    for r in results:
        tiles = []
        for key in ("before_stamp", "after_stamp"):
            img = wanted.get(stamps.parse_dict(r[key])) if r.get(key) else None
            tiles.append(cv2.resize(img, (width, h)) if img is not None else np.zeros((h, width, 3), np.uint8))
        t = truth.get(r["event_id"], {})
        panel = np.full((h, width, 3), 245, np.uint8)
        ok = r.get("action") == t.get("action")
        lines = [r["event_id"], f"robot: {r.get('expected_action')} {t.get('obj_class', '')}",
                 f"node: {r.get('action')} ({r.get('confidence') or 0:.2f})", f"planner: {_verdict(r)}",
                 f"truth: {t.get('action')}" + (f" ({t.get('failure')})" if t.get("failure") else ""),
                 "correct" if ok else "WRONG"]
        for i, line in enumerate(lines):
            color = (0, 130, 0) if (i == 5 and ok) else (0, 0, 200) if i == 5 else (20, 20, 20)
            cv2.putText(panel, line, (8, 24 + 34 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        rows.append(np.concatenate([tiles[0], tiles[1], panel], 1))
    header = np.full((28, 3 * width, 3), 255, np.uint8)
    for i, text in enumerate(("before (start - pre_offset)", "after (end + post_settle)", "verdict")):
        cv2.putText(header, text, (8 + i * width, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate([header, *rows], 0))
    return path


def run_demo(args: argparse.Namespace) -> int:
    from ..data.bags import read_json_topic
    from ..sim.record import TRUTH_TOPIC
    from .player import BagPlayer

    isolate_ros_domain()
    bag = demo_recording(args)
    truth = {t["event_id"]: t for t in read_json_topic(bag, TRUTH_TOPIC)}
    rclpy.init()
    overrides = [rclpy.parameter.Parameter(k, value=v) for k, v in (
        ("device", args.device), ("image_transport", "compressed"), ("image_qos_reliability", "reliable"),
        ("image_qos_depth", 1000))]
    if args.model:
        overrides.append(rclpy.parameter.Parameter("model_dir", value=args.model))
    perception = PerceptionNode(parameter_overrides=overrides)
    player = BagPlayer(bag, rate=args.realtime, topics=["/camera/image_raw/compressed", "/cde/event"], clock=False)
    planner = Node("cde_demo_planner")
    stats = {"right": 0, "n": 0, "failed_caught": 0, "failed": 0}
    results: list[dict] = []

    def show(r: dict) -> None:
        results.append(r)
        t = truth.get(r["event_id"], {})
        stats["n"] += 1
        ok = r.get("action") == t.get("action")
        stats["right"] += ok
        if t.get("action") == "none":
            stats["failed"] += 1
            stats["failed_caught"] += r.get("action") == "none"
        what = f"{r.get('expected_action')} the {t.get('obj_class', '?')}"
        seen = f"{r['action']} ({r['confidence']:.2f})" if r["status"] == "ok" else f"status {r['status']}"
        real = t.get("action", "?") + (f", {t['failure']}" if t.get("failure") else "")
        print(f"{r['event_id']}  robot: {what:<24} node: {seen:<18} planner: {_verdict(r):<32} truth: {real:<16} "
              f"{'ok ' if ok else 'ERR'} [{r['latency_ms']:.0f} ms]", flush=True)

    listener = PlannerListener(planner, on_result=show)
    if not start(perception):
        print("cde-ros demo: the perception node could not be configured/activated", file=sys.stderr)
        return 1
    executor = create_executor(perception.get_parameter("executor").value, num_threads=4)
    for n in (perception, player, planner):
        executor.add_node(n)
    spinner = SpinThread(executor).start()
    player.wait_for_subscribers(["/camera/image_raw/compressed", "/cde/event"])
    print(f"demo: {len(truth)} simulated manipulations ('{args.split}' split, {args.style} scene style), played "
          f"x{args.realtime:g}; model {perception._predictor.model_id if perception._predictor else 'NONE'}", flush=True)
    thread = threading.Thread(target=player.play, daemon=True)
    thread.start()
    thread.join()
    ok = listener.wait_for(truth.keys(), timeout=30.0)
    if not spinner.stop():
        print("cde-ros demo: the executor thread did not stop within 10 s", file=sys.stderr)
    perception.trigger_shutdown()
    for n in (perception, player, planner):
        n.destroy_node()
    rclpy.shutdown()
    n = stats["n"]
    picture = write_verdict_picture(bag, sorted(results, key=lambda r: r["event_id"]), truth, Path(args.out) / "demo_verdicts.png")
    print(f"accuracy {stats['right']}/{n} = {stats['right'] / max(1, n):.2f}; failed manipulations caught "
          f"{stats['failed_caught']}/{stats['failed']}" + ("" if ok else "; some events got no answer"), flush=True)
    print(f"before/after frames of every event with its verdict: {picture}", flush=True)
    return 0 if ok else 1
