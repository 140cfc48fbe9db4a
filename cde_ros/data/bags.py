"""rosbag2 recordings (sqlite3 and MCAP) without ROS, through the `rosbags` library.

- `BagWriter` writes a recording in the contract's layout (the 2D and the MuJoCo recorders use it).
- `read_pairs` streams through bags, feeds frames and events to the same `EventPairer` the node
  uses, decodes only the frames an event picks, and returns a `PairSet` plus a report of what was
  skipped and why. Memory does not grow with the bag's length: only the snapshot buffer and the
  picked pairs (at model input size) are held. Results are cached per bag.
"""
from __future__ import annotations

import csv
import hashlib
import heapq
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core import stamps
from ..core.dataset import PairSet
from ..core.images import ImageError, message_to_rgb, rgb_to_jpeg, rgb_to_raw
from ..core.preprocess import Preprocessing
from .events import EventParseError, EventPhase, parse_event
from .pairing import EventPairer, PairingConfig
from .snapshot import Frame, SnapshotBuffer

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_EVENT_TOPIC = "/cde/event"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"
CACHE_VERSION = 2  # 2: pairs keep their events' rois


class BagError(RuntimeError):
    """A recording that cannot be used at all; the message names the bag and the problem."""


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


# -------------------------------------------------------------------------------- recording

IMAGE_FORMATS = ("raw", "compressed", "both")


