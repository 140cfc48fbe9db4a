"""The executor the node runs on, and spinning one in a background thread that stops cleanly.

`create_executor` makes the executor by name. `events` is rclpy's EventsExecutor
(`rclpy.experimental`, in Jazzy since rclpy 7.1.4 and in Kilted): it dispatches callbacks from
C++ on one thread instead of rebuilding a Python wait set for every callback: a shorter event
latency (p95 about a third), a third to a half of the CPU per camera frame and fewer frames lost
at 1080p30 and 720p60 (both measured in benchmarks/results/perf.md). The node needs no second
executor thread: inference runs in its own worker thread, every callback is short.
`multi_threaded` is rclpy's MultiThreadedExecutor, the classic choice.

`Executor.shutdown()` destroys the executor's guard condition without waiting for the thread
that spins (ros2/rclpy#968, still open; in the Kilted wheels the wait on running work is skipped
because `_is_shutdown` is set just before it is tested). Two things can then touch the destroyed
guard and fail with `InvalidHandle: cannot use Destroyable because destruction was requested`:
a `spin()` inside a wait set, and, with a `MultiThreadedExecutor`, handlers still queued in its
thread pool (they trigger the guard when they finish; the error then shows up as "The following
exception was never retrieved"). `SpinThread` orders the steps instead: the thread spins with
`spin_once` in a loop; `stop()` ends the loop, joins the thread, waits for the handlers already
handed to the pool, and only then calls `executor.shutdown()`.
"""
from __future__ import annotations

import threading
import time

from rclpy.context import Context
from rclpy.executors import Executor, MultiThreadedExecutor

EXECUTORS = ("events", "multi_threaded")


def create_executor(kind: str = "events", context: Context | None = None, num_threads: int = 3) -> Executor:
    """An executor by name (`EXECUTORS`); `num_threads` is for `multi_threaded` only.

    Raises ValueError for another name and RuntimeError, saying what to do, when this rclpy has
    no EventsExecutor (older than Jazzy's 7.1.4): there is no silent fallback."""
    if kind == "multi_threaded":
        return MultiThreadedExecutor(num_threads=num_threads, context=context)
    if kind != "events":
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError as exc:
        raise RuntimeError("this rclpy has no EventsExecutor (it came with Jazzy's rclpy 7.1.4 and Kilted): "
                           "set the parameter executor to multi_threaded") from exc
    return EventsExecutor(context=context)


class SpinThread:
    """`executor` spun in a daemon thread until `stop()`.

    `period_s` is the longest a single `spin_once` waits, so it bounds how long `stop()` takes
    to end the loop when nothing is happening."""

    def __init__(self, executor: Executor, period_s: float = 0.05, name: str = "cde-spin") -> None:
        self.executor = executor
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        ctx = self.executor.context
        while not self._stop.is_set() and ctx.ok():
            self.executor.spin_once(timeout_sec=self._period_s)

    def start(self) -> "SpinThread":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """End the loop, join the thread, wait for the handlers already handed out, then shut the
        executor down. Returns False, leaving the executor up, when that took longer than
        `timeout_s` (a callback that blocks): shutting down under it would be the race above."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread.is_alive():
            self.executor.wake()  # end a spin_once that is waiting
            self._thread.join(timeout_s)
        if self._thread.is_alive() or not self._handlers_done(deadline):
            return False
        return self.executor.shutdown(timeout_sec=max(0.0, deadline - time.monotonic()))

    def _handlers_done(self, deadline: float) -> bool:
        # A MultiThreadedExecutor keeps the handler tasks it gave its thread pool in `_futures`
        # (private, no public accessor); a SingleThreadedExecutor runs them inside spin_once.
        for task in list(getattr(self.executor, "_futures", ())):
            while not task.done():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)
        return True
