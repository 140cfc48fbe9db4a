"""The perception node with real ROS 2 messages: rclpy publishers and subscriptions, in-process
executors, an isolated ROS_DOMAIN_ID (conftest)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from cde_ros.core import images
from cde_ros.data.events import EventPhase
from cde_ros.model.inference import Predictor
from cde_ros.ros import conversions
from cde_ros.ros.demo import PlannerListener, SyntheticCamera
from cde_ros.ros.perception_node import PerceptionNode, start
from cde_ros.ros.spin_thread import EXECUTORS, SpinThread, create_executor

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
S = 10**9


class Harness:
    """The node under test plus a test node that publishes camera frames and events and
    collects /cde/action, /cde/delta and /diagnostics, all spun by one executor."""

    def __init__(self, params: dict, transport: str = "raw") -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        base = {"image_qos_reliability": "reliable", "image_qos_depth": 1000, "diagnostics_period": 0.2,
                "image_transport": transport}
        base.update(params)
        self.node = PerceptionNode(context=self.ctx,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in base.items()])
        self.io = Node("cde_test_io", context=self.ctx)
        topic = "/camera/image_raw" + ("/compressed" if transport == "compressed" else "")
        self.pub_img = self.io.create_publisher(CompressedImage if transport == "compressed" else Image, topic,
                                                RELIABLE)
        self.pub_ev = self.io.create_publisher(String, "/cde/event", RELIABLE)
        self.listener = PlannerListener(self.io)
        self.deltas: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.io.create_subscription(Image, "/cde/delta", self.deltas.append, 100)
        self.io.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 100)
        self.executor = create_executor(self.node.get_parameter("executor").value, context=self.ctx)  # as main()
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self.started = start(self.node)
        self.spinner = SpinThread(self.executor).start()
        self._wait_matched()

    def _wait_matched(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pub_img.get_subscription_count() and self.pub_ev.get_subscription_count():
                return
            time.sleep(0.05)
        raise AssertionError("the node's subscriptions were never matched")

    def frame(self, t_ns: int, rgb: np.ndarray | None = None, **fields) -> None:
        rgb = np.full((24, 32, 3), (t_ns // 10**8) % 255, np.uint8) if rgb is None else rgb
        msg = conversions.rgb_to_image_msg(rgb, t_ns, "test_cam")
        for k, v in fields.items():
            setattr(msg, k, v)
        self.pub_img.publish(msg)
        time.sleep(0.002)

    def event(self, phase: str, eid: str | None, t_ns: int | None, action: str | None = None) -> None:
        self.pub_ev.publish(String(data=EventPhase(phase, eid, t_ns, action).to_json()))
        time.sleep(0.01)

    def raw_event(self, text: str) -> None:
        self.pub_ev.publish(String(data=text))
        time.sleep(0.01)

    def result(self, eid: str, timeout: float = 20.0) -> dict:
        assert self.listener.wait_for([eid], timeout), f"no /cde/action for {eid}; got {list(self.listener.results)}"
        return self.listener.results[eid]

    def close(self) -> None:
        assert self.spinner.stop(), "the executor thread did not stop within 10 s"
        if self.node._state_machine.current_state[1] in ("inactive", "active", "unconfigured"):
            self.node.trigger_shutdown()
        self.node.destroy_node()
        self.io.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def harness_factory():
    made = []

    def make(params: dict, transport: str = "raw") -> Harness:
        h = Harness(params, transport)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def frames_and_event(h: Harness, eid: str, t0: float, action: str | None = "open", n: int = 30,
                     frame=None) -> None:
    """Frames every 100 ms from t0 for n frames; start at t0+1 s, end at t0+1.5 s. `frame(i, t_ns)`
    publishes frame i instead of `h.frame(t_ns)` (a damaged frame, other pixels, extra messages)."""
    for i in range(n):
        t = int((t0 + i * 0.1) * S)
        frame(i, t) if frame is not None else h.frame(t)
        if i == 12:
            h.event("start", eid, int((t0 + 1.0) * S), action)
        if i == 16:
            h.event("end", eid, int((t0 + 1.5) * S))


# ------------------------------------------------------------------------------------------ tests

def test_synthetic_camera_to_verified_actions(harness_factory, shipped_model):
    """A fake camera publishes the synthetic stream; each event's result comes out on /cde/action
    with the contract's frames, stamps and verification, and /cde/delta carries the same stamp."""
    h = harness_factory({"model_dir": str(shipped_model), "device": "cpu"})
    assert h.started
    camera = SyntheticCamera(split="iid", events=6, scenes="single", seed=4, realtime=6.0, reliable=True,
                             name="cde_test_camera", context=h.ctx)
    deadline = time.monotonic() + 10
    while camera.pub_image.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    rgb_by_stamp = {}
    stream_frames = [item for kind, _, item in camera.items if kind == "frame"]
    camera.play(base_ns=50 * S)
    for t, rgb in zip(camera.published_frames, stream_frames):
        rgb_by_stamp[t] = rgb
    ids = list(camera.truth)
    assert h.listener.wait_for(ids, timeout=60), f"results for {sorted(h.listener.results)} of {ids}"
    predictor = Predictor(shipped_model, device="cpu")
    stamps_sorted = sorted(camera.published_frames)
    starts = {e.event_id: e for e in camera.published_events if e.phase == "start"}
    ends = {e.event_id: e for e in camera.published_events if e.phase == "end"}
    offline_by_after = {}
    for eid in ids:
        r = h.result(eid)
        assert r["status"] == "ok", r
        before = max(t for t in stamps_sorted if t <= starts[eid].stamp_ns - int(0.1 * S))
        after = min(t for t in stamps_sorted if t >= ends[eid].stamp_ns + int(0.3 * S))
        assert r["before_stamp"] == {"sec": before // S, "nanosec": before % S}
        assert r["after_stamp"] == {"sec": after // S, "nanosec": after % S}
        assert r["frame_id"] == "camera_optical_frame" and r["model"] == predictor.model_id
        offline = predictor.classify(rgb_by_stamp[before], rgb_by_stamp[after])
        offline_by_after[(after // S, after % S)] = offline
        assert r["action"] == offline.action and r["confidence"] == pytest.approx(offline.confidence, abs=1e-3)
        assert r["expected_action"] == camera.commanded[eid]
        assert r["verified"] == (r["action"] == camera.commanded[eid])
        assert abs(sum(r["scores"].values()) - 1) < 1e-2 and r["latency_ms"] >= 0
    # (what the shipped model recognises is measured on the simulator by `cde-ros benchmark --sim`; this
    # 2D stream checks the node's frames, stamps and answers against the same model run offline)
    deadline = time.monotonic() + 5
    while len(h.deltas) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    delta_stamps = {(d.header.stamp.sec, d.header.stamp.nanosec) for d in h.deltas}
    for eid in ids:
        a = h.result(eid)["after_stamp"]
        assert (a["sec"], a["nanosec"]) in delta_stamps
    d = h.deltas[0]
    arr = conversions.delta_from_image_msg(d)
    meta_k = json.loads((shipped_model / "model.json").read_text())["top_k"]
    assert d.encoding == "32FC1" and arr.shape == (1 + meta_k, 256) and d.header.frame_id == "camera_optical_frame"
    # row 0 = the aggregated delta, rows 1..K = the Top-K patch deltas, as the model computes them offline
    offline = offline_by_after[(d.header.stamp.sec, d.header.stamp.nanosec)]
    np.testing.assert_allclose(arr[0], offline.delta, atol=1e-3)
    np.testing.assert_allclose(arr[1:], offline.topk_delta, atol=1e-3)


def test_bad_inputs_get_a_status_and_the_node_keeps_serving(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "pre_offset": 0.1, "post_settle": 0.3})
    frames_and_event(h, "good-1", 10.0)
    assert h.result("good-1")["status"] == "ok"
    # the before frame has a step that does not match its data
    # 20.9 s (i = 9): the newest frame <= start (21.0 s) - pre_offset (0.1 s), the before frame
    frames_and_event(h, "bad-step", 20.0, frame=lambda i, t: h.frame(t, step=10_000) if i == 9 else h.frame(t))
    r = h.result("bad-step")
    assert r["status"] == "bad_image" and "step" in r["detail"] and r["action"] is None
    assert r["before_stamp"] == {"sec": 20, "nanosec": 900_000_000}
    # the after frame has an encoding nobody knows
    frames_and_event(h, "bad-enc", 30.0,
                     frame=lambda i, t: h.frame(t, encoding="yuv422_weird") if i == 18 else h.frame(t))
    r = h.result("bad-enc")
    assert r["status"] == "bad_image" and "unknown image encoding" in r["detail"]
    assert r["after_stamp"] == {"sec": 31, "nanosec": 800_000_000}
    # malformed event JSON
    h.raw_event('{"phase": "start", "stamp": "yesterday"')
    r = h.result("unknown")
    assert r["status"] == "bad_event" and "JSON" in r["detail"]
    # an event whose start lies before every buffered frame
    h.event("start", "no-frames", int(5.0 * S), "open")
    h.event("end", "no-frames", int(5.5 * S))
    r = h.result("no-frames")
    assert r["status"] == "no_before_frame" and r["verified"] is None
    # an end nobody started
    h.event("end", "ghost", int(40.0 * S))
    assert h.result("ghost")["status"] == "end_without_start"
    # and the node still serves the next event
    frames_and_event(h, "good-2", 50.0, action="close")
    r = h.result("good-2")
    assert r["status"] == "ok" and r["expected_action"] == "close" and r["verified"] == (r["action"] == "close")
    assert h.node.counters["bad_images"] == 2 and h.node.counters["bad_events"] == 1


def test_corrupt_jpeg_on_the_compressed_transport(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu"}, transport="compressed")
    good = images.rgb_to_jpeg(np.full((24, 32, 3), 90, np.uint8))

    def jpeg(t_ns: int, data: bytes) -> None:
        msg = CompressedImage(format="jpeg", data=data)
        msg.header.stamp = conversions.to_time(t_ns)
        msg.header.frame_id = "test_cam"
        h.pub_img.publish(msg)
        time.sleep(0.002)

    bad = good[:200] + b"\x00" * 50  # the after frame (i = 18) of the first event: a JPEG cut short
    frames_and_event(h, "jpeg-bad", 10.0, frame=lambda i, t: jpeg(t, bad if i == 18 else good))
    frames_and_event(h, "jpeg-good", 20.0, frame=lambda i, t: jpeg(t, good))
    r = h.result("jpeg-bad")
    assert r["status"] == "bad_image" and "could not be decoded" in r["detail"]
    assert h.result("jpeg-good")["status"] == "ok"


def test_missing_model_is_reported_not_fatal(harness_factory, tmp_path):
    h = harness_factory({"model_dir": str(tmp_path / "no_such_model")})
    assert h.started  # configure succeeds; every event says why there is no answer
    frames_and_event(h, "m-1", 10.0)
    r = h.result("m-1")
    assert r["status"] == "model_error" and "does not exist" in r["detail"] and r["action"] is None
    frames_and_event(h, "m-2", 20.0)
    assert h.result("m-2")["status"] == "model_error"
    deadline = time.monotonic() + 5
    while not h.diagnostics and time.monotonic() < deadline:
        time.sleep(0.05)
    st = h.diagnostics[-1].status[0]
    assert st.level == st.ERROR and "no model" in st.message


def test_start_and_end_services_and_timeouts(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "max_event_duration": 1.0,
                         "pre_offset": 0.0, "post_settle": 0.1})
    client_start = h.io.create_client(Trigger, "/cde_perception/start")
    client_end = h.io.create_client(Trigger, "/cde_perception/end")
    assert client_start.wait_for_service(5.0) and client_end.wait_for_service(5.0)
    stop = threading.Event()
    base = 100 * S
    t0 = time.monotonic()

    def camera():  # frames stamped in real time, as a live camera would
        while not stop.is_set():
            h.frame(base + int((time.monotonic() - t0) * S))
            time.sleep(0.03)

    cam = threading.Thread(target=camera, daemon=True)
    cam.start()
    try:
        time.sleep(0.5)
        assert client_start.call(Trigger.Request(), timeout_sec=5.0).success
        time.sleep(0.4)
        assert client_end.call(Trigger.Request(), timeout_sec=5.0).success
        r = h.result("auto-000001")
        assert r["status"] == "ok" and r["expected_action"] is None and r["verified"] is None
        # a start that never ends times out after max_event_duration
        h.event("start", "forever", base + int((time.monotonic() - t0) * S))
        r = h.result("forever", timeout=10)
        assert r["status"] == "timeout"
    finally:
        stop.set()
        cam.join()


def test_event_storm_is_bounded_and_reported(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "max_open_events": 3})
    h.frame(1 * S)
    for k in range(6):
        h.event("start", f"s{k}", 2 * S + k)
    for k in range(3, 6):
        assert h.result(f"s{k}")["status"] == "dropped"
    assert h.node._pairer.open_events == 3


def test_lifecycle_deactivate_stops_and_activate_resumes(harness_factory, tiny_model):
    from rclpy.lifecycle import TransitionCallbackReturn

    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu"})
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert h.node._worker is None and not h.node._subs
    deadline = time.monotonic() + 10  # the graph forgets the old subscriptions before new ones match
    while h.pub_img.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h.pub_img.get_subscription_count() == 0, "deactivate left the camera subscription in place"
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h._wait_matched()
    frames_and_event(h, "after-reactivation", 10.0)
    assert h.result("after-reactivation")["status"] == "ok"


def test_none_logit_bias_parameter_replaces_the_models_operating_point(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "none_logit_bias": 2.5})
    frames_and_event(h, "biased", 20.0)
    r = h.result("biased")
    offline, plain = Predictor(tiny_model, device="cpu", none_logit_bias=2.5), Predictor(tiny_model, device="cpu")
    # the answer names the operating point it was given at: not the file's id
    assert r["status"] == "ok" and r["model"] == offline.model_id != plain.model_id
    before, after = (np.full((24, 32, 3), ((r[k]["sec"] * S + r[k]["nanosec"]) // 10**8) % 255, np.uint8)
                     for k in ("before_stamp", "after_stamp"))  # the frames Harness.frame published
    assert r["scores"] == pytest.approx(offline.classify(before, after).scores, abs=1e-3)
    assert r["scores"] != pytest.approx(plain.classify(before, after).scores, abs=1e-3)
    deadline = time.monotonic() + 5
    while not h.diagnostics and time.monotonic() < deadline:
        time.sleep(0.05)
    values = {kv.key: kv.value for kv in h.diagnostics[-1].status[0].values}
    assert values["none_logit_bias"] == "2.5" and values["model"] == offline.model_id
    assert values["register_max_shift"] == "0.0"  # the tiny model does not register


def test_invalid_parameters_are_reported_and_every_event_still_answered(harness_factory, tiny_model):
    """An out-of-range value, an unknown device, a string for a number: no traceback, the node
    configures, logs one line and answers every event with status bad_parameter; an integer
    given for a float parameter is simply taken."""
    h = harness_factory({"model_dir": str(tiny_model), "device": "tpu", "pre_offset": -1.0, "buffer_seconds": "ten",
                         "post_settle": 1})
    assert h.started
    errors = h.node._validate()
    assert any(e.startswith("pre_offset") for e in errors) and any("device='tpu'" in e for e in errors)
    assert any("buffer_seconds='ten' is not a float" in e for e in errors)
    assert not any(e.startswith("post_settle") for e in errors) and h.node._p("post_settle") == 1.0
    frames_and_event(h, "with-bad-params", 10.0)
    r = h.result("with-bad-params")
    assert r["status"] == "bad_parameter" and "device='tpu'" in r["detail"] and r["action"] is None
    refused = h.node.set_parameters([Parameter("confidence_threshold", value="high")])[0]
    assert not refused.successful and "confidence_threshold must be a number" in refused.reason
    assert h.node.set_parameters([Parameter("confidence_threshold", value=0.5)])[0].successful


@pytest.mark.parametrize("kind", EXECUTORS)
def test_spin_thread_runs_callbacks_and_stops_cleanly(kind):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = Node("cde_spin_probe", context=ctx)
        ticks = threading.Event()
        node.create_timer(0.01, ticks.set)
        spinner = SpinThread(create_executor(kind, context=ctx, num_threads=2))
        spinner.executor.add_node(node)
        spinner.start()
        assert ticks.wait(5.0), "the timer never fired while spinning"
        assert spinner.stop(timeout_s=5.0) and not spinner.running
        ticks.clear()
        time.sleep(0.1)
        assert not ticks.is_set(), "callbacks still ran after stop()"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_hostile_events_are_answered_once_and_never_lock_the_node(harness_factory, tiny_model):
    """Issue 20's inputs against the running node: a deeply nested event, starts stamped 10^6 s
    ahead, a duplicate start, a start dropped by the storm guard and its end, a depth frame."""
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "max_open_events": 4, "pre_offset": 0.1,
                         "post_settle": 0.3})
    h.frame(10 * S)
    h.raw_event("[" * 5000)
    assert h.result("unknown")["status"] == "bad_event" and "nested too deeply" in h.result("unknown")["detail"]
    for k in range(32):  # once locked the node out for good
        h.event("start", f"future{k}", 10 * S + 10**6 * S, "open")
    for k in range(32):
        r = h.result(f"future{k}")
        assert r["status"] == "bad_event" and "max_stamp_skew" in r["detail"]
    assert h.node._pairer.open_events == 0
    frames_and_event(h, "after-storm", 11.0)
    assert h.result("after-storm")["status"] == "ok"
    # a duplicate start while open, then the event ends normally: one answer
    for i in range(30):
        h.frame(int((20.0 + i * 0.1) * S))
        if i == 12:
            h.event("start", "twice", int(21.0 * S), "open")
            h.event("start", "twice", int(21.1 * S), "open")
        if i == 16:
            h.event("end", "twice", int(21.5 * S))
    assert h.result("twice")["status"] == "ok"
    # the storm guard answers a start it drops once; that event's end is not answered again
    for k in range(4):
        h.event("start", f"open{k}", int(24.0 * S))
    h.event("start", "one-too-many", int(24.0 * S))
    assert h.result("one-too-many")["status"] == "dropped"
    h.event("end", "one-too-many", int(24.5 * S))
    for k in range(4):
        h.event("end", f"open{k}", int(24.5 * S))
        h.result(f"open{k}")
    # a depth frame as the after frame
    depth = np.zeros(24 * 32, np.uint16).tobytes()
    frames_and_event(h, "depth", 30.0, frame=lambda i, t: h.frame(t, encoding="16UC1", step=64, data=depth)
                     if i == 18 else h.frame(t))
    r = h.result("depth")
    assert r["status"] == "bad_image" and "depth" in r["detail"]
    time.sleep(1.0)  # any second answer would have arrived by now
    counted = {k: v for k, v in h.listener.answers.items() if k != "unknown"}
    assert counted and all(v == 1 for v in counted.values()), {k: v for k, v in counted.items() if v != 1}
    assert len(h.node._befores) <= 4


def test_two_namespaced_nodes_each_answer_only_their_own_events(tiny_model):
    """Relative topic names: a namespace moves camera, events and results (not /diagnostics)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    params = [Parameter(k, value=v) for k, v in (("model_dir", str(tiny_model)), ("device", "cpu"),
                                                 ("image_qos_reliability", "reliable"), ("image_qos_depth", 1000))]
    nodes = {ns: PerceptionNode(context=ctx, namespace=ns, parameter_overrides=params) for ns in ("robot1", "robot2")}
    io = Node("cde_test_ns_io", context=ctx)
    pubs = {ns: (io.create_publisher(Image, f"/{ns}/camera/image_raw", RELIABLE),
                 io.create_publisher(String, f"/{ns}/cde/event", RELIABLE)) for ns in nodes}
    listeners = {ns: PlannerListener(io, topic=f"/{ns}/cde/action") for ns in nodes}
    executor = create_executor("multi_threaded", context=ctx, num_threads=4)  # the other executor the node offers
    for n in (*nodes.values(), io):
        executor.add_node(n)
    try:
        assert all(start(n) for n in nodes.values())
        spinner = SpinThread(executor).start()
        deadline = time.monotonic() + 10
        while not all(p.get_subscription_count() for pair in pubs.values() for p in pair) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nodes["robot1"].resolve_topic_name("cde/action") == "/robot1/cde/action"
        for ns, eid in (("robot1", "only-1"), ("robot2", "only-2")):
            img, ev = pubs[ns]
            for i in range(30):
                t = int((10.0 + i * 0.1) * S)
                img.publish(conversions.rgb_to_image_msg(np.full((24, 32, 3), i * 7 % 255, np.uint8), t, "cam"))
                if i == 12:
                    ev.publish(String(data=EventPhase("start", eid, int(11.0 * S), "open").to_json()))
                if i == 16:
                    ev.publish(String(data=EventPhase("end", eid, int(11.5 * S)).to_json()))
                time.sleep(0.005)
        assert listeners["robot1"].wait_for(["only-1"], 20) and listeners["robot2"].wait_for(["only-2"], 20)
        time.sleep(0.5)
        assert set(listeners["robot1"].results) == {"only-1"} and set(listeners["robot2"].results) == {"only-2"}
        assert spinner.stop()
    finally:
        for n in nodes.values():
            n.trigger_shutdown()
            n.destroy_node()
        io.destroy_node()
        rclpy.shutdown(context=ctx)


def test_the_node_process_exits_cleanly_on_a_repeated_sigint(tiny_model):
    """As under `ros2 launch` + Ctrl-C: SIGINT twice in quick succession; the process ends with 0."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "cde_ros.ros.perception_node", "--ros-args", "-p",
                             f"model_dir:={tiny_model}", "-p", "device:=cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "warm-up done" in line or "autostart failed" in line:
                break
        assert any("warm-up done" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + out
    assert "shutting down" in out and "Traceback" not in out


@pytest.mark.parametrize("kind", EXECUTORS)
def test_the_node_process_serves_lifecycle_transitions_and_events(tiny_model, kind):
    """As `ros2 lifecycle set` and a planner do: the node's own process (main(), with each executor)
    started with autostart false is configured and activated through its lifecycle services, then
    answers an event through rclpy, and exits with 0 on SIGINT."""
    import os
    import signal
    import subprocess
    import sys

    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    ns = f"lc_{kind}"
    proc = subprocess.Popen([sys.executable, "-m", "cde_ros.ros.perception_node", "--ros-args", "-r", f"__ns:=/{ns}",
                             "-p", f"model_dir:={tiny_model}", "-p", "device:=cpu", "-p", "autostart:=false",
                             "-p", f"executor:={kind}", "-p", "image_qos_reliability:=reliable",
                             "-p", "image_qos_depth:=1000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    io = Node("cde_test_lifecycle", context=ctx)
    executor = create_executor("multi_threaded", context=ctx, num_threads=2)
    executor.add_node(io)
    spinner = SpinThread(executor).start()
    try:
        change = io.create_client(ChangeState, f"/{ns}/cde_perception/change_state")
        state = io.create_client(GetState, f"/{ns}/cde_perception/get_state")
        assert change.wait_for_service(timeout_sec=30.0) and state.wait_for_service(timeout_sec=5.0)
        assert state.call(GetState.Request(), timeout_sec=5.0).current_state.label == "unconfigured"
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert change.call(ChangeState.Request(transition=Transition(id=t)), timeout_sec=30.0).success
        assert state.call(GetState.Request(), timeout_sec=5.0).current_state.label == "active"
        img = io.create_publisher(Image, f"/{ns}/camera/image_raw", RELIABLE)
        ev = io.create_publisher(String, f"/{ns}/cde/event", RELIABLE)
        listener = PlannerListener(io, topic=f"/{ns}/cde/action")
        deadline = time.monotonic() + 10
        while not (img.get_subscription_count() and ev.get_subscription_count()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(30):
            t = int((10.0 + i * 0.1) * S)
            img.publish(conversions.rgb_to_image_msg(np.full((24, 32, 3), i * 7 % 255, np.uint8), t, "cam"))
            if i == 12:
                ev.publish(String(data=EventPhase("start", "lc", int(11.0 * S), "open").to_json()))
            if i == 16:
                ev.publish(String(data=EventPhase("end", "lc", int(11.5 * S)).to_json()))
            time.sleep(0.01)
        assert listener.wait_for(["lc"], 30), "the node's process never answered"
        assert listener.answers["lc"] == 1 and listener.results["lc"]["status"] == "ok"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        spinner.stop()
        io.destroy_node()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, out
    assert f"executor: {kind}" in out and "Traceback" not in out


def test_the_node_process_refuses_an_unknown_executor_in_one_sentence(tiny_model):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cde_ros.ros.perception_node", "--ros-args", "-p",
                           f"model_dir:={tiny_model}", "-p", "executor:=fastest"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "executor must be one of events, multi_threaded, not 'fastest'" in out and "Traceback" not in out


def test_planner_verdicts_follow_the_contract():
    from cde_ros.ros.planner import verdict

    assert verdict({"status": "ok", "action": "open", "verified": True}) == "done"
    assert verdict({"status": "ok", "action": "none", "verified": False}) == "retry"
    assert verdict({"status": "ok", "action": "close", "verified": False}) == "replan"
    assert verdict({"status": "no_after_frame", "action": None, "verified": None}) == "check"
    assert verdict({"status": "ok", "action": "none", "verified": None}) == "retry"  # nothing was commanded
    # something changed that the model does not know: neither a success nor a plain failure
    assert verdict({"status": "ok", "action": "unknown_change", "verified": False}) == "check"
    assert verdict({"status": "ok", "action": "unknown_change", "verified": None}) == "check"


def test_player_publishes_a_recording_into_the_node(tmp_path, tiny_model):
    """`cde-ros play`, in another process, feeds a recorded bag into the node: one answer per event."""
    import subprocess
    import sys

    bag = tmp_path / "bag"
    subprocess.run([sys.executable, "-m", "cde_ros.cli", "record-synthetic", str(bag), "--events", "3", "--quiet"],
                   check=True, capture_output=True)
    h = Harness({"model_dir": str(tiny_model), "device": "cpu"})
    try:
        proc = subprocess.run([sys.executable, "-m", "cde_ros.cli", "play", str(bag), "--rate", "4", "--wait-for",
                               "/camera/image_raw", "/cde/event"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "played" in proc.stdout, proc.stderr
        assert h.listener.wait_for(["ev-0000", "ev-0001", "ev-0002"], 30)
        assert all(h.listener.answers[e] == 1 for e in ("ev-0000", "ev-0001", "ev-0002"))
    finally:
        h.close()


def test_the_reference_planner_retries_what_the_node_calls_a_failure(tiny_model):
    """VerifyingPlanner against the node with a live camera (frames stamped by the clock): each
    command gets its verdict; a `none` answer is retried, up to max_retries."""
    from cde_ros.ros.planner import VerifyingPlanner, verdict

    h = Harness({"model_dir": str(tiny_model), "device": "cpu", "post_settle": 0.2})
    stop = threading.Event()

    def camera():
        while not stop.is_set():
            h.frame(h.io.get_clock().now().nanoseconds, np.full((24, 32, 3), 90, np.uint8))
            time.sleep(0.05)

    cam = threading.Thread(target=camera, daemon=True)
    cam.start()
    try:
        time.sleep(0.5)
        planner = VerifyingPlanner(h.io, event_topic="/cde/event", action_topic="/cde/action", max_retries=1)
        attempts = planner.run("open", lambda: time.sleep(0.4), timeout_s=20)
        assert attempts and all(a.result is not None and a.result["status"] == "ok" for a in attempts)
        assert [a.decision for a in attempts] == [verdict(a.result) for a in attempts]
        assert len(attempts) == (2 if attempts[0].decision == "retry" else 1)
        assert len({a.event_id for a in attempts}) == len(attempts)
    finally:
        stop.set()
        cam.join()
        h.close()


def test_a_burst_of_events_is_answered_in_full(harness_factory, tiny_model):
    """200 start/end pairs published back to back (a queue of 100 once saw 100 of them)."""
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "max_open_events": 400, "max_queue": 1000})
    for i in range(20):
        h.frame(int((10.0 + i * 0.1) * S))
    for k in range(200):
        h.pub_ev.publish(String(data=EventPhase("start", f"b{k}", int(10.5 * S), "open").to_json()))
        h.pub_ev.publish(String(data=EventPhase("end", f"b{k}", int(10.6 * S)).to_json()))
    for i in range(20, 40):
        h.frame(int((10.0 + i * 0.1) * S))
    assert h.listener.wait_for([f"b{k}" for k in range(200)], 60), f"{len(h.listener.results)} of 200 answered"
    assert all(h.listener.answers[f"b{k}"] == 1 for k in range(200))
    assert h.node.counters["events_lost"] == 0


def test_diagnostics_count_frames_that_never_arrived_and_events_without_a_pair(harness_factory, tiny_model):
    """A 10 Hz camera of which only every third frame arrives, then an event whose after frame
    never comes: /diagnostics reports the missing frames and the unpaired event, at ERROR while
    two thirds of the frames are missing, not OK."""
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "expected_frame_rate": 10.0,
                         "diagnostics_period": 0.5, "after_wait": 0.2})
    for i in range(0, 90, 3):  # stamps 0.3 s apart: two of every three frames lost
        h.frame(int((5.0 + i * 0.1) * S))
    def missing_counts():
        return [int(kv.value) for d in list(h.diagnostics) for kv in d.status[0].values if kv.key == "frames_missing"]

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and 58 not in missing_counts():  # diagnostics may come mid-stream
        time.sleep(0.05)
    time.sleep(0.6)  # a period more: nothing may be counted beyond
    assert max(missing_counts()) == 58  # 29 gaps of 3 periods: 2 each
    lossy = [d.status[0] for d in h.diagnostics if "did not arrive" in d.status[0].message]
    assert lossy and lossy[0].level == lossy[0].ERROR and "received" in lossy[0].message
    h.event("start", "no-after", int(14.5 * S), "open")
    h.event("end", "no-after", int(14.9 * S), "open")
    h.frame(int(14.9 * S))
    h.frame(int(30.0 * S))  # the data clock passes end + post_settle + after_wait: no after frame in time
    r = h.result("no-after")
    assert r["status"] != "ok"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("without a classification" in d.status[0].message
                                                    for d in h.diagnostics):
        time.sleep(0.05)
    unpaired = [d.status[0] for d in h.diagnostics if "without a classification" in d.status[0].message]
    assert unpaired and unpaired[0].level >= unpaired[0].WARN and r["status"] in unpaired[0].message


def test_the_header_is_read_from_serialized_bytes_as_rclpy_writes_them():
    from rclpy.serialization import serialize_message

    for frame_id in ("", "c", "camera_color_optical_frame", "ü" * 7):
        msg = conversions.rgb_to_image_msg(np.zeros((4, 6, 3), np.uint8), 1_234 * S + 567_890_123, frame_id)
        data = serialize_message(msg)
        assert conversions.header_of_cdr(data) == (1_234 * S + 567_890_123, frame_id)
        frame = conversions.frame_from_serialized(data, Image)
        assert (conversions.decode(frame.payload) == 0).all() and frame.nbytes == len(data)
    for junk in (b"", b"\x00\x01\x00\x00" + b"\xff" * 12, b"\x01" * 40):
        with pytest.raises(ValueError):
            conversions.header_of_cdr(junk)
    damaged = conversions.SerializedImage(serialize_message(msg)[:20], Image)
    with pytest.raises(images.ImageError, match="could not be deserialized"):
        conversions.decode(damaged)


@pytest.mark.parametrize("raw", [True, False])
def test_both_ingest_paths_pair_the_same_frames(harness_factory, tiny_model, raw):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "raw_ingest": raw})
    frames_and_event(h, f"ingest-{raw}", 10.0)
    r = h.result(f"ingest-{raw}")
    assert r["status"] == "ok" and r["before_stamp"] == {"sec": 10, "nanosec": 900_000_000}
    assert r["after_stamp"] == {"sec": 11, "nanosec": 800_000_000} and r["frame_id"] == "test_cam"
    t = r["timings_ms"]  # where the latency went
    assert {"queue", "decode", "encode_after", "head"} <= set(t) and all(v >= 0 for v in t.values())
    assert t["decode"] + t["encode_after"] + t["head"] <= r["latency_ms"] + 1.0


def test_results_say_where_the_change_happened_and_the_heat_map_is_published(harness_factory, tiny_model):
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu", "publish_change": True})
    maps: list[Image] = []
    h.io.create_subscription(Image, "/cde/change", maps.append, 10)
    time.sleep(0.5)
    rgb = lambda t: np.where(np.arange(32)[None, :, None] < 8 + 16 * (t > 11 * S), 200, 20).repeat(  # noqa: E731
        24, 0).repeat(3, 2)
    frames_and_event(h, "where", 10.0, frame=lambda i, t: h.frame(t, rgb(t).astype(np.uint8)))
    r = h.result("where")
    region = r["change"]
    assert region["grid"] == [4, 4] and len(region["patches"]) == 4
    assert sum(p["share"] for p in region["patches"]) == pytest.approx(1.0, abs=1e-3)
    for p in region["patches"]:
        x, y, w, hh = p["box"]
        assert 0 <= x and 0 <= y and x + w <= 32 and y + hh <= 24 and w == 8 and hh == 6
    bx, by, bw, bh = region["bbox"]
    assert all(bx <= p["box"][0] and p["box"][0] + p["box"][2] <= bx + bw for p in region["patches"])
    deadline = time.monotonic() + 5
    while not maps and time.monotonic() < deadline:
        time.sleep(0.05)
    (m,) = maps
    assert m.encoding == "32FC1" and (m.width, m.height) == (8, 6)  # a quarter of 32 x 24
    assert (m.header.stamp.sec, m.header.stamp.nanosec) == (r["after_stamp"]["sec"], r["after_stamp"]["nanosec"])
    heat = np.frombuffer(bytes(m.data), "<f4").reshape(6, 8)
    assert heat.sum() > 0 and heat.max() <= 1.0 + 1e-6


def test_a_decoy_roi_is_a_box_of_the_same_size_beside_the_target():
    from cde_ros.model.where import box_iou, decoy_box

    assert decoy_box([10, 20, 30, 40], 200, 100) == [40, 20, 30, 40]  # to its right
    assert decoy_box([150, 20, 40, 40], 200, 100) == [110, 20, 40, 40]  # no room right: left
    assert decoy_box([40, 10, 150, 40], 200, 100) == [40, 50, 150, 40]  # too wide for either side: below
    assert decoy_box([30, 10, 120, 60], 200, 100) is None  # wider and taller than half the frame
    for box in ([0, 0, 50, 50], [120, 60, 70, 30]):
        d = decoy_box(box, 200, 100)
        assert d[2:] == box[2:] and box_iou(d, box) == 0.0 and d[0] + d[2] <= 200 and d[1] + d[3] <= 100


def test_a_recorded_twin_is_the_decoy_roi_only_where_it_is_a_fair_one():
    from cde_ros.model.where import twin_decoy

    target = [100, 50, 80, 60]  # area 4800
    assert twin_decoy(target, [200, 40, 70, 70]) == [200, 40, 70, 70]  # beside it, in view
    assert twin_decoy(target, None) is None  # out of view
    assert twin_decoy(target, [0, 50, 20, 59]) is None  # at the frame's edge: under a quarter of the target
    assert twin_decoy(target, [0, 50, 20, 60]) == [0, 50, 20, 60]  # a quarter exactly
    assert twin_decoy(target, [150, 50, 80, 60]) is None  # overlaps the target by more than a quarter of itself
    assert twin_decoy(target, [160, 50, 80, 60]) == [160, 50, 80, 60]  # by a quarter exactly


def test_change_region_maps_grid_patches_to_camera_pixels():
    from cde_ros.model.where import box_iou, change_region, share_inside

    region = change_region(np.array([0, 5, 15]), np.array([[3.0, 4.0], [0.0, 5.0], [0.0, 0.0]]), 16, 640, 480)
    assert region["grid"] == [4, 4]
    assert [p["box"] for p in region["patches"]] == [[0, 0, 160, 120], [160, 120, 160, 120], [480, 360, 160, 120]]
    assert [p["share"] for p in region["patches"]] == [0.5, 0.5, 0.0]
    assert region["bbox"] == [0, 0, 640, 480]
    assert share_inside(region, [0, 0, 320, 240]) == 1.0 and box_iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(1 / 3)
    assert change_region(None, None, 16, 640, 480) is None
    with pytest.raises(ValueError, match="not square"):
        change_region(np.array([0]), np.ones((1, 2)), 12, 640, 480)


def _left_quarter_episode(h: Harness, eid: str, t0: float, action: str | None, roi) -> dict:
    """Frames every 100 ms from t0 whose left quarter brightens 1.2 s in, an event from t0+1 s to
    t0+1.5 s commanding `action` with `roi` on its start; returns the node's result."""
    for i in range(30):
        t = t0 + i * 0.1
        rgb = np.full((24, 32, 3), 20, np.uint8)
        if t - t0 > 1.2:
            rgb[:, :8] = 230  # the change: the left quarter brightens
        h.frame(int(t * S), rgb)
        if i == 12:
            h.pub_ev.publish(String(data=EventPhase("start", eid, int((t0 + 1.0) * S), action, roi).to_json()))
            time.sleep(0.01)
        if i == 16:
            h.event("end", eid, int((t0 + 1.5) * S))
    return h.result(eid)


def test_an_event_roi_verifies_only_a_change_inside_it(harness_factory, tiny_model):
    """The same manipulation three times: without a roi (to learn what the model says), with the
    roi where the frames changed (verified as without), and with it elsewhere (verified false,
    "change outside target region")."""
    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu"})

    def episode(eid, t0, action, roi):
        return _left_quarter_episode(h, eid, t0, action, roi)

    said = episode("plain", 10.0, None, None)["action"]
    patches = episode("plain2", 20.0, said, None)["change"]["patches"]
    assert sum(p["share"] for p in patches if p["box"][0] < 8) >= 0.5  # the model puts the change left
    inside = episode("roi-in", 30.0, said, (0, 0, 8, 24))
    assert inside["verified"] is True and inside["roi"] == [0, 0, 8, 24] and inside["change_in_roi"] >= 0.5
    outside = episode("roi-out", 40.0, said, (16, 0, 16, 24))
    assert outside["action"] == said and outside["verified"] is False
    assert outside["detail"] == "change outside target region" and outside["change_in_roi"] < 0.5


def test_a_change_inside_the_roi_the_classifier_reads_as_none_is_an_unknown_change(harness_factory, roi_gate_model):
    """A model whose classifier reads these pairs as none and whose prototypes have a roi change
    threshold: through the node, an event whose roi holds the change is answered unknown_change
    (not verified), one whose roi lies elsewhere and one without a roi stay none."""
    h = harness_factory({"model_dir": str(roi_gate_model), "device": "cpu"})

    def episode(eid, t0, roi):
        return _left_quarter_episode(h, eid, t0, "open", roi)

    inside = episode("in", 10.0, (0, 0, 8, 24))
    assert inside["action"] == "unknown_change" and inside["verified"] is False
    elsewhere = episode("out", 20.0, (16, 0, 16, 24))
    assert elsewhere["action"] == "none" and elsewhere["verified"] is False
    assert episode("no-roi", 30.0, None)["action"] == "none"


def test_hostile_serialized_frames_cost_their_event_not_the_node(harness_factory, tiny_model):
    """Raw ingest: bytes that are not a message are ignored; a message cut short keeps its header,
    so an event that picks it is answered bad_image; the next event is served."""
    from rclpy.serialization import serialize_message

    h = harness_factory({"model_dir": str(tiny_model), "device": "cpu"})

    def frame(i: int, t: int) -> None:
        if i == 9:  # the before frame of the event: its header intact, its pixels cut off
            data = serialize_message(conversions.rgb_to_image_msg(np.zeros((24, 32, 3), np.uint8), t, "test_cam"))
            h.pub_img.publish(data[:40])
            time.sleep(0.002)
        else:
            h.frame(t)
        if i in (3, 20):
            h.pub_img.publish(b"\xff" * 64)  # not CDR at all
            h.pub_img.publish(b"\x00\x01\x00\x00" + b"\x00" * 8 + b"\xff\xff\xff\x7f")  # a 2 GB frame_id length

    frames_and_event(h, "cut", 10.0, frame=frame)
    r = h.result("cut")
    assert r["status"] == "bad_image" and "could not be deserialized" in r["detail"]
    assert r["before_stamp"] == {"sec": 10, "nanosec": 900_000_000}
    frames_and_event(h, "after-cut", 20.0)
    assert h.result("after-cut")["status"] == "ok"


def _every_change_unknown(tiny_model, backbone: bool = False):
    """The tiny model whose classifier never reads `none` (every pair is a change) with
    prototypes at a threshold no real similarity reaches (every change is far from what the model
    knows); `backbone`: with backbone prototypes of its labels too, so actions can be enrolled."""
    import torch

    from cde_ros.model.network import CausalDeltaModel
    from cde_ros.model.prototypes import Prototypes

    model, meta = CausalDeltaModel.load(tiny_model)
    with torch.no_grad():
        model.classifier.bias[model.labels.index("none")] = -100.0
    actions = [a for a in model.labels if a != "none"]
    rng = np.random.default_rng(0)
    extra = dict(backbone_labels=list(model.labels),
                 backbone_vectors=rng.normal(size=(len(model.labels), model.backbone.dim))) if backbone else {}
    model.prototypes = Prototypes(actions, rng.normal(size=(len(actions), model.config.embed_dim)),
                                  {a: 1 for a in actions}, threshold=1.0, **extra)
    return model, meta, actions


def test_a_change_far_from_every_known_action_is_answered_unknown_change(harness_factory, tiny_model, tmp_path):
    model, meta, actions = _every_change_unknown(tiny_model)
    model_id = model.save(tmp_path / "m", meta)
    h = harness_factory({"model_dir": str(tmp_path / "m"), "device": "cpu"})
    frames_and_event(h, "novel", 10.0, "open")
    r = h.result("novel")
    assert r["status"] == "ok" and r["action"] == "unknown_change" and r["verified"] is False
    assert r["model"] == model_id and set(r["similarity"]) == set(actions)
    assert all(-1 <= v <= 1 for v in r["similarity"].values()) and 0 <= r["confidence"] <= 1


def test_an_action_enrolled_into_the_models_directory_names_the_change_after_a_reconfigure(harness_factory,
                                                                                          tiny_model, tmp_path):
    """`cde-ros enroll` rewrites the model directory; the node loads it again on cleanup and
    configure and answers the enrolled action (verified when it was commanded) under the new id."""
    import torch
    from rclpy.lifecycle import TransitionCallbackReturn

    from cde_ros.model.prototypes import enroll

    model, meta, _ = _every_change_unknown(tiny_model, backbone=True)
    first_id = model.save(tmp_path / "m", meta)
    h = harness_factory({"model_dir": str(tmp_path / "m"), "device": "cpu"})
    frames_and_event(h, "novel", 10.0, "open")
    r = h.result("novel")
    assert r["action"] == "unknown_change" and r["model"] == first_id
    # enroll `wipe` from this very pair (the frames Harness.frame published)
    before, after = (np.full((24, 32, 3), ((r[k]["sec"] * S + r[k]["nanosec"]) // 10**8) % 255, np.uint8)
                     for k in ("before_stamp", "after_stamp"))
    with torch.no_grad():
        out = model(*model.preprocessing.prepare_pairs([before], [after]))
    enroll(model, out.backbone_delta.numpy(), "wipe", source="the node test's pair")
    enrolled_id = model.save(tmp_path / "m", meta)
    assert enrolled_id != first_id
    for step in ("deactivate", "cleanup", "configure", "activate"):
        assert getattr(h.node, f"trigger_{step}")() == TransitionCallbackReturn.SUCCESS, step
    h._wait_matched()
    frames_and_event(h, "wiped", 10.0, "wipe")  # the same frames again
    r = h.result("wiped")
    assert r["status"] == "ok" and r["action"] == "wipe" and r["verified"] is True and r["model"] == enrolled_id
    assert r["similarity"]["wipe"] == pytest.approx(1.0, abs=1e-3)  # in the backbone's delta space