class BagWriter:
    """A rosbag2 recording in the contract's layout: camera frames as `sensor_msgs/Image` (rgb8)
    on the image topic and/or `sensor_msgs/CompressedImage` (JPEG) on `<image topic>/compressed`,
    events (`std_msgs/String` JSON) on the event topic, and any extra JSON topics. Each message
    is logged at its stamp plus a small random delay (a camera's transport), written in log-time
    order. Use as a context manager; a directory that exists is refused (rosbag2 never
    overwrites)."""

    def __init__(self, out: str | Path, storage: str = "mcap", image_topic: str = DEFAULT_IMAGE_TOPIC,
                 event_topic: str = DEFAULT_EVENT_TOPIC, image_format: str = "raw",
                 frame_id: str = "camera_optical_frame", json_topics: tuple[str, ...] = (),
                 latency_s: tuple[float, float] = (0.004, 0.02), seed: int = 0, jpeg_quality: int = 90) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        self.out = Path(out)
        if self.out.exists():
            raise FileExistsError(f"{self.out} exists; rosbag2 writers never overwrite")
        ts = _typestore()
        self._ts = ts
        self._types = {k: ts.types[k] for k in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
                                                 "std_msgs/msg/Header", "builtin_interfaces/msg/Time",
                                                 STRING_TYPE)}
        self.frame_id, self.jpeg_quality = frame_id, jpeg_quality
        self._latency = latency_s
        self._rng = np.random.default_rng(seed + 99)
        self._writer = Writer(self.out, version=9,
                              storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        self._writer.open()
        w = self._writer
        self._img = (w.add_connection(image_topic, "sensor_msgs/msg/Image", typestore=ts)
                     if image_format in ("raw", "both") else None)
        self._cmp = (w.add_connection(image_topic.rstrip("/") + "/compressed", "sensor_msgs/msg/CompressedImage",
                                      typestore=ts) if image_format in ("compressed", "both") else None)
        self._ev = w.add_connection(event_topic, STRING_TYPE, typestore=ts)
        self._json = {t: w.add_connection(t, STRING_TYPE, typestore=ts) for t in json_topics}
        self._pending: list[tuple[int, int, Any, bytes]] = []  # (log time, seq, connection, data)
        self._seq = 0
        self.counts = {"frames": 0, "events": 0, "bytes": 0}

    def _push(self, log_ns: int, conn, data: bytes) -> None:
        heapq.heappush(self._pending, (log_ns, self._seq, conn, data))
        self._seq += 1
        self.counts["bytes"] += len(data)

    def _flush(self, upto: int | None) -> None:
        while self._pending and (upto is None or self._pending[0][0] <= upto):
            t, _, conn, data = heapq.heappop(self._pending)
            self._writer.write(conn, t, data)

    def _header(self, stamp_ns: int):
        sec, nanosec = stamps.from_ns(stamp_ns)
        return self._types["std_msgs/msg/Header"](stamp=self._types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                                  frame_id=self.frame_id)

    def frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        header = self._header(stamp_ns)
        log_ns = stamp_ns + int(self._rng.uniform(*self._latency) * 1e9)
        if self._img is not None:
            h, w, enc, step, data = rgb_to_raw(rgb)
            Image = self._types["sensor_msgs/msg/Image"]
            msg = Image(header=header, height=h, width=w, encoding=enc, is_bigendian=0, step=step,
                        data=np.frombuffer(data, np.uint8))
            self._push(log_ns, self._img, self._ts.serialize_cdr(msg, Image.__msgtype__))
        if self._cmp is not None:
            CompressedImage = self._types["sensor_msgs/msg/CompressedImage"]
            msg = CompressedImage(header=header, format="jpeg",
                                  data=np.frombuffer(rgb_to_jpeg(rgb, self.jpeg_quality), np.uint8))
            self._push(log_ns + 1000, self._cmp, self._ts.serialize_cdr(msg, CompressedImage.__msgtype__))
        self.counts["frames"] += 1
        self._flush(stamp_ns - 200_000_000)

    def _string(self, conn, log_ns: int, text: str) -> None:
        self._push(log_ns, conn, self._ts.serialize_cdr(self._types[STRING_TYPE](data=text), STRING_TYPE))

    def event(self, event: EventPhase) -> None:
        """An event phase, logged 1 ms after its stamp."""
        self._string(self._ev, event.stamp_ns + 1_000_000, event.to_json())
        self.counts["events"] += 1

    def json(self, topic: str, stamp_ns: int, payload: dict) -> None:
        self._string(self._json[topic], stamp_ns + 1_000_000, json.dumps(payload))

    def close(self) -> None:
        self._flush(None)
        self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------- reading

@dataclass
class BagReport:
    """What reading one bag used and skipped. `problems` are human-readable sentences."""

    bag: str
    events: int = 0
    pairs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    frames: int = 0
    image_sizes: list[list[int]] = field(default_factory=list)
    cached: bool = False

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass
class LabelTable:
    """Labels from a CSV sidecar: columns bag, event_id, start, end, action (bag, event_id, start,
    end may be empty; start/end in seconds). A row matches an event by event_id, else by start
    (and end if given) within `tolerance_s`."""

    rows: list[dict[str, Any]]
    tolerance_s: float = 0.05

    @classmethod
    def read(cls, path: str | Path) -> "LabelTable":
        path = Path(path)
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or "action" not in reader.fieldnames:
                    raise BagError(f"label file {path}: needs a header with an 'action' column "
                                   f"(and bag, event_id or start/end), got {reader.fieldnames}")
                rows = []
                for line, row in enumerate(reader, start=2):
                    if not (row.get("action") or "").strip():
                        raise BagError(f"label file {path} line {line}: empty action")
                    try:
                        rows.append({"bag": (row.get("bag") or "").strip(),
                                     "event_id": (row.get("event_id") or "").strip(),
                                     "start": float(row["start"]) if (row.get("start") or "").strip() else None,
                                     "end": float(row["end"]) if (row.get("end") or "").strip() else None,
                                     "action": row["action"].strip()})
                    except ValueError as exc:
                        raise BagError(f"label file {path} line {line}: {exc}") from None
        except OSError as exc:
            raise BagError(f"label file {path} cannot be read: {exc}") from None
        return cls(rows)

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.rows, sort_keys=True).encode()).hexdigest()[:16]

    def lookup(self, bag: Path, event_id: str, start_ns: int | None, end_ns: int | None) -> str | None:
        for r in self.rows:
            if r["bag"] and r["bag"] not in (bag.name, str(bag)):
                continue
            if r["event_id"]:
                if r["event_id"] == event_id:
                    return r["action"]
                continue
            if r["start"] is None or start_ns is None:
                continue
            if abs(r["start"] - start_ns / 1e9) > self.tolerance_s:
                continue
            if r["end"] is not None and (end_ns is None or abs(r["end"] - end_ns / 1e9) > self.tolerance_s):
                continue
            return r["action"]
        return None


def _open_reader(bag: Path):
    from rosbags.rosbag2 import Reader

    if not bag.exists():
        raise BagError(f"bag {bag}: does not exist")
    reader = Reader(bag)
    reader.open()
    return reader


SALVAGE_PEEK_BYTES = 256 * 2**20


