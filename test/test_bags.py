"""Real rosbag2 files (MCAP and sqlite3): record -> train -> eval, and bad recordings."""
import json
import re

import numpy as np
import pytest
from conftest import TINY_YAML, run_cli
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cde_ros.core.dataset import PairSet
from cde_ros.core.preprocess import Preprocessing
from cde_ros.data.bags import BagError, LabelTable, pair_bag, read_pairs
from cde_ros.data.pairing import PairingConfig
from cde_ros.synthetic.record import RecordConfig, record_synthetic

PRE = Preprocessing(32)
TS = get_typestore(Stores.ROS2_KILTED)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in ("mcap", "sqlite3"):
        record_synthetic(d / f"syn_{storage}", RecordConfig(storage=storage, events=8, size=(64, 64), seed=1,
                                                            compressed=storage == "mcap"), progress=False)
        out[storage] = d / f"syn_{storage}"
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_train_eval_round_trip(tmp_path, bags, storage):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    model = tmp_path / "model"
    cache = tmp_path / "cache"
    real = storage == "sqlite3"  # this round trip through real `cde-ros` processes, the mcap one in this process
    proc = run_cli("train", str(bags[storage]), "--out", str(model), "--config", str(cfg), "--cache-dir", str(cache),
                   "--quiet", process=real)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model_id"] and (model / "model.safetensors").is_file()
    meta = json.loads((model / "model.json").read_text())
    assert meta["data"]["reports"][0]["pairs"] == 8 and meta["training"]["pairs"] + meta["training"]["val_pairs"] == 8
    proc = run_cli("eval", str(bags[storage]), "--model", str(model), "--json", "--cache-dir", str(cache),
                   "--plots", str(tmp_path / "plots"), process=real)
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["n"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["per_class"]
    assert np.asarray(metrics["confusion"]).sum() == 8
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 1000
    assert "(cached)" in proc.stderr  # the second read of the bag came from the pair cache
    # 8 events are too few to choose the none operating point from: said, and the model is left alone
    before = (model / "model.json").read_text()
    proc = run_cli("calibrate", str(model), str(bags[storage]), "--cache-dir", str(cache), check=False, process=real)
    assert proc.returncode == 2 and "fewer than the 20 the none operating point needs" in proc.stderr
    assert "(cached)" in proc.stderr and (model / "model.json").read_text() == before


def test_training_pairs_are_the_frames_the_node_would_pick(bags):
    """The bag reader pairs through EventPairer; check it against the contract rule by hand."""
    pairs, report = pair_bag(bags["sqlite3"], PRE, PairingConfig())
    assert report.pairs == 8 and report.skipped == {}
    from rosbags.rosbag2 import Reader

    frames, events = [], {}
    with Reader(bags["sqlite3"]) as r:
        for conn, _, raw in r.messages():
            msg = TS.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/camera/image_raw":
                frames.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg))
            else:
                ev = json.loads(msg.data)
                events.setdefault(ev["event_id"], {})[ev["phase"]] = ev["stamp"]["sec"] * 10**9 + ev["stamp"]["nanosec"]
    frames.sort(key=lambda f: f[0])
    from cde_ros.core.images import message_to_rgb

    for i, eid in enumerate(pairs.event_ids):
        start, end = events[eid]["start"], events[eid]["end"]
        before = [m for t, m in frames if t <= start - 100_000_000][-1]
        after = [m for t, m in frames if t >= end + 300_000_000][0]
        np.testing.assert_array_equal(pairs.before[i], PRE.resize(message_to_rgb(before)))
        np.testing.assert_array_equal(pairs.after[i], PRE.resize(message_to_rgb(after)))


def test_compressed_topic_and_custom_topics(tmp_path, bags):
    pairs, _ = read_pairs([bags["mcap"]], PRE, PairingConfig(), image_topic="/camera/image_raw/compressed",
                          progress=False, log=lambda m: None)
    raw, _ = read_pairs([bags["mcap"]], PRE, PairingConfig(), progress=False, log=lambda m: None)
    assert pairs.actions == raw.actions and np.abs(pairs.before.astype(int) - raw.before).mean() < 4
    custom = tmp_path / "custom"
    record_synthetic(custom, RecordConfig(storage="sqlite3", events=2, size=(48, 48), image_topic="/arm_cam/rgb",
                                          event_topic="/robot/events"), progress=False)
    pairs, reports = read_pairs([custom, bags["sqlite3"]], PRE, PairingConfig(), "/arm_cam/rgb", "/robot/events",
                                progress=False, log=lambda m: None)
    assert len(pairs) == 2 and reports[1].problems and "has no image topic /arm_cam/rgb" in reports[1].problems[0]


