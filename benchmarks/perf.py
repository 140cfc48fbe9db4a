"""Performance benchmarks of cde_ros on the machine it runs on (not tests: nothing here asserts).

    ./dev python benchmarks/perf.py                 # everything, writes benchmarks/results/perf.{md,json}
    ./dev python benchmarks/perf.py --only latency  # one section (latency, ingest, pairing, training, soak)

Sections:
- latency:  end event received -> /cde/action published, through rclpy (node + publisher +
            listener in one process), for the shipped model and a ViT-S/16 at 224 px, with the
            before embedding computed at event start vs both frames encoded at the end.
- ingest:   CPU time per frame in the node's image callback at 30 Hz for 640x480 and 1920x1080
            rgb8, and the buffer's memory, vs decoding (and resizing) every frame on arrival.
- camera:   frames received / sent with the camera publishing from another process at
            640x480, 1280x720, 1920x1080 30 Hz and 1280x720 60 Hz, raw vs deserialized ingest,
            reliable vs best-effort, and the node process's CPU.
- pairing:  events/s and frames/s of `pair_bag` vs the raw rosbags read (+deserialise) rate.
- training: pairs/s of the default model on this machine's CPU.
- soak:     the node's RSS over a 10-minute 30 Hz stream (stamps 30 Hz apart, published faster
            than real time; the buffer is bounded by stamps, so memory behaves as in real time).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
S = 10**9


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NodeRig:
    """The perception node plus a publisher/listener node on one executor."""

    def __init__(self, params: dict):
        import rclpy
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from cde_ros.ros.perception_node import PerceptionNode, start
        from cde_ros.ros.spin_thread import SpinThread, create_executor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        base = {"image_qos_reliability": "reliable", "image_qos_depth": 100, "device": "cpu",
                "diagnostics_period": 1.0, **params}
        self.node = PerceptionNode(context=self.ctx, parameter_overrides=[Parameter(k, value=v) for k, v in base.items()])
        self.io = rclpy.create_node("cde_bench_io", context=self.ctx)
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_img = self.io.create_publisher(Image, "/camera/image_raw", rel)
        self.pub_ev = self.io.create_publisher(String, "/cde/event", rel)
        self.results: dict[str, tuple[float, dict]] = {}
        self.cv = threading.Condition()

        def on_action(msg):
            with self.cv:
                d = json.loads(msg.data)
                self.results[d["event_id"]] = (time.perf_counter(), d)
                self.cv.notify_all()

        self.io.create_subscription(String, "/cde/action", on_action, rel)
        if not start(self.node):
            raise RuntimeError("perception node did not start")
        self.ex = create_executor(self.node.get_parameter("executor").value, context=self.ctx)  # as the node's main
        self.ex.add_node(self.node)
        self.ex.add_node(self.io)
        self.spinner = SpinThread(self.ex).start()
        while not (self.pub_img.get_subscription_count() and self.pub_ev.get_subscription_count()):
            time.sleep(0.05)

    def wait(self, eid: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while eid not in self.results:
                if not self.cv.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(eid)
            return self.results[eid]

    def close(self):
        import rclpy

        if not self.spinner.stop():
            raise RuntimeError("the executor thread did not stop within 10 s")
        self.node.trigger_shutdown()
        self.node.destroy_node()
        self.io.destroy_node()
        rclpy.shutdown(context=self.ctx)


def make_vit_s16(out: Path) -> Path:
    """A ViT-S/16 at 224 px (random weights: latency does not depend on them)."""
    from cde_ros.core.actions import ACTIONS
    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.model.network import CausalDeltaModel, ModelConfig

    m = CausalDeltaModel(ModelConfig(backbone="vit_small_patch16_224", backbone_kwargs={}, labels=list(ACTIONS)),
                         Preprocessing(224))
    m.save(out)
    return out


def bench_latency(models: dict[str, Path], events: int) -> list[dict]:
    from std_msgs.msg import String

    from cde_ros.data.events import EventPhase
    from cde_ros.ros.conversions import rgb_to_image_msg
    from cde_ros.ros.spin_thread import EXECUTORS

    rows = []
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    for name, model_dir in models.items():
        for precompute, executor in itertools.product((True, False), EXECUTORS):
            rig = NodeRig({"model_dir": str(model_dir), "pre_offset": 0.0, "post_settle": 0.0,
                           "precompute_before": precompute, "executor": executor})
            lat, parts = [], []
            try:
                t = 10 * S
                for k in range(events + 2):  # the first two are discarded (allocator warm-up)
                    eid = f"e{k}"
                    rig.pub_img.publish(rgb_to_image_msg(frames[k % 4], t, "cam"))
                    rig.pub_ev.publish(String(data=EventPhase("start", eid, t).to_json()))
                    rig.pub_img.publish(rgb_to_image_msg(frames[(k + 1) % 4], t + S // 10, "cam"))
                    time.sleep(0.4)  # the before encoding happens during the manipulation
                    rig.pub_img.publish(rgb_to_image_msg(frames[(k + 2) % 4], t + 2 * S, "cam"))
                    time.sleep(0.05)
                    t0 = time.perf_counter()
                    rig.pub_ev.publish(String(data=EventPhase("end", eid, t + 2 * S).to_json()))
                    t1, res = rig.wait(eid)
                    assert res["status"] == "ok", res
                    if k >= 2:
                        lat.append((t1 - t0) * 1e3)
                        parts.append(res["timings_ms"])
                    t += 3 * S
            finally:
                rig.close()
            # the after frame is already there when the end arrives (post_settle 0): (after-frame
            # stamp - end) is 0 and the whole latency is the node's; the floor is one encode of
            # the after frame plus the head
            share = {k: statistics.median(p.get(k, 0.0) for p in parts)
                     for k in ("queue", "decode", "encode_before", "encode_after", "head")}
            floor = share["encode_after"] + share["head"]
            share["event + result transport and callbacks"] = statistics.median(lat) - sum(share.values())
            rows.append({"model": name, "precompute_before": precompute, "executor": executor, "events": len(lat),
                         "median_ms": statistics.median(lat), "p95_ms": float(np.percentile(lat, 95)),
                         "floor_ms": floor, "over_floor": statistics.median(lat) / floor,
                         "median_share_ms": {k: round(v, 2) for k, v in share.items()}})
            print(f"latency {name} precompute={precompute} {executor}: median {rows[-1]['median_ms']:.1f} ms, "
                  f"p95 {rows[-1]['p95_ms']:.1f} ms, {rows[-1]['over_floor']:.2f}x the encode+head floor", flush=True)
    return rows


def bench_ingest(seconds: float) -> list[dict]:
    from cde_ros.core.paths import shipped_model_dir
    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.ros import conversions

    rows = []
    pre = Preprocessing(64)
    for (w, h) in ((640, 480), (1920, 1080)):
        rng = np.random.default_rng(1)
        imgs = [conversions.rgb_to_image_msg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), 0, "cam")
                for _ in range(4)]
        rig = NodeRig({"model_dir": str(shipped_model_dir()), "buffer_seconds": 10.0, "buffer_max_frames": 1000,
                       "buffer_max_mb": 4096.0})
        n = int(seconds * 30)
        try:
            t0 = time.perf_counter()
            for i in range(n):
                msg = imgs[i % 4]
                msg.header.stamp = conversions.to_time(10 * S + i * S // 30)
                rig.pub_img.publish(msg)
                delay = t0 + (i + 1) / 30 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            time.sleep(0.5)
            received = rig.node.counters["frames"]
            cpu_us = rig.node.ingest_cpu_ns / 1e3 / max(1, received)
            buf_mb = rig.node._buffer.nbytes / 2**20
            buf_frames = len(rig.node._buffer)
        finally:
            rig.close()
        # the alternative: decode (and resize to the model input) every frame as it arrives
        dec = []
        for i in range(60):
            c0 = time.thread_time_ns()
            pre.resize(conversions.decode(imgs[i % 4]))
            dec.append((time.thread_time_ns() - c0) / 1e3)
        decode_us = statistics.mean(dec[5:])
        rows.append({"size": f"{w}x{h}", "frames_sent": n, "frames_received": received,
                     "ingest_cpu_us_per_frame": round(cpu_us, 1), "decode_on_arrival_cpu_us_per_frame": round(decode_us, 1),
                     "ratio_decode_over_ingest": round(decode_us / cpu_us, 1), "buffer_frames": buf_frames,
                     "buffer_mb": round(buf_mb, 1)})
        print(f"ingest {w}x{h}: {cpu_us:.0f} us/frame in the callback vs {decode_us:.0f} us to decode on arrival; "
              f"buffer {buf_frames} frames, {buf_mb:.0f} MB", flush=True)
    return rows


CAMERA_CASES = ((640, 480, 30), (1280, 720, 30), (1920, 1080, 30), (1280, 720, 60))
# (raw_ingest, executor): the node's default, the default before, the old path
CAMERA_PATHS = ((True, "events"), (True, "multi_threaded"), (False, "multi_threaded"))


def publish_camera(w: int, h: int, hz: float, seconds: float, reliability: str) -> int:
    """The camera of `bench_camera`, in its own process: rgb8 frames at `hz` for `seconds` on
    /camera/image_raw (stamps on the camera's clock); prints how many it sent."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from cde_ros.ros import conversions

    rclpy.init()
    node = rclpy.create_node("cde_bench_camera")
    qos = (QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliability == "reliable"
           else qos_profile_sensor_data)
    pub = node.create_publisher(__import__("sensor_msgs.msg", fromlist=["Image"]).Image, "/camera/image_raw", qos)
    deadline = time.monotonic() + 20
    while not pub.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    msgs = [conversions.rgb_to_image_msg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), 0, "cam") for _ in range(3)]
    n = int(seconds * hz)
    t0 = time.perf_counter()
    for i in range(n):
        msg = msgs[i % 3]
        msg.header.stamp = conversions.to_time(10 * S + int(i * S / hz))
        pub.publish(msg)
        delay = t0 + (i + 1) / hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    time.sleep(0.5)
    print(json.dumps({"sent": n, "seconds": round(time.perf_counter() - t0, 2)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def camera_case(w: int, h: int, hz: float, seconds: float, reliability: str, raw: bool, executor: str) -> dict:
    """One row of `bench_camera`, run in a process of its own (the node alone in it, as on a robot:
    run one after another in one process, the later cases measured up to 3x the node CPU)."""
    import subprocess

    from cde_ros.core.paths import shipped_model_dir

    rig = NodeRig({"model_dir": str(shipped_model_dir()), "raw_ingest": raw, "executor": executor,
                   "image_qos_reliability": reliability, "image_qos_depth": 5,
                   "buffer_seconds": 5.0, "buffer_max_frames": 1000, "buffer_max_mb": 4096.0,
                   "expected_frame_rate": float(hz)})
    try:
        proc = subprocess.Popen([sys.executable, __file__, "--publish", str(w), str(h), str(hz),
                                 str(seconds), reliability], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        while not rig.node.counters["frames"] and proc.poll() is None:
            time.sleep(0.01)
        c0, t0 = _cpu_seconds(), time.perf_counter()
        out, _ = proc.communicate(timeout=seconds + 120)
        c1, t1 = _cpu_seconds(), time.perf_counter()
        time.sleep(0.5)
        sent = json.loads(out.strip().splitlines()[-1])["sent"]
        received = rig.node.counters["frames"]
        missing = rig.node._gaps.missing
    finally:
        rig.close()
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    return {"transport": Path(profile).name if profile else "Fast DDS defaults",
            "size": f"{w}x{h}", "hz": hz, "reliability": reliability,
            "ingest": "raw (serialized)" if raw else "deserialized by rclpy", "executor": executor,
            "sent": sent, "received": received, "received_share": round(received / max(1, sent), 4),
            "frames_missing_by_stamps": missing,
            "node_cpu_percent": round(100 * (c1 - c0) / max(1e-9, t1 - t0), 1)}


def bench_camera(seconds: float) -> list[dict]:
    """Frames received / sent with the camera in another process (as on a robot), for the raw
    (serialized) ingest and rclpy's deserialization of every frame, each executor, reliable and
    best-effort; the CPU share of the node's process while the camera runs. Every case is a node
    process of its own (`camera_case`)."""
    import subprocess

    rows = []
    for w, h, hz in CAMERA_CASES:
        for reliability in ("reliable", "best_effort"):
            for raw, executor in CAMERA_PATHS:
                proc = subprocess.run([sys.executable, __file__, "--camera-case", str(w), str(h), str(hz),
                                       str(seconds), reliability, "raw" if raw else "deserialized", executor],
                                      capture_output=True, text=True, timeout=seconds + 300,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                if proc.returncode != 0:
                    raise RuntimeError(f"camera case {w}x{h}@{hz} {reliability} failed:\n{proc.stderr[-2000:]}")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"camera {w}x{h}@{hz} {reliability} {'raw' if raw else 'deserialized'} {executor}: "
                      f"{rows[-1]['received']}/{rows[-1]['sent']} frames, node CPU {rows[-1]['node_cpu_percent']} %",
                      flush=True)
    return rows


def bench_pairing(events: int, tmp: Path) -> dict:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.data.bags import pair_bag
    from cde_ros.data.pairing import PairingConfig
    from cde_ros.synthetic.record import RecordConfig, record_synthetic

    bag = tmp / "pairing_bag"
    record_synthetic(bag, RecordConfig(storage="mcap", events=events, size=(640, 480)), progress=False)
    ts = get_typestore(Stores.ROS2_KILTED)
    raw_s = pair_s = float("inf")
    for _ in range(3):  # best of three, alternating, so page cache and load affect both alike
        t0 = time.perf_counter()
        n = 0
        with Reader(bag) as r:
            for conn, _, raw in r.messages():
                ts.deserialize_cdr(raw, conn.msgtype)
                n += 1
        raw_s = min(raw_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, report = pair_bag(bag, Preprocessing(64), PairingConfig())
        pair_s = min(pair_s, time.perf_counter() - t0)
    row = {"events": report.pairs, "frames": report.frames, "messages": n, "bag_mb": round(
        sum(p.stat().st_size for p in bag.rglob("*")) / 2**20, 1),
        "raw_read_msgs_per_s": round(n / raw_s, 1), "pairing_frames_per_s": round(report.frames / pair_s, 1),
        "pairing_events_per_s": round(report.pairs / pair_s, 2), "ratio_pairing_over_raw": round(raw_s / pair_s, 3)}
    print(f"pairing: {row}", flush=True)
    return row


def bench_training(pairs: int) -> dict:
    from cde_ros.core.actions import ACTIONS
    from cde_ros.synthetic.scenes import SceneConfig, generate_pairs
    from cde_ros.training.config import load_config
    from cde_ros.training.trainer import resize_pairs, train

    cfg = load_config(ROOT / "config" / "train.yaml")
    data = resize_pairs(generate_pairs("iid", pairs, SceneConfig(), seed=0), cfg.preprocessing)
    from dataclasses import replace

    res = train(data, None, list(ACTIONS), cfg.model, cfg.preprocessing, replace(cfg.training, epochs=2),
                None, progress=False, log=lambda m: None)
    row = {"pairs_per_epoch": pairs, "epochs": 2, "seconds": round(res.seconds, 1),
           "pairs_per_s": round(2 * pairs / res.seconds, 1), "device": "cpu", "threads": os.cpu_count()}
    print(f"training: {row}", flush=True)
    return row


def bench_soak(minutes: float) -> dict:
    from std_msgs.msg import String

    from cde_ros.core.paths import shipped_model_dir
    from cde_ros.data.events import EventPhase
    from cde_ros.ros import conversions

    rng = np.random.default_rng(2)
    imgs = [conversions.rgb_to_image_msg(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), 0, "cam")
            for _ in range(4)]
    rig = NodeRig({"model_dir": str(shipped_model_dir()), "buffer_seconds": 10.0, "buffer_max_frames": 400})
    n = int(minutes * 60 * 30)
    samples = []
    try:
        for i in range(n):
            t = 10 * S + i * S // 30
            msg = imgs[i % 4]
            msg.header.stamp = conversions.to_time(t)
            rig.pub_img.publish(msg)
            if i % 150 == 30:  # an event every 5 s of stream time
                rig.pub_ev.publish(String(data=EventPhase("start", f"s{i}", t).to_json()))
            if i % 150 == 90:
                rig.pub_ev.publish(String(data=EventPhase("end", f"s{i - 60}", t).to_json()))
            if i % 900 == 0:
                samples.append((i / 30 / 60, rss_mb()))
            time.sleep(0.003)
        time.sleep(1.0)
        samples.append((n / 30 / 60, rss_mb()))
        answered = len(rig.results)
    finally:
        rig.close()
    first = [m for t, m in samples if 1.0 <= t <= 2.0] or [samples[1][1]]
    last = [m for t, m in samples if t >= minutes - 1.0]
    row = {"stream_minutes": minutes, "frames": n, "events_answered": answered,
           "rss_mb_minute_1_to_2": round(statistics.mean(first), 1), "rss_mb_last_minute": round(statistics.mean(last), 1),
           "rss_mb_max": round(max(m for _, m in samples), 1), "samples": [(round(t, 2), round(m, 1)) for t, m in samples]}
    print(f"soak: {({k: v for k, v in row.items() if k != 'samples'})}", flush=True)
    return row


def plot_soak(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, m = zip(*row["samples"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(t, m, marker=".")
    ax.set_xlabel("stream time (minutes, 30 Hz 640x480)")
    ax.set_ylabel("node process RSS (MB)")
    ax.set_ylim(0, max(m) * 1.15)
    ax.set_title("perception node memory over the stream")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf.json").write_text(json.dumps(results, indent=1) + "\n")
    runs = results.get("runs", {})

    def run_of(section: str) -> str:
        r = runs.get(section, {"machine": results["machine"], "command": results["command"]})
        return f"_Measured on {r['machine']} by `{r['command']}`._"

    L = ["# Performance (benchmarks/perf.py)", "",
         "Each section names the run that measured it (`--only` reruns some and keeps the others).", ""]
    if "latency" in results:
        L += ["## Event latency (end event published -> /cde/action received, through rclpy)", "",
              run_of("latency"), "", "`executor`: the node process's (parameter `executor`); the benchmark's "
              "listener is spun by the same executor.", "",
              "| model | executor | before embedding | median ms | p95 ms |", "|---|---|---|---|---|"]
        for r in results["latency"]:
            L.append(f"| {r['model']} | {r.get('executor', 'multi_threaded')} | "
                     f"{'at event start' if r['precompute_before'] else 'at the end (naive)'} | "
                     f"{r['median_ms']:.1f} | {r['p95_ms']:.1f} |")
        if all("floor_ms" in r for r in results["latency"]):
            L += ["", "Where the median went (ms; the floor is one encode of the after frame plus the head; target "
                  "≤ 1.3× the floor with the before frame encoded at the start):", "",
                  "| model | executor | before embedding | floor ms | median / floor | queue | decode | encode before | "
                  "encode after | head | transport + callbacks |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in results["latency"]:
                sh = r["median_share_ms"]
                L.append(f"| {r['model']} | {r.get('executor', 'multi_threaded')} | "
                         f"{'at event start' if r['precompute_before'] else 'at the end'} | "
                         f"{r['floor_ms']:.1f} | {r['over_floor']:.2f}× | {sh['queue']} | {sh['decode']} | "
                         f"{sh['encode_before']} | {sh['encode_after']} | {sh['head']} | "
                         f"{sh['event + result transport and callbacks']} |")
        for m, ex in sorted({(r["model"], r.get("executor", "multi_threaded")) for r in results["latency"]}):
            of = [r for r in results["latency"] if r["model"] == m and r.get("executor", "multi_threaded") == ex]
            pre = [r for r in of if r["precompute_before"]][0]
            naive = [r for r in of if not r["precompute_before"]][0]
            L.append(f"\n{m}, {ex}: precomputed / naive median = **{pre['median_ms'] / naive['median_ms']:.2f}** "
                     "(target ≤ 0.6)")
        L.append("")
    if "ingest" in results:
        L += ["## Frame ingest at 30 Hz (CPU per frame in the image callback vs decoding every frame)", "",
              run_of("ingest"), "",
              "| size | frames received/sent | ingest µs/frame | decode-on-arrival µs/frame | ratio | buffer frames | buffer MB |",
              "|---|---|---|---|---|---|---|"]
        for r in results["ingest"]:
            L.append(f"| {r['size']} | {r['frames_received']}/{r['frames_sent']} | {r['ingest_cpu_us_per_frame']} | "
                     f"{r['decode_on_arrival_cpu_us_per_frame']} | {r['ratio_decode_over_ingest']}× | "
                     f"{r['buffer_frames']} | {r['buffer_mb']} |")
        L.append("\nTarget: ingest ≤ 1000 µs CPU per 640×480 frame.\n")
    if "camera" in results:
        L += ["## Camera rates with the camera in another process (frames received / sent)", "", run_of("camera"), "",
              "The camera publishes rgb8 frames at the given rate from its own process; the node (this process) "
              "subscribes with queue depth 5. `raw`: the node's default (`raw_ingest`: serialized messages, only the "
              "header read on arrival); `deserialized`: rclpy turns every frame into a Python message first (the old "
              "path). CPU: the node process's user+system time over the camera's run, in % of one core.", "",
              "| transport | frames | QoS | ingest | executor | received / sent | share | missing (from stamps) | "
              "node CPU % |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["camera"]:
            L.append(f"| {r.get('transport', 'Fast DDS defaults')} | {r['size']} @ {r['hz']} Hz | {r['reliability']} | "
                     f"{r['ingest']} | {r.get('executor', 'multi_threaded')} | {r['received']}/{r['sent']} | "
                     f"{r['received_share']:.1%} | {r['frames_missing_by_stamps']} | {r['node_cpu_percent']} |")
        L.append("\n`fastdds_large_images.xml`: `config/fastdds_large_images.xml` through FASTDDS_DEFAULT_PROFILES_FILE in "
                 "both processes (shared-memory segments of 64 MB: with the default 512 KB segment a frame larger than "
                 "that goes over UDP fragments, which best-effort readers lose). Targets (issue 21): ≥ 99 % received at "
                 "1920×1080 30 Hz with reliable QoS, ≥ 95 % best-effort.\n")
    if "pairing" in results:
        r = results["pairing"]
        L += ["## Bag pairing throughput (MCAP, 640×480 rgb8)", "", run_of("pairing"), "",
              f"{r['events']} events, {r['frames']} frames, {r['bag_mb']} MB: raw rosbags read+deserialise "
              f"{r['raw_read_msgs_per_s']} msg/s; pairing {r['pairing_frames_per_s']} frames/s = "
              f"{r['pairing_events_per_s']} events/s; pairing / raw = **{r['ratio_pairing_over_raw']:.2f}** (target ≥ 0.5).", ""]
    if "training" in results:
        r = results["training"]
        L += ["## Training throughput (default model, CPU)", "", run_of("training"), "",
              f"{r['pairs_per_s']} pairs/s ({r['pairs_per_epoch']} pairs × {r['epochs']} epochs in {r['seconds']} s, "
              f"{r['threads']} cores).", ""]
    if "soak" in results:
        r = results["soak"]
        L += ["## Node memory over a 30 Hz stream", "", run_of("soak"), "",
              f"{r['stream_minutes']} minutes of 640×480 stream ({r['frames']} frames, {r['events_answered']} events "
              f"answered): RSS {r['rss_mb_minute_1_to_2']} MB in minutes 1–2, {r['rss_mb_last_minute']} MB in the last "
              f"minute, max {r['rss_mb_max']} MB.", "", "![RSS over the stream](soak_rss.png)", ""]
    (out / "perf.md").write_text("\n".join(L))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=["latency", "ingest", "camera", "pairing", "training", "soak"])
    ap.add_argument("--camera-seconds", type=float, default=8.0)
    ap.add_argument("--publish", nargs=5, metavar=("W", "H", "HZ", "SECONDS", "RELIABILITY"), help=argparse.SUPPRESS)
    ap.add_argument("--camera-case", nargs=7, help=argparse.SUPPRESS,
                    metavar=("W", "H", "HZ", "SECONDS", "RELIABILITY", "INGEST", "EXECUTOR"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--latency-events", type=int, default=20)
    ap.add_argument("--ingest-seconds", type=float, default=10.0)
    ap.add_argument("--pairing-events", type=int, default=30)
    ap.add_argument("--training-pairs", type=int, default=1000)
    ap.add_argument("--soak-minutes", type=float, default=10.0)
    args = ap.parse_args()
    if args.publish:
        w, h, hz, seconds, reliability = args.publish
        return publish_camera(int(w), int(h), float(hz), float(seconds), reliability)
    if args.camera_case:
        w, h, hz, seconds, reliability, ingest, executor = args.camera_case
        os.environ.setdefault("TQDM_DISABLE", "1")
        row = camera_case(int(w), int(h), float(hz), float(seconds), reliability, ingest == "raw", executor)
        print(json.dumps(row), flush=True)
        return 0
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from cde_ros.core.paths import shipped_model_dir
    from cde_ros.model.network import read_meta

    sections = args.only or ["latency", "ingest", "camera", "pairing", "training", "soak"]
    out = Path(args.out)
    existing = json.loads((out / "perf.json").read_text()) if (out / "perf.json").is_file() else {}
    results = {**existing, "machine": f"{platform.platform()}, {os.cpu_count()} cores, "
               f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}",
               "command": "python benchmarks/perf.py " + " ".join(sys.argv[1:])}
    results["runs"] = {**existing.get("runs", {}),
                       **{s: {"machine": results["machine"], "command": results["command"]} for s in sections}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "latency" in sections:
            shipped_px = read_meta(shipped_model_dir())["input_size"]
            results["latency"] = bench_latency({f"shipped (ViT {shipped_px} px)": shipped_model_dir(),
                                                "ViT-S/16 224 px": make_vit_s16(tmp / "vit_s16")},
                                               args.latency_events)
        if "ingest" in sections:
            results["ingest"] = bench_ingest(args.ingest_seconds)
        if "camera" in sections:
            rows = bench_camera(args.camera_seconds)  # replaces the rows of the same transport only
            kept = [r for r in existing.get("camera", []) if r.get("transport", "Fast DDS defaults") != rows[0]["transport"]]
            results["camera"] = kept + rows
        if "pairing" in sections:
            results["pairing"] = bench_pairing(args.pairing_events, tmp)
        if "training" in sections:
            results["training"] = bench_training(args.training_pairs)
        if "soak" in sections:
            results["soak"] = bench_soak(args.soak_minutes)
            out.mkdir(parents=True, exist_ok=True)
            plot_soak(results["soak"], out / "soak_rss.png")
    write_report(results, out)
    print(f"wrote {out / 'perf.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
