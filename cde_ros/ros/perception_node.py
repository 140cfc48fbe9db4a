"""`perception_node`: camera frames and manipulation events in, recognised actions out.

A lifecycle node (see CONTRACT.md for the topics and JSON):

- configure:  read and validate parameters, build the snapshot buffer and the event pairer, load
              the model on the CPU. A model that cannot be loaded is not fatal: the node stays up
              and answers every event with status `model_error` saying why.
- activate:   move the model to its device, warm it up, start the inference worker, subscribe.
- deactivate: unsubscribe, stop the worker, move the model off the GPU and free its memory.
- cleanup:    drop the model, the buffer and open events.

Threads: image and event callbacks only store messages and run the (cheap) pairing logic under a
lock; decoding and the model run on a worker thread fed by a bounded queue, so image callbacks
never wait on the model. The before frame is encoded as soon as an event's start is paired, so
at the end only the after frame is left to encode.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..core import stamps
from ..core.images import ImageError
from ..data.events import EventPhase, parse_event
from ..data.pairing import EventPairer, Outcome, PairingConfig
from ..data.snapshot import SnapshotBuffer
from ..model.where import ROI_MIN_SHARE, heat_map, share_inside
from . import conversions
from .spin_thread import EXECUTORS, create_executor

NODE_NAME = "cde_perception"
EVENT_QUEUE_DEPTH = 10_000  # event messages kept while the node catches up (a burst of 200 pairs lost 150 at 100)


@dataclass
class _Param:
    default: Any
    description: str
    read_only: bool = True
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None


# name -> definition; every one is documented in config/perception.yaml as well
PARAMS: dict[str, _Param] = {
    "image_topic": _Param("camera/image_raw", "Raw camera topic (sensor_msgs/Image); with image_transport "
                          "'compressed' the node subscribes to <image_topic>/compressed instead. Relative names are "
                          "resolved in the node's namespace."),
    "image_transport": _Param("raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (JPEG/PNG).",
                              choices=("raw", "compressed")),
    "image_qos_reliability": _Param("best_effort", "Camera subscription reliability (sensor-data QoS by default).",
                                    choices=("best_effort", "reliable")),
    "image_qos_depth": _Param(5, "Camera subscription queue depth.", range=(1, 1000)),
    "raw_ingest": _Param(True, "Subscribe to the camera serialized: only the header stamp is read on arrival and only "
                         "the frames an event picks are deserialized (false: rclpy deserializes every frame)."),
    "event_topic": _Param("cde/event", "Manipulation events (std_msgs/String, JSON), in the node's namespace."),
    "action_topic": _Param("cde/action", "Results (std_msgs/String, JSON), one per event, in the node's namespace."),
    "delta_topic": _Param("cde/delta", "Delta embeddings (sensor_msgs/Image, 32FC1), in the node's namespace."),
    "publish_delta": _Param(True, "Publish the delta embedding image."),
    "change_topic": _Param("cde/change", "Where the change happened (sensor_msgs/Image, 32FC1 heat map at a quarter "
                           "of the camera resolution: each Top-K patch's share of the delta), in the node's namespace."),
    "publish_change": _Param(False, "Publish the change heat map (for rviz / Foxglove)."),
    "model_dir": _Param("", "Model directory (model.safetensors + model.json); empty: the shipped model."),
    "device": _Param("auto", "auto (cuda when available), cuda, cuda:N or cpu.", choices=None),
    "precision": _Param("auto", "auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.",
                        choices=("auto", "fp32", "fp16", "bf16")),
    "precompute_before": _Param(True, "Encode the before frame when the event starts (false: encode both "
                                "frames at the end, only useful to measure the difference)."),
    "warmup": _Param(True, "Run dummy inferences at activation so the first event is not slow."),
    "buffer_seconds": _Param(10.0, "Keep frames this long (relative to the newest stamp).", range=(0.1, 600.0)),
    "buffer_max_frames": _Param(600, "Upper bound on buffered frames.", range=(2, 100000)),
    "buffer_max_mb": _Param(512.0, "Upper bound on buffered frame bytes, MiB.", range=(1.0, 65536.0)),
    "pre_offset": _Param(0.1, "Before frame: newest frame with stamp <= start - pre_offset (s).", range=(0.0, 60.0)),
    "post_settle": _Param(0.3, "After frame: oldest frame with stamp >= end + post_settle (s).", range=(0.0, 60.0)),
    "max_event_duration": _Param(30.0, "A start without an end for this long times out (s).", range=(0.1, 3600.0)),
    "after_wait": _Param(2.0, "Give up waiting for the after frame this long after end + post_settle (s); a frame "
                         "stamped later is not taken either (late_after_frame).",
                         range=(0.0, 600.0)),
    "max_before_age": _Param(2.0, "The before frame may be at most this much older than start - pre_offset; else "
                             "no_before_frame (the camera was silent) (s).", range=(0.01, 600.0)),
    "max_stamp_skew": _Param(60.0, "Events stamped further than this from the data clock are answered bad_event; a "
                             "frame this far ahead of the last one is a clock jump (s).", range=(0.1, 86400.0)),
    "max_open_events": _Param(32, "Open events at most; further starts are dropped and reported.", range=(1, 10000)),
    "max_queue": _Param(16, "Inference jobs waiting at most; further events are dropped and reported.",
                        range=(1, 10000)),
    "none_logit_bias": _Param(-1.0, "Bias added to the 'none' logit, the operating point between catching failed "
                              "actions and missing real ones (cde_ros/model/decision.py); -1: the model's own, "
                              "chosen on validation pairs and stored in model.json.", range=(-1.0, 3.0)),
    "confidence_threshold": _Param(0.0, "Below this confidence the action is reported as 'unknown'.",
                                   read_only=False, range=(0.0, 1.0)),
    "expected_frame_rate": _Param(0.0, "The camera's frame rate (Hz) to count frames that never arrived against; 0: "
                                  "estimated from the stamp gaps (too low under heavy loss).", range=(0.0, 1000.0)),
    "diagnostics_period": _Param(1.0, "Seconds between /diagnostics messages.", range=(0.05, 60.0)),
    "autostart": _Param(True, "Configure and activate on start-up (set false when a lifecycle manager does it)."),
    "executor": _Param("events", "The executor of the node's process (read at start): events = rclpy's "
                       "EventsExecutor, callbacks dispatched from C++ (lowest latency, see "
                       "benchmarks/results/perf.md); multi_threaded = rclpy's MultiThreadedExecutor.",
                       choices=EXECUTORS),
}


def _descriptor(name: str, p: _Param, constrained: bool = True) -> ParameterDescriptor:
    """The parameter's descriptor. Typing is dynamic (an integer given for a float is taken as
    one; a value of the wrong kind is reported by the node, not raised by rclpy)."""
    d = ParameterDescriptor(name=name, description=p.description, read_only=p.read_only, dynamic_typing=True)
    if not constrained:
        return d
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    if p.range is not None:
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                         step=0.0)]
    return d


class _Latency:
    def __init__(self, n: int = 500) -> None:
        self.values: deque[float] = deque(maxlen=n)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def percentiles(self) -> dict[str, float]:
        if not self.values:
            return {}
        v = np.asarray(self.values)
        return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


@dataclass
class _Job:
    kind: str  # before | pair | error
    outcome: Outcome
    ready: float  # perf_counter when the outcome was produced
    # where a pair's time went (ms): queue (waiting for the worker), decode, encode_after
    # (registration included), head; filled by the worker
    timings: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # the after frame's width and height


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # a value that cannot be taken (out of range, another kind) must not end the process:
        # it is recorded, reported once at configure, and every event is answered with it
        self._param_errors: dict[str, str] = {}
        for name, p in PARAMS.items():
            try:
                self.declare_parameter(name, p.default, _descriptor(name, p))
            except Exception as exc:  # noqa: BLE001  rclpy's InvalidParameterValueException and kin
                self._param_errors[name] = f"{name}: {exc}"
                if not self.has_parameter(name):
                    self.declare_parameter(name, p.default, _descriptor(name, p, constrained=False))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._lock = threading.Lock()
        self._predictor = None
        self._model_error = ""
        self._pairer: EventPairer | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._befores: dict[str, Any] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()  # ids answered: a late before job keeps nothing
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._latency = _Latency()
        self._data_clock: tuple[int, float] | None = None  # (newest data stamp, monotonic time seen)
        self.ingest_cpu_ns = 0  # CPU time spent in image callbacks (thread time)
        self.counters = {"frames": 0, "events": 0, "bad_events": 0, "results": 0, "dropped_events": 0,
                         "bad_images": 0, "befores_not_precomputed": 0, "events_lost": 0}
        self._rate_window: deque[float] = deque(maxlen=200)
        self._gaps = stamps.FrameGaps()
        self._unanswered: dict[str, int] = {}  # events answered without a classification, by status
        self._unanswered_seen: dict[str, int] = {}  # ... as of the last diagnostics message
        self._last_frame_share = 1.0  # camera frames received / sent in the last diagnostics period
        self._cb_sensor = MutuallyExclusiveCallbackGroup()
        self._cb_events = MutuallyExclusiveCallbackGroup()
        self._cb_timers = MutuallyExclusiveCallbackGroup()

    # ------------------------------------------------------------------ parameters

    def _p(self, name: str) -> Any:
        """A parameter's value: an int given for a float taken as float; the default for a value
        `_validate` refused (the node then answers every event with that error)."""
        p = PARAMS[name]
        v = self.get_parameter(name).value
        if isinstance(p.default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if name in self._invalid:
            return p.default
        return v

    _invalid: frozenset[str] = frozenset()

    def _on_set_parameters(self, params):
        """Run-time changes (only confidence_threshold is writable): a value of the wrong kind or
        out of range is refused with the reason, so it can never reach a result."""
        from rcl_interfaces.msg import SetParametersResult

        for param in params:
            spec = PARAMS.get(param.name)
            if spec is None or spec.read_only:
                continue
            v = param.value
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not spec.range[0] <= v <= spec.range[1]:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} must be a number within {list(spec.range)}, got {v!r}")
        return SetParametersResult(successful=True)

    def _validate(self) -> list[str]:
        self._invalid = frozenset()
        errors = dict(self._param_errors)
        for name, p in PARAMS.items():
            if name in errors:
                continue
            v = self._p(name)
            kind = type(p.default)
            if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
                errors[name] = f"{name}={v!r} is not a {kind.__name__}"
            elif p.choices and v not in p.choices:
                errors[name] = f"{name}={v!r} is not one of {p.choices}"
            elif p.range is not None and not isinstance(v, bool) and not p.range[0] <= v <= p.range[1]:
                errors[name] = f"{name}={v!r} is outside [{p.range[0]}, {p.range[1]}]"
        dev = self._p("device")
        if "device" not in errors and not (dev in ("auto", "cpu", "cuda") or str(dev).startswith("cuda:")):
            errors["device"] = f"device={dev!r} must be auto, cpu, cuda or cuda:N"
        self._invalid = frozenset(errors)
        return list(errors.values())

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, build buffer and pairer, load the model (CPU)."""
        errors = self._validate()
        self._param_error = ""
        if errors:
            self._param_error = "; ".join(errors)
            self.get_logger().error(f"invalid parameters, every event will be answered with status bad_parameter: "
                                    f"{self._param_error}")
        self._pairing = PairingConfig(pre_offset_s=self._p("pre_offset"), post_settle_s=self._p("post_settle"),
                                      max_event_duration_s=self._p("max_event_duration"),
                                      after_wait_s=self._p("after_wait"), max_open_events=self._p("max_open_events"),
                                      max_before_age_s=self._p("max_before_age"),
                                      max_stamp_skew_s=self._p("max_stamp_skew"))
        self._buffer = SnapshotBuffer(max_age_ns=int(self._p("buffer_seconds") * 1e9),
                                      max_frames=self._p("buffer_max_frames"),
                                      max_bytes=int(self._p("buffer_max_mb") * 1024 * 1024))
        self._pairer = EventPairer(self._pairing, self._buffer)
        self._gaps = stamps.FrameGaps(self._p("expected_frame_rate"))
        self._queue = queue.Queue(maxsize=self._p("max_queue"))
        if self._param_error:
            self._predictor, self._model_error = None, f"invalid parameters: {self._param_error}"
        else:
            self._load_model()
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self._pub_action = self.create_lifecycle_publisher(String, self._p("action_topic"), reliable)
        self._pub_delta = self.create_lifecycle_publisher(Image, self._p("delta_topic"), 10)
        self._pub_change = self.create_lifecycle_publisher(Image, self._p("change_topic"), 10)
        self._pub_diag = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._srv_start = self.create_service(Trigger, "~/start", self._srv_phase("start"),
                                              callback_group=self._cb_events)
        self._srv_end = self.create_service(Trigger, "~/end", self._srv_phase("end"), callback_group=self._cb_events)
        r = self.resolve_topic_name
        self.get_logger().info(f"configured: images from {r(self._image_topic())} ({self._p('image_transport')}), "
                               f"decoder {conversions.IMAGE_DECODER}, events from {r(self._p('event_topic'))}, results "
                               f"to {r(self._p('action_topic'))} and {r(self._p('delta_topic'))}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Model to device and warm-up, worker thread, subscriptions, timers."""
        if self._predictor is not None:
            try:
                self._predictor.to_device()
                if self._p("warmup"):
                    ms = self._predictor.warmup()
                    self.get_logger().info(f"warm-up done on {self._predictor.device}: {ms:.1f} ms per pair")
            except Exception as exc:  # noqa: BLE001  (CUDA out of memory, driver errors, ...)
                self._model_error = f"model could not run on {self._predictor.device}: {exc}"
                self.get_logger().error(self._model_error)
                self._predictor = None
        self._worker = threading.Thread(target=self._work, name="cde_inference", daemon=True)
        self._worker.start()
        image_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self._p("image_qos_depth"),
            reliability=(ReliabilityPolicy.RELIABLE if self._p("image_qos_reliability") == "reliable"
                         else qos_profile_sensor_data.reliability))
        msg_type = CompressedImage if self._p("image_transport") == "compressed" else Image
        self._image_type = msg_type
        self._subs = [
            self.create_subscription(msg_type, self._image_topic(), self._on_image, image_qos,
                                     callback_group=self._cb_sensor, raw=bool(self._p("raw_ingest"))),
            # a deep reliable queue: a planner's burst of events (hundreds back to back) is kept;
            # what the middleware still reports lost is counted (diagnostics: events_lost)
            self.create_subscription(String, self._p("event_topic"), self._on_event,
                                     QoSProfile(depth=EVENT_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE),
                                     callback_group=self._cb_events,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_events_lost)),
        ]
        self._timers = [
            self.create_timer(0.1, self._on_expire_timer, callback_group=self._cb_timers),
            self.create_timer(self._p("diagnostics_period"), self._publish_diagnostics, callback_group=self._cb_timers),
        ]
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, free device memory."""
        self._stop_io()
        if self._predictor is not None:
            self._predictor.release()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the model, buffer, open events and publishers."""
        self._predictor = None
        self._befores.clear()
        with self._lock:
            self._pairer = None
        for pub in (self._pub_action, self._pub_delta, self._pub_diag):
            self.destroy_lifecycle_publisher(pub)
        self.destroy_service(self._srv_start)
        self.destroy_service(self._srv_end)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop inputs and the worker, drop the model."""
        self._stop_io()
        self._predictor = None
        return TransitionCallbackReturn.SUCCESS

    def _stop_io(self) -> None:
        """Unsubscribe, stop the timers, then let the worker finish the jobs it has and stop."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._subs, self._timers = [], []
        if self._worker is not None:
            self._queue.put(None)  # blocks only while the bounded queue is full of jobs being drained
            self._worker.join(timeout=10.0)
            self._worker = None

    def _image_topic(self) -> str:
        t = self._p("image_topic")
        return t.rstrip("/") + "/compressed" if self._p("image_transport") == "compressed" else t

    def _load_model(self) -> None:
        from ..core.paths import shipped_model_dir
        from ..model.inference import Predictor
        from ..model.errors import ModelFileError

        self._predictor, self._model_error = None, ""
        try:
            model_dir = self._p("model_dir") or str(shipped_model_dir())
            # on the CPU first; activation moves it to the device
            bias = self._p("none_logit_bias")
            self._predictor = Predictor(model_dir, device=self._p("device"), precision=self._p("precision"),
                                        none_logit_bias=None if bias < 0 else bias)
            self._predictor.release()
            self.get_logger().info(f"model {self._predictor.model_id} from {model_dir}: labels {self._predictor.labels}, "
                                   f"none logit bias {self._predictor.none_logit_bias:g}, after-frame registration: "
                                   f"{self._predictor.preprocessing.describe_registration()}, "
                                   f"device {self._predictor.device}, precision {self._predictor.precision}")
        except (ModelFileError, FileNotFoundError, RuntimeError, ValueError) as exc:
            self._model_error = str(exc)
            self.get_logger().error(f"no model: {exc}. Every event will be answered with status model_error.")
        except Exception as exc:  # noqa: BLE001  anything else must not stop the node either
            self._model_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"no model ({self._model_error}). Every event will be answered with status "
                                    "model_error.")

    # ------------------------------------------------------------------ inputs (executor threads)

    def _data_now(self, grace_s: float = 0.0) -> int:
        """'Now' in the stamp domain of the data: the newest stamp seen, advanced by the monotonic
        time since it was seen beyond `grace_s`. Works with wall-clock cameras, sim time and bag
        playback alike. Time-outs use a grace of a second: while frames keep arriving (even late,
        from a backlog) only their stamps move time on; once the camera goes quiet, time runs on
        by the wall clock so that pending events still time out."""
        if self._data_clock is None:
            return self.get_clock().now().nanoseconds
        stamp, seen = self._data_clock
        idle = time.monotonic() - seen
        return stamp + int(max(0.0, idle - grace_s) * 1e9)

    def _saw_stamp(self, ns: int) -> None:
        """Frames move the data clock forward (and back on a clock jump of over a second)."""
        if self._data_clock is None or ns > self._data_clock[0] or ns < self._data_clock[0] - int(1e9):
            self._data_clock = (ns, time.monotonic())
        else:
            self._data_clock = (self._data_clock[0], time.monotonic())  # data still flows

    def _on_image(self, msg: Image | CompressedImage | bytes) -> None:
        t0 = time.thread_time_ns()
        try:
            if isinstance(msg, bytes):  # raw_ingest: the serialized message
                frame = conversions.frame_from_serialized(msg, self._image_type)
            else:
                frame = conversions.frame_from_msg(msg)
        except Exception as exc:  # noqa: BLE001  a message without a usable header
            self.get_logger().warning(f"image without a usable header ignored: {exc}", throttle_duration_sec=5.0)
            return
        self.counters["frames"] += 1
        self._rate_window.append(time.monotonic())
        self._gaps.observe(frame.stamp_ns)
        with self._lock:
            if self._pairer is None:
                return
            outcomes = self._pairer.on_frame(frame)
            if self._buffer.newest_ns is not None:  # a frame refused as a jump ahead does not move the clock
                self._saw_stamp(self._buffer.newest_ns)
        self._dispatch(outcomes)
        self.ingest_cpu_ns += time.thread_time_ns() - t0

    def _on_events_lost(self, info) -> None:
        self.counters["events_lost"] += int(getattr(info, "total_count_change", 1) or 1)
        self.get_logger().warning(f"the middleware lost {info.total_count_change} event message(s) "
                                  f"({info.total_count} in all): their events get no answer", throttle_duration_sec=1.0)

    def _on_event(self, msg: String) -> None:
        """Whatever one event message holds, it is answered and the node goes on."""
        try:
            event = parse_event(msg.data)
        except Exception as exc:  # noqa: BLE001  EventParseError, or anything the parser did not foresee
            self.counters["bad_events"] += 1
            self.get_logger().warning(f"malformed event answered as bad_event: {exc}", throttle_duration_sec=1.0)
            self._publish_result(Outcome("error", "unknown", "bad_event", str(exc)[:500]), None)
            return
        try:
            self._handle_event(event)
        except Exception as exc:  # noqa: BLE001  a bug must cost this event, not the node
            self.counters["bad_events"] += 1
            self.get_logger().error(f"event {event.event_id}: could not be handled: {exc!r}")
            self._publish_result(Outcome("error", event.event_id or "unknown", "bad_event",
                                         f"could not be handled: {exc!r}"[:500]), None)

    def _handle_event(self, event: EventPhase) -> None:
        self.counters["events"] += 1
        with self._lock:
            if self._pairer is None:
                return
            if event.stamp_ns is not None and self._data_clock is None:
                self._saw_stamp(event.stamp_ns)  # only frames move the data clock once they flow
            outcomes = self._pairer.on_event(event, self._data_now())
        self._dispatch(outcomes)

    def _srv_phase(self, phase: str) -> Callable:
        def handler(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            self._handle_event(EventPhase(phase, None, self._data_now(), None))
            response.success = True
            response.message = f"{phase} at {stamps.seconds(self._data_now()):.3f} s"
            return response
        return handler

    def _on_expire_timer(self) -> None:
        with self._lock:
            if self._pairer is None:
                return
            outcomes = self._pairer.expire(self._data_now(grace_s=1.0))
        self._dispatch(outcomes)

    def _dispatch(self, outcomes: list[Outcome]) -> None:
        now = time.perf_counter()
        for o in outcomes:
            if o.kind == "before" and not self._p("precompute_before"):
                continue
            job = _Job(o.kind, o, now)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                if o.kind == "before":  # the pair job will encode both frames itself
                    self.counters["befores_not_precomputed"] += 1
                    continue
                self._befores.pop(o.event_id, None)  # its answer is given here: nothing of it is kept
                self._publish_result(Outcome("error", o.event_id, "dropped",
                                             f"inference queue full ({self._queue.maxsize} jobs waiting)",
                                             o.expected_action, o.start_ns, o.end_ns, o.before, o.after), None)

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._run_job(job)
            except Exception as exc:  # noqa: BLE001  the worker must survive anything one event does
                self.get_logger().error(f"event {job.outcome.event_id}: unexpected error: {exc!r}")
                o = job.outcome
                if job.kind != "before":
                    self._publish_result(Outcome("error", o.event_id, "model_error", f"unexpected error: {exc!r}",
                                                 o.expected_action, o.start_ns, o.end_ns, o.before, o.after), job)

    def _run_job(self, job: _Job) -> None:
        o = job.outcome
        if job.kind == "error":
            self._befores.pop(o.event_id, None)
            self._publish_result(o, job)
            return
        if self._predictor is None:
            if job.kind == "pair":
                status = "bad_parameter" if self._param_error else "model_error"
                self._publish_result(Outcome("error", o.event_id, status, self._model_error or "no model loaded",
                                             o.expected_action, o.start_ns, o.end_ns, o.before, o.after), job)
            return
        if job.kind == "before":
            if o.event_id in self._answered:
                return  # answered meanwhile (an error): no encoding to keep for it
            try:
                self._befores[o.event_id] = self._predictor.encode(conversions.decode(o.before.payload))
            except (ImageError, ValueError):
                pass  # reported when the pair completes (the before frame is decoded again then)
            while len(self._befores) > self._p("max_open_events"):  # bounded whatever happens
                self._befores.pop(next(iter(self._befores)))
            return
        t_job = time.perf_counter()
        before = self._befores.pop(o.event_id, None)
        try:
            if before is None:
                before = conversions.decode(o.before.payload)
                self.counters["befores_not_precomputed"] += 1
            after = conversions.decode(o.after.payload)
            t_decoded = time.perf_counter()
        except (ImageError, ValueError) as exc:
            self.counters["bad_images"] += 1
            self._publish_result(Outcome("error", o.event_id, "bad_image", str(exc), o.expected_action,
                                         o.start_ns, o.end_ns, o.before, o.after), job)
            return
        try:
            pred = self._predictor.classify(before, after, roi=o.roi)
        except Exception as exc:  # noqa: BLE001  model failures become a status, not a crash
            self._publish_result(Outcome("error", o.event_id, "model_error", f"inference failed: {exc}",
                                         o.expected_action, o.start_ns, o.end_ns, o.before, o.after), job)
            return
        job.size = (after.shape[1], after.shape[0])
        job.timings = {"queue": (t_job - job.ready) * 1e3, "decode": (t_decoded - t_job) * 1e3,
                       "encode_after": pred.timings_ms["encode_after_ms"], "head": pred.timings_ms["head_ms"]}
        if isinstance(before, np.ndarray):  # not encoded at the start: its encoding is in this latency
            job.timings["encode_before"] = pred.timings_ms["encode_before_ms"]
        self._publish_result(o, job, pred)

    # ------------------------------------------------------------------ outputs

    def _publish_result(self, o: Outcome, job: _Job | None, pred: Any = None) -> None:
        self._befores.pop(o.event_id, None)
        self._answered[o.event_id] = None
        while len(self._answered) > 10_000:
            self._answered.popitem(last=False)
        action = None
        payload: dict[str, Any] = {"event_id": o.event_id, "status": o.status}
        if pred is not None:
            threshold = self._p("confidence_threshold")
            action = pred.action if pred.confidence >= threshold else "unknown"
            payload.update(action=action, confidence=round(pred.confidence, 4),
                           scores={k: round(v, 4) for k, v in pred.scores.items()})
            if pred.similarity is not None:  # a model with prototypes (unknown_change, enrolled actions)
                payload["similarity"] = {k: round(v, 4) for k, v in pred.similarity.items()}
        else:
            payload.update(action=None, confidence=None, scores={}, detail=o.detail)
        payload["expected_action"] = o.expected_action
        # verified: did what was expected happen? null when nothing was expected or there is no answer
        payload["verified"] = (o.expected_action == action) if (o.expected_action and pred is not None) else None
        located = pred is not None and job is not None and job.size is not None
        # where it changed, camera pixels (None: a global-head model, or no classification)
        region = self._predictor.change_region(pred, *job.size) if located else None
        if o.roi is not None and pred is not None:
            # spatial verification: the change must lie in the target's region (half of it at least)
            payload["roi"] = list(o.roi)
            if region is None:
                payload["detail"] = "this model does not localise changes (global head): roi not checked"
            else:
                inside = share_inside(region, list(o.roi))
                payload["change_in_roi"] = round(inside, 4)
                if payload["verified"] and inside < ROI_MIN_SHARE:
                    payload["verified"] = False
                    payload["detail"] = "change outside target region"
        payload["before_stamp"] = stamps.to_dict(o.before.stamp_ns) if o.before else None
        payload["after_stamp"] = stamps.to_dict(o.after.stamp_ns) if o.after else None
        frame_id = (o.after or o.before).frame_id if (o.after or o.before) else ""
        payload["frame_id"] = frame_id
        payload["model"] = self._predictor.model_id if self._predictor is not None else None
        latency = (time.perf_counter() - job.ready) * 1e3 if job is not None else 0.0
        payload["latency_ms"] = round(latency, 2)
        if job is not None and job.timings:
            payload["timings_ms"] = {k: round(v, 2) for k, v in job.timings.items()}
        if located:
            payload["change"] = region
        # the answer first: the images below are for viewers, a planner waits for this one
        self._pub_action.publish(conversions.json_string(payload))
        if located and region is not None and self._p("publish_change") and o.after is not None:
            w, h = job.size
            self._pub_change.publish(conversions.heat_map_msg(
                heat_map(region, max(1, w // 4), max(1, h // 4), scale=0.25), o.after.stamp_ns, frame_id))
        if pred is not None and self._p("publish_delta") and o.after is not None:
            self._pub_delta.publish(conversions.delta_image_msg(pred.delta, pred.topk_delta, o.after.stamp_ns, frame_id))
        self.counters["results"] += 1
        if pred is None:
            self._unanswered[o.status] = self._unanswered.get(o.status, 0) + 1
            if o.status == "dropped":  # the pairer's storm guard or a full inference queue
                self.counters["dropped_events"] += 1
        if job is not None and pred is not None:
            self._latency.add(latency)

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus()
        st.name = f"{self.get_name()}: causal delta perception"
        st.hardware_id = str(self._predictor.device) if self._predictor is not None else "none"
        if self._predictor is None:
            st.level, st.message = DiagnosticStatus.ERROR, f"no model: {self._model_error}"[:500]
        else:
            # frames: received against the camera's sequence in the last period; events: every
            # cause of an event answered without a classification
            received, missing = self._gaps.take()
            share = received / (received + missing) if received + missing else 1.0
            problems = []
            if missing:
                problems.append(f"{missing} of {received + missing} camera frames did not arrive ({share:.0%} received)")
            if self.counters["dropped_events"] or self.counters["events_lost"]:
                problems.append(f"{self.counters['dropped_events']} events dropped, "
                                f"{self.counters['events_lost']} event messages lost")
            recent = {k: v - self._unanswered_seen.get(k, 0) for k, v in self._unanswered.items()
                      if k not in ("dropped", "bad_event") and v > self._unanswered_seen.get(k, 0)}
            self._unanswered_seen = dict(self._unanswered)
            if recent:
                problems.append(f"{sum(recent.values())} events answered without a classification in the last "
                                "period ("
                                + ", ".join(f"{k} {v}" for k, v in sorted(recent.items())) + ")")
            if share < 0.5:
                st.level = DiagnosticStatus.ERROR
            elif problems:
                st.level = DiagnosticStatus.WARN
            else:
                st.level = DiagnosticStatus.OK
            st.message = ("; ".join(problems) or "ok")[:500]
            self._last_frame_share = share
        now = time.monotonic()
        recent = [t for t in self._rate_window if now - t < 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        with self._lock:
            buf = self._buffer if self._pairer is not None else None
            open_events = self._pairer.open_events if self._pairer is not None else 0
            pairing_errors = dict(self._pairer.stats.errors) if self._pairer is not None else {}
            absorbed = dict(self._pairer.stats.absorbed) if self._pairer is not None else {}
            frames_ahead = self._pairer.stats.frames_ahead if self._pairer is not None else 0
        values = {
            **{k: v for k, v in self.counters.items()},
            "frame_rate_hz": round(rate, 2),
            "frames_missing": self._gaps.missing,
            "frames_received_share_last_period": round(self._last_frame_share, 4),
            **{f"unanswered_{k}": v for k, v in sorted(self._unanswered.items())},
            "buffer_frames": len(buf) if buf is not None else 0,
            "buffer_mb": round(buf.nbytes / 2**20, 2) if buf is not None else 0,
            "frames_evicted": buf.stats.evicted if buf is not None else 0,
            "frames_too_old": buf.stats.too_old if buf is not None else 0,
            "clock_jumps": buf.stats.clock_jumps if buf is not None else 0,
            "open_events": open_events,
            "queue_depth": self._queue.qsize(),
            "ingest_cpu_us_per_frame": round(self.ingest_cpu_ns / 1e3 / max(1, self.counters["frames"]), 1),
            "device": st.hardware_id,
            "model": self._predictor.model_id if self._predictor is not None else "",
            "none_logit_bias": self._predictor.none_logit_bias if self._predictor is not None else "",
            "register_max_shift": self._predictor.preprocessing.register_max_shift if self._predictor is not None else "",
            **{f"latency_ms_{k}": round(v, 2) for k, v in self._latency.percentiles().items()},
            **{f"pairing_{k}": v for k, v in pairing_errors.items()},
            **{f"pairing_absorbed_{k}": v for k, v in absorbed.items()},
            "frames_ahead_of_clock": frames_ahead,
        }
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._pub_diag.publish(arr)


def start(node: PerceptionNode) -> bool:
    """Configure and activate (what `autostart` does). Returns False when a transition failed."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT or SIGTERM, then stop cleanly and fast.

    Under `ros2 launch` a Ctrl-C reaches the node twice (the terminal's and the one launch
    forwards) while a Python process with torch loaded takes 1.5-1.9 s to tear down, which
    launch reported as `process has died [exit code -2]`. So rclpy's own signal handlers are off:
    the first signal ends the spin, a repeat is ignored, and once the node is shut down and
    destroyed the process exits at once with status 0 (the interpreter's slow teardown of torch
    is skipped; logs are flushed first)."""
    import os
    import signal

    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = PerceptionNode()
    kind = node.get_parameter("executor").value
    try:
        executor = create_executor(kind)
    except (RuntimeError, ValueError) as exc:
        node.get_logger().error(str(exc))
        node.destroy_node()
        rclpy.shutdown()
        raise SystemExit(2) from None
    node.get_logger().info(f"executor: {kind}")
    stopping = threading.Event()

    def on_signal(signum, frame) -> None:
        if stopping.is_set():
            return  # the repeat (launch forwards the terminal's SIGINT): shutdown has begun
        stopping.set()
        executor.wake()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    code = 0
    try:
        if node.get_parameter("autostart").value and not start(node):
            node.get_logger().error("autostart failed; see the errors above")
        executor.add_node(node)
        while not stopping.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down")
    except rclpy.executors.ExternalShutdownException:
        pass
    except Exception as exc:  # noqa: BLE001  logged, and the exit status says so
        node.get_logger().error(f"stopped by an unexpected error: {exc!r}")
        code = 1
    finally:
        try:
            node.trigger_shutdown()
        except Exception:  # noqa: BLE001  already finalized
            pass
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