def _salvage(bag: Path, wanted: tuple[str, ...], report: BagReport, why: Exception | None,
             after: tuple[int, set] | None = None):
    """What is left of a bag the normal reader cannot open or read to the end (`salvage`): returns
    (topics, {}, message iterator) or raises BagError when there is nothing to read. `after`:
    (log_ns, ids seen at it): messages up to there were read already."""
    from .salvage import mcap_messages, sqlite_messages

    mcaps = [bag] if bag.suffix == ".mcap" else sorted(bag.glob("*.mcap"))
    dbs = [bag] if bag.suffix == ".db3" else sorted(bag.glob("*.db3"))
    if not mcaps and not dbs:
        raise BagError(f"bag {bag}: cannot be opened: {why}") from None
    label = f"bag {bag}"
    if why is not None:
        report.problems.append(f"{label}: cannot be opened normally ({type(why).__name__}: {why}); reading what "
                               "is left of its storage")
    topics: dict[str, str] = {}
    if dbs:
        parts = []
        for db in dbs:
            t, it = sqlite_messages(db, report.problems, label)
            topics.update(t)
            parts.append(it)
        source = (m for it in parts for m in it)
    else:
        source = (m for f in mcaps for m in mcap_messages(f, report.problems, label, topics))

    def fresh():
        for m in source:
            if m[0] not in wanted:
                continue
            if after is not None and (m[2] < after[0] or (m[2] == after[0] and (m[0], m[3][:64]) in after[1])):
                continue
            yield m

    it = fresh()
    held: list = []
    if not dbs:  # MCAP channels are known once read: read ahead (at most SALVAGE_PEEK_BYTES of messages)
        size = 0
        while not set(wanted) <= set(topics) and size <= SALVAGE_PEEK_BYTES:
            m = next(it, None)
            if m is None:
                break
            held.append(m)
            size += len(m[3])

    def chained():
        yield from held
        yield from it
    return topics, {}, chained()


def _bag_messages(bag: Path, wanted: tuple[str, ...], report: BagReport):
    """(topic -> msgtype, topic -> message count or None when unknown, iterator of
    (topic, msgtype, log_ns, raw cdr) in recording order)."""
    try:
        reader = _open_reader(bag)
    except BagError:
        raise
    except Exception as exc:  # rosbags raises several types for unreadable bags
        return _salvage(bag, wanted, report, exc)
    topics = {c.topic: c.msgtype for c in reader.connections}
    conns = [c for c in reader.connections if c.topic in wanted]
    counts = {t: sum(c.msgcount for c in reader.connections if c.topic == t) for t in wanted}

    def gen():
        last, seen = -1, set()
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                if log_ns != last:
                    last, seen = log_ns, set()
                seen.add((conn.topic, bytes(raw[:64])))
                yield conn.topic, conn.msgtype, log_ns, raw
        except Exception as exc:  # noqa: BLE001  damaged storage part way through
            damaged = exc
        else:
            damaged = None
        finally:
            reader.close()
        if damaged is not None:
            report.problems.append(f"bag {bag}: the normal reader stopped at a damaged part "
                                   f"({type(damaged).__name__}: {damaged}); the rest is read record by record")
            try:
                _, _, rest = _salvage(bag, wanted, report, None, after=(last, seen))
            except BagError:
                return
            yield from rest
    return topics, counts, gen()


def iter_bag(bag: Path, image_topic: str, event_topic: str, report: BagReport
             ) -> Iterator[tuple[str, int, Any]]:
    """Yield ("frame", log_ns, Frame) and ("event", log_ns, EventPhase | EventParseError) in
    recording order. Raises BagError when the bag cannot be used at all; a read error part way
    through ends the iteration with a problem noted (what came before is used)."""
    topics, counts, messages = _bag_messages(bag, (image_topic, event_topic), report)
    if image_topic not in topics:
        raise BagError(f"bag {bag}: has no image topic {image_topic} (topics: {', '.join(sorted(topics)) or 'none'})")
    if topics[image_topic] not in IMAGE_TYPES:
        raise BagError(f"bag {bag}: {image_topic} is {topics[image_topic]}, not an Image or CompressedImage")
    if event_topic not in topics:
        raise BagError(f"bag {bag}: has no event topic {event_topic} (topics: {', '.join(sorted(topics))})")
    if topics[event_topic] != STRING_TYPE:
        raise BagError(f"bag {bag}: {event_topic} is {topics[event_topic]}, not {STRING_TYPE}")
    if counts.get(event_topic) == 0:
        raise BagError(f"bag {bag}: has no messages on {event_topic}, so there are no events to pair")
    ts = _typestore()
    for topic, msgtype, log_ns, raw in messages:
        if topic not in (image_topic, event_topic):
            continue
        try:
            msg = ts.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001
            report.skip("undecodable_message")
            report.problems.append(f"bag {bag}: a {topic} message at {log_ns / 1e9:.3f} s cannot be deserialised: {exc}")
            continue
        if topic == image_topic:
            stamp = stamps.to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
            yield "frame", log_ns, Frame(stamp, msg, msg.header.frame_id, len(msg.data))
        else:
            try:
                yield "event", log_ns, parse_event(msg.data)
            except EventParseError as exc:
                yield "event", log_ns, exc


