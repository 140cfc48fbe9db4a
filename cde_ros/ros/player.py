"""`cde-ros play BAG`: publish a rosbag2 recording through rclpy, at its recorded pace or scaled,
with `/clock` for nodes running on `use_sim_time`, for machines without `ros2 bag play`.

Messages are published exactly as recorded: the serialized bytes from the bag go to
`Publisher.publish`, which hands them to the middleware without deserialising them (what
`ros2 bag play` does). Each topic gets a publisher of its recorded type; `/clock` carries the
recording's time line (the log time of the message being published). Publishers are reliable
with a deep history, so a subscriber that falls behind loses nothing.
"""
from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core import stamps

PLAYER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)


def message_class(msgtype: str):
    """`sensor_msgs/msg/Image` -> the rclpy class `sensor_msgs.msg.Image` (ImportError if the
    message package is not installed)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


@dataclass
class PlayStats:
    messages: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    late_s: float = 0.0  # the most a message was published after its (scaled) time


class BagPlayer(Node):
    """Publishes `bag`'s topics (all, or `topics`), `rate` times as fast as recorded (0: as fast
    as possible), with `/clock` unless `clock` is false. `remap` renames topics."""

    def __init__(self, bag: str | Path, rate: float = 1.0, topics: list[str] | None = None, clock: bool = True,
                 remap: dict[str, str] | None = None, name: str = "cde_player", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        from rosbags.rosbag2 import Reader

        if rate < 0:
            raise ValueError(f"the playback rate must be >= 0 (0: as fast as possible), got {rate}")
        self.bag, self.rate = Path(bag), rate
        self._reader = Reader(self.bag)
        self._reader.open()
        self.connections = [c for c in self._reader.connections if topics is None or c.topic in topics]
        missing = sorted(set(topics or ()) - {c.topic for c in self.connections})
        if missing:
            self._reader.close()
            raise ValueError(f"bag {bag} has no topics {missing}")
        remap = remap or {}
        self.pubs = {}
        for c in self.connections:
            if c.topic not in self.pubs:
                self.pubs[c.topic] = self.create_publisher(message_class(c.msgtype), remap.get(c.topic, c.topic),
                                                           PLAYER_QOS)
        self._clock = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock = self.create_publisher(Clock, "/clock", 10)
            self._clock_msg = Clock()
        self.stats = PlayStats()
        self.done = threading.Event()
        self._stop = threading.Event()

    def wait_for_subscribers(self, topics: list[str], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.pubs[t].get_subscription_count() for t in topics if t in self.pubs):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()

    def play(self, on_message: Callable[[str, int], None] | None = None) -> PlayStats:
        """Publish everything (call from a thread of its own; `stop()` ends it early)."""
        t0_log = None
        t0_wall = time.monotonic()
        try:
            for conn, log_ns, raw in self._reader.messages(connections=self.connections):
                if self._stop.is_set() or not self.context.ok():
                    break
                if t0_log is None:
                    t0_log = log_ns
                if self.rate > 0:
                    due = (log_ns - t0_log) / 1e9 / self.rate
                    delay = due - (time.monotonic() - t0_wall)
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        self.stats.late_s = max(self.stats.late_s, -delay)
                if self._clock is not None:
                    sec, nanosec = stamps.from_ns(log_ns)
                    self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = sec, nanosec
                    self._clock.publish(self._clock_msg)
                self.pubs[conn.topic].publish(bytes(raw))
                self.stats.messages[conn.topic] = self.stats.messages.get(conn.topic, 0) + 1
                if on_message is not None:
                    on_message(conn.topic, log_ns)
        finally:
            self._reader.close()
            self.stats.seconds = time.monotonic() - t0_wall
            self.done.set()
        return self.stats


def main(argv: list[str] | None = None) -> int:
    """`cde-ros play`: spin a BagPlayer until the recording ends."""
    import argparse

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from .spin_thread import SpinThread

    p = argparse.ArgumentParser(prog="cde-ros play", description=__doc__.split("\n\n")[0])
    p.add_argument("bag")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed (2 = twice as fast, 0 = as fast as possible)")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--wait-for", nargs="*", default=[], metavar="TOPIC",
                   help="wait (up to 10 s) until these topics have a subscriber before playing")
    args = p.parse_args(argv)
    rclpy.init()
    player = BagPlayer(args.bag, args.rate, args.topics, clock=not args.no_clock)
    executor = SingleThreadedExecutor()
    executor.add_node(player)
    spinner = SpinThread(executor).start()
    try:
        if args.wait_for and not player.wait_for_subscribers(args.wait_for):
            print(f"cde-ros play: no subscriber for {args.wait_for} within 10 s; playing anyway", flush=True)
        stats = player.play()
        print(f"played {sum(stats.messages.values())} messages of {len(stats.messages)} topics in {stats.seconds:.1f} s "
              f"(at most {stats.late_s * 1e3:.0f} ms late)", flush=True)
    except KeyboardInterrupt:
        player.stop()
    finally:
        spinner.stop()
        player.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