def _write_bag(path, frames=(), events=(), storage="sqlite3", image_topic="/camera/image_raw"):
    Image, Header, Time, String = (TS.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                          "builtin_interfaces/msg/Time", "std_msgs/msg/String"))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        ci = w.add_connection(image_topic, Image.__msgtype__, typestore=TS)
        ce = w.add_connection("/cde/event", String.__msgtype__, typestore=TS)
        items = [(t, "f", img) for t, img in frames] + [(t, "e", ev) for t, ev in events]
        for t, kind, item in sorted(items, key=lambda x: x[0]):
            if kind == "f":
                h, wd = item.shape[:2]
                msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="c"), height=h,
                            width=wd, encoding="rgb8", is_bigendian=0, step=wd * 3, data=item.reshape(-1))
                w.write(ci, t, TS.serialize_cdr(msg, Image.__msgtype__))
            else:
                w.write(ce, t, TS.serialize_cdr(String(data=item), String.__msgtype__))


def _ev(phase, eid, t, action=None):
    d = {"phase": phase, "event_id": eid, "stamp": {"sec": t // 10**9, "nanosec": t % 10**9}}
    if action:
        d["action"] = action
    return json.dumps(d)


S = 10**9


def test_bad_recordings_are_named_and_what_can_be_used_is_used(tmp_path):
    img = lambda v, size=(16, 16): np.full((*size, 3), v, np.uint8)  # noqa: E731
    frames = [(t * S // 10, img(t)) for t in range(1, 60)]
    values = [(t, img[0, 0, 0]) for t, img in frames]
    # no image topic
    _write_bag(tmp_path / "noimg", events=[(S, _ev("start", "a", S, "open"))], image_topic="/other")
    # no events at all
    _write_bag(tmp_path / "noev", frames=frames)
    # unlabelled and labelled events, one malformed event
    _write_bag(tmp_path / "mixed", frames=frames, events=[
        (1 * S, _ev("start", "a", 1 * S, "open")), (2 * S, _ev("end", "a", 2 * S)),
        (3 * S, _ev("start", "b", 3 * S)), (4 * S, _ev("end", "b", 4 * S)),
        (int(4.5 * S), "{broken json")])
    # images change size part way
    frames2 = [(t * S // 10, img(t, (16, 16) if t < 30 else (24, 20))) for t in range(1, 60)]
    _write_bag(tmp_path / "resized", frames=frames2, events=[
        (1 * S, _ev("start", "a", 1 * S, "open")), (4 * S, _ev("end", "a", 4 * S, "open"))])
    # a truncated MCAP file (frames large enough for several 1 MB chunks)
    _write_bag(tmp_path / "trunc", frames=[(t, img(v, (120, 160))) for t, v in values], storage="mcap", events=[
        (1 * S, _ev("start", "a", 1 * S, "close")), (2 * S, _ev("end", "a", 2 * S)),
        (3 * S, _ev("start", "b", 3 * S, "open")), (5 * S, _ev("end", "b", 5 * S))])
    mcap = next((tmp_path / "trunc").glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.8)])  # the last chunk and the summary are lost
    # not a bag at all
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("this: [is not a bag")

    logs = []
    pairs, reports = read_pairs([tmp_path / n for n in ("noimg", "noev", "mixed", "resized", "trunc", "junk")],
                                Preprocessing(16), PairingConfig(), progress=False, log=logs.append)
    by = {r.bag.split("/")[-1]: r for r in reports}
    assert "has no image topic /camera/image_raw" in by["noimg"].problems[0]
    assert "has no messages on /cde/event" in by["noev"].problems[0]
    assert by["mixed"].pairs == 1 and by["mixed"].skipped == {"unlabelled": 1, "bad_event": 1}
    assert any("no action" in p for p in by["mixed"].problems)
    assert by["resized"].pairs == 1 and any("size changed from 16x16 to 20x24" in p for p in by["resized"].problems)
    # a recorder that died: the MCAP has no footer; the complete records before the cut are used
    assert by["trunc"].pairs == 1 and any("cannot be opened normally" in p for p in by["trunc"].problems)
    assert any("is damaged" in p and "unreadable" in p for p in by["trunc"].problems)
    assert "cannot be opened" in by["junk"].problems[0]
    assert all(str(tmp_path) in p for r in reports for p in r.problems)  # every message names its bag
    assert len(pairs) == by["mixed"].pairs + by["resized"].pairs + by["trunc"].pairs
    assert any("skipping" in line for line in logs)


def test_csv_sidecar_labels_unlabelled_events(tmp_path):
    img = lambda v: np.full((16, 16, 3), v, np.uint8)  # noqa: E731
    frames = [(t * S // 10, img(t)) for t in range(1, 80)]
    _write_bag(tmp_path / "nolabels", frames=frames, events=[
        (1 * S, _ev("start", "a", 1 * S)), (2 * S, _ev("end", "a", 2 * S)),
        (3 * S, _ev("start", "b", 3 * S)), (5 * S, _ev("end", "b", 5 * S)),
        (6 * S, _ev("start", "c", 6 * S)), (7 * S, _ev("end", "c", 7 * S))])
    csv = tmp_path / "labels.csv"
    csv.write_text("bag,event_id,start,end,action\nnolabels,a,,,open\n,,3.0,5.0,close\nother_bag,c,,,fill\n")
    pairs, reports = read_pairs([tmp_path / "nolabels"], Preprocessing(16), PairingConfig(),
                                labels=LabelTable.read(csv), progress=False, log=lambda m: None)
    assert pairs.actions == ["open", "close"] and reports[0].skipped == {"unlabelled": 1}
    csv.write_text("bag,event_id\nx,y\n")
    with pytest.raises(BagError, match="action"):
        LabelTable.read(csv)


def test_pairs_keep_their_events_rois_as_fractions_of_the_frame_through_the_cache(tmp_path):
    img = lambda v: np.full((20, 40, 3), v, np.uint8)  # noqa: E731  40 x 20 camera frames
    frames = [(t * S // 10, img(t)) for t in range(1, 60)]
    with_roi = json.loads(_ev("start", "a", 1 * S, "open"))
    with_roi["roi"] = [10, 5, 20, 10]
    _write_bag(tmp_path / "b", frames=frames, events=[
        (1 * S, json.dumps(with_roi)), (2 * S, _ev("end", "a", 2 * S)),
        (3 * S, _ev("start", "b", 3 * S, "close")), (4 * S, _ev("end", "b", 4 * S))])
    for _ in range(2):  # paired, then from the cache
        pairs, reports = read_pairs([tmp_path / "b"], Preprocessing(16), PairingConfig(), cache_dir=tmp_path / "c",
                                    progress=False, log=lambda m: None)
        assert pairs.rois == [(0.25, 0.25, 0.5, 0.5), None]
    assert reports[0].cached
    assert pairs.subset([1, 0]).rois == [None, (0.25, 0.25, 0.5, 0.5)]
    assert PairSet.concat([pairs, pairs]).rois == pairs.rois * 2
    with pytest.raises(ValueError, match="rois for"):
        PairSet(pairs.before, pairs.after, pairs.actions, rois=[None])


def test_cli_reports_unusable_input_clearly(tmp_path, tiny_model):
    proc = run_cli("train", str(tmp_path / "missing_bag"), "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2 and "missing_bag" in proc.stderr and "does not exist" in proc.stderr
    proc = run_cli("eval", str(tmp_path / "missing_bag"), "--model", str(tmp_path / "nomodel"), check=False)
    assert proc.returncode == 2 and "model directory" in proc.stderr and "does not exist" in proc.stderr
    proc = run_cli("eval", str(tmp_path / "missing_bag"), "--model", str(tiny_model), "--json", check=False)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and out["n"] == 0 and out["skipped"] == {"unusable_bag": 1}
    # a device the machine does not have; model files that are not what they say
    import torch

    if not torch.cuda.is_available():
        proc = run_cli("eval", str(tmp_path / "missing_bag"), "--model", str(tiny_model), "--device", "cuda", check=False)
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "badmodel"
    bad.mkdir()
    (bad / "model.json").write_text("[1, 2, 3]")
    proc = run_cli("eval", str(tmp_path / "missing_bag"), "--model", str(bad), check=False)
    assert proc.returncode == 2 and "not an object" in proc.stderr and "Traceback" not in proc.stderr
    other = tmp_path / "othermodel"
    other.mkdir()
    meta = json.loads((tiny_model / "model.json").read_text())
    meta["model_config"]["backbone_kwargs"]["embed_dim"] = 48  # names another network than the weights hold
    (other / "model.json").write_text(json.dumps(meta))
    (other / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    proc = run_cli("eval", str(tmp_path / "missing_bag"), "--model", str(other), check=False)
    assert proc.returncode == 2 and "another architecture" in proc.stderr and "Traceback" not in proc.stderr


def test_pairing_memory_does_not_grow_with_bag_length(tmp_path):
    """Only the snapshot buffer and the picked pairs are held: a bag five times longer (same
    events per minute) peaks at about the same memory."""
    import tracemalloc

    img = np.zeros((120, 160, 3), np.uint8)

    def peak_for(seconds: int, name: str):
        frames = [(t * S // 20, img) for t in range(1, seconds * 20)]
        events = [(k * 10 * S + S, _ev("start", f"e{k}", k * 10 * S + S, "open")) for k in range(seconds // 10)] + \
                 [(k * 10 * S + 3 * S, _ev("end", f"e{k}", k * 10 * S + 3 * S)) for k in range(seconds // 10)]
        _write_bag(tmp_path / name, frames=frames, events=events)
        tracemalloc.start()
        _, report = pair_bag(tmp_path / name, Preprocessing(16), PairingConfig(), buffer_s=2.0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report.pairs == seconds // 10 and report.frames == seconds * 20 - 1
        return peak

    short, long = peak_for(20, "short"), peak_for(100, "long")  # 23 MB and 115 MB of raw frames
    assert long < 1.3 * short, f"peak {short / 2**20:.1f} MiB for 20 s, {long / 2**20:.1f} MiB for 100 s"


def test_record_synthetic_refuses_bad_rates_and_counts_before_writing(tmp_path):
    for args, words in ((["--rate", "0"], "camera rate"), (["--rate", "-5"], "camera rate"),
                        (["--events", "0"], "events must be")):
        proc = run_cli("record-synthetic", str(tmp_path / "bag"), *args, "--quiet", check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "bag").exists()  # nothing left behind to block a retry


def _storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def _chunk_offsets(data: bytes) -> list[int]:
    import struct

    p, out = 8, []
    while p + 9 <= len(data):
        op, length = data[p], struct.unpack_from("<Q", data, p + 1)[0]
        if op == 0x06:
            out.append(p)
        if op == 0x0F:  # data end: the summary follows
            break
        p += 9 + length
    return out


def test_damaged_bags_keep_every_intact_record_and_say_how_much_was_lost(tmp_path):
    """sqlite3 cut at 90 % (SQLite refuses the file whole) or with a damaged page; MCAP without
    its footer and with a damaged chunk before the cut: the records around the damage are used."""
    img = lambda v: np.full((120, 160, 3), v, np.uint8)  # noqa: E731
    frames = [(t * S // 10, img(t)) for t in range(1, 100)]
    events = []
    for k in range(4):  # events at 1-2 s, 3-4 s, 5-6 s, 7-8 s
        a = (1 + 2 * k) * S
        events += [(a, _ev("start", f"e{k}", a, "open")), (a + S, _ev("end", f"e{k}", a + S))]
    for storage in ("sqlite3", "mcap"):
        _write_bag(tmp_path / storage, frames=frames, events=events, storage=storage)
    data = _storage_file(tmp_path / "sqlite3").read_bytes()
    import shutil

    for name, cut in (("sqlite3_cut", lambda d: d[: int(len(d) * 0.9)]),
                      ("sqlite3_page", lambda d: d[: len(d) // 2] + bytes(4096) + d[len(d) // 2 + 4096:])):
        shutil.copytree(tmp_path / "sqlite3", tmp_path / name)
        _storage_file(tmp_path / name).write_bytes(cut(data))
    data = _storage_file(tmp_path / "mcap").read_bytes()
    chunks = _chunk_offsets(data)
    assert len(chunks) >= 4
    damaged = bytearray(data[: int(len(data) * 0.9)])  # no footer: a recorder that died
    damaged[chunks[1]: chunks[1] + 64] = bytes(64)  # and the second chunk's header wiped
    shutil.copytree(tmp_path / "mcap", tmp_path / "mcap_damaged")
    _storage_file(tmp_path / "mcap_damaged").write_bytes(bytes(damaged))

    names = ("sqlite3", "sqlite3_cut", "sqlite3_page", "mcap", "mcap_damaged")
    pairs, reports = read_pairs([tmp_path / n for n in names], Preprocessing(16), PairingConfig(), progress=False,
                                log=lambda m: None)
    by = {r.bag.split("/")[-1]: r for r in reports}
    assert by["sqlite3"].pairs == by["mcap"].pairs == 4 and not by["sqlite3"].problems and not by["mcap"].problems
    # the cut sqlite3 file: every event still pairs (the last 10 % held frames after the last event)
    assert by["sqlite3_cut"].pairs == 4
    assert any("cut short" in p for p in by["sqlite3_cut"].problems)
    assert any(re.search(r"\d+ of 107 message rows \(\d+\.\d%\) cannot be read", p) for p in by["sqlite3_cut"].problems)
    assert by["sqlite3_page"].pairs >= 3 and any("cannot be read" in p for p in by["sqlite3_page"].problems)
    # MCAP: the chunks after the damaged one are read (before: reading stopped at the damage)
    # (chunks of ~1 MB hold 19 frames: chunk 0 to 1.9 s, the wiped chunk 1 to 3.8 s, chunks 2 and 3
    # to 7.6 s, the cut from 7.6 s; event e2 (5-6 s) pairs from frames after the damage)
    assert by["mcap_damaged"].frames > 40 and by["mcap_damaged"].pairs == 1, by["mcap_damaged"]
    # the wiped chunk and the cut
    assert any(re.search(r"2 damaged region\(s\), \d+ of \d+ bytes", p) for p in by["mcap_damaged"].problems)
    assert len(pairs) == sum(r.pairs for r in reports)