def read_json_topic(bag: str | Path, topic: str) -> list[dict]:
    """Every JSON object on a `std_msgs/String` topic of a bag, in recording order (e.g. the
    simulator's `/sim/ground_truth`). Raises BagError when the bag cannot be read or lacks it."""
    bag = Path(bag)
    report = BagReport(str(bag))
    topics, _, messages = _bag_messages(bag, (topic,), report)
    if topics.get(topic) != STRING_TYPE:
        raise BagError(f"bag {bag}: has no {STRING_TYPE} topic {topic}")
    ts = _typestore()
    out = []
    for t, msgtype, _, raw in messages:
        if t == topic:
            try:
                value = json.loads(ts.deserialize_cdr(raw, msgtype).data)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                out.append(value)
    return out


def pair_bag(bag: str | Path, pre: Preprocessing, pairing: PairingConfig,
             image_topic: str = DEFAULT_IMAGE_TOPIC, event_topic: str = DEFAULT_EVENT_TOPIC,
             labels: LabelTable | None = None, buffer_s: float = 10.0,
             on_pair: Callable[[], None] | None = None) -> tuple[PairSet | None, BagReport]:
    """Pair every labelled event of one bag, exactly as the node would. The frames an event picks
    are decoded and resized to the model input size; nothing else is decoded."""
    bag = Path(bag)
    report = BagReport(str(bag))
    pairer = EventPairer(pairing, SnapshotBuffer(max_age_ns=int(buffer_s * 1e9)))
    before, after, actions, ids, rois = [], [], [], [], []
    last_size: tuple[int, int] | None = None

    def decode(frame: Frame) -> tuple[np.ndarray, tuple[int, int]]:
        """The frame resized to the model input, and its camera size (width, height)."""
        nonlocal last_size
        rgb = message_to_rgb(frame.payload)
        size = (rgb.shape[1], rgb.shape[0])
        if last_size is not None and size != last_size:
            report.problems.append(f"bag {bag}: image size changed from {last_size[0]}x{last_size[1]} to "
                                   f"{size[0]}x{size[1]} at {frame.stamp_ns / 1e9:.3f} s; all frames are "
                                   f"resized to {pre.input_size}x{pre.input_size}")
        if list(size) not in report.image_sizes:
            report.image_sizes.append(list(size))
        last_size = size
        return pre.resize(rgb), size

    def handle(outcomes) -> None:
        for o in outcomes:
            if o.kind == "before":
                continue
            report.events += 1
            if o.kind == "error":
                report.skip(o.status)
                continue
            action = o.expected_action
            if labels is not None:
                action = labels.lookup(bag, o.event_id, o.start_ns, o.end_ns) or action
            if not action:
                report.skip("unlabelled")
                continue
            try:
                (b, _), (a, size) = decode(o.before), decode(o.after)
            except (ImageError, ValueError) as exc:
                report.skip("bad_image")
                report.problems.append(f"bag {bag}: event {o.event_id}: {exc}")
                continue
            before.append(b)
            after.append(a)
            actions.append(action)
            ids.append(o.event_id)
            # the roi as fractions of the after frame (the pairs are stored resized)
            rois.append(None if o.roi is None else (o.roi[0] / size[0], o.roi[1] / size[1], o.roi[2] / size[0],
                                                    o.roi[3] / size[1]))
            report.pairs += 1
            if on_pair:
                on_pair()

    saw_frame = saw_event = False
    for kind, log_ns, item in iter_bag(bag, image_topic, event_topic, report):
        if kind == "frame":
            saw_frame = True
            report.frames += 1
            handle(pairer.on_frame(item))
        elif isinstance(item, EventParseError):
            report.skip("bad_event")
            report.problems.append(f"bag {bag}: event at {log_ns / 1e9:.3f} s: {item}")
        else:
            saw_event = True
            handle(pairer.on_event(item, log_ns))
        handle(pairer.expire(log_ns))
    handle(pairer.flush())
    if not saw_frame:
        report.problems.append(f"bag {bag}: has no messages on {image_topic}")
    if not saw_event and saw_frame:
        report.problems.append(f"bag {bag}: has no usable events on {event_topic}")
    if report.skipped.get("unlabelled"):
        report.problems.append(f"bag {bag}: {report.skipped['unlabelled']} events have no action; label them in "
                               f"the event JSON or with a CSV sidecar (--labels)")
    if not actions:
        return None, report
    return PairSet(np.stack(before), np.stack(after), actions, [], ids, [], rois), report


