"""Spin an rclpy executor in a background thread and stop it cleanly.

`Executor.shutdown()` destroys the executor's guard condition without waiting for a `spin()` that
another thread is running: that thread may still be inside a wait set holding the guard, and
then dies with `InvalidHandle: cannot use Destroyable because destruction was requested`
(ros2/rclpy#1355; seen with the Kilted wheels at test teardown). `SpinThread` avoids the race by
ordering the steps: the thread spins with `spin_once` in a loop, `stop()` ends the loop and joins
the thread, and only then calls `executor.shutdown()`, which also waits for the callbacks a
`MultiThreadedExecutor` still has running.
"""
from __future__ import annotations

import threading

from rclpy.executors import Executor


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
        """End the loop, join the thread, then shut the executor down (waiting for running
        callbacks). Returns False, leaving the executor up, when the thread did not end within
        `timeout_s` (a callback that blocks): shutting down under it would be the race above."""
        self._stop.set()
        if self._thread.is_alive():
            self.executor.wake()  # end a spin_once that is waiting
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        return self.executor.shutdown(timeout_sec=timeout_s)