def _cache_key(bag: Path, pre: Preprocessing, pairing: PairingConfig, image_topic: str, event_topic: str,
               labels: LabelTable | None, buffer_s: float) -> str:
    files = sorted(p for p in (bag.rglob("*") if bag.is_dir() else [bag]) if p.is_file())
    sig = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps({"v": CACHE_VERSION, "files": sig, "pre": pre.to_json(), "pairing": asdict(pairing),
                      "topics": [image_topic, event_topic], "labels": labels.content_hash() if labels else None,
                      "buffer_s": buffer_s}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cde_ros" / "pairs"


def _with_env(pairs: PairSet, bag: Path) -> PairSet:
    """Each bag is its own recording environment (for the environment-invariance loss term)."""
    pairs.envs = [str(bag)] * len(pairs)
    return pairs


def read_pairs(bags: list[str | Path], pre: Preprocessing, pairing: PairingConfig,
               image_topic: str = DEFAULT_IMAGE_TOPIC, event_topic: str = DEFAULT_EVENT_TOPIC,
               labels: LabelTable | None = None, cache_dir: str | Path | None = None, buffer_s: float = 10.0,
               progress: bool = True, log: Callable[[str], None] = print) -> tuple[PairSet | None, list[BagReport]]:
    """Pairs from several bags (each its own time line), with a per-bag cache of decoded pairs.
    A bag that cannot be used is reported and skipped; the others are used."""
    from tqdm.auto import tqdm

    cache = Path(cache_dir) if cache_dir else None
    parts: list[PairSet] = []
    reports: list[BagReport] = []
    for bag in map(Path, bags):
        cached_file = None
        try:
            if cache is not None and bag.exists():
                cached_file = cache / f"{_cache_key(bag, pre, pairing, image_topic, event_topic, labels, buffer_s)}.npz"
                if cached_file.is_file() and cached_file.with_suffix(".json").is_file():
                    report = BagReport(**json.loads(cached_file.with_suffix(".json").read_text()))
                    report.cached = True
                    if report.pairs:
                        parts.append(_with_env(PairSet.load(cached_file), bag))
                    reports.append(report)
                    log(f"{bag}: {report.pairs} pairs from cache {cached_file}")
                    continue
            bar = tqdm(desc=f"pairing {bag.name}", unit="pair", disable=not progress)
            pairs, report = pair_bag(bag, pre, pairing, image_topic, event_topic, labels, buffer_s,
                                     on_pair=lambda: bar.update(1))
            bar.close()
        except BagError as exc:
            report = BagReport(str(bag), problems=[str(exc)])
            report.skip("unusable_bag")
            reports.append(report)
            log(f"skipping: {exc}")
            continue
        for p in report.problems:
            log(f"warning: {p}")
        reports.append(report)
        if pairs is not None:
            parts.append(_with_env(pairs, bag))
        if cached_file is not None and not any("damaged" in p for p in report.problems):
            if pairs is not None:
                pairs.save(cached_file)
            tmp = cached_file.with_suffix(f".json.{os.getpid()}.tmp")  # the JSON marks a complete entry
            tmp.write_text(json.dumps(asdict(report)))
            os.replace(tmp, cached_file.with_suffix(".json"))
    return (PairSet.concat(parts) if parts else None), reports
