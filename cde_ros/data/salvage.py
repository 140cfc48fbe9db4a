"""Reading what is left of a damaged rosbag2 recording.

A recorder that died, a disk that filled up, a copy cut short: the normal readers (rosbags) stop
at the first damage or refuse the file. These readers recover every record that is still intact
and say how much was lost:

- MCAP: the top-level records are walked one by one; a record that does not parse (a chunk whose
  bytes are damaged: its decompression or CRC fails, its length runs past the end) is skipped by
  searching forward for the next chunk that parses, so the chunks after the damage are used.
- sqlite3: the `messages` table is read in ranges of row ids; a range that hits a damaged page is
  split until the rows that still read are read, so a file truncated at 90 % keeps its first 90 %.

Both yield `(topic, msgtype, log_ns, raw cdr)` in file order and append sentences to `problems`.
"""
from __future__ import annotations

import io
import mmap
import struct
from pathlib import Path
from typing import Iterator

MCAP_MAGIC = b"\x89MCAP0\r\n"
_CHUNK = 0x06
_FOOTER = 0x02
_MAX_OPCODE = 0x0F
_COMPRESSIONS = (b"", b"zstd", b"lz4")

Message = tuple[str, str, int, bytes]


def _parse(buf: bytes) -> list:
    """The records of one top-level record's bytes (a chunk: the records inside it). Raises on damage."""
    from mcap.exceptions import EndOfFile
    from mcap.stream_reader import StreamReader

    out = []
    try:
        for rec in StreamReader(io.BytesIO(buf), skip_magic=True, emit_chunks=False, validate_crcs=True).records:
            out.append(rec)
    except EndOfFile:  # the end of this one record: expected
        pass
    return out


def _plausible_chunk(mm, q: int, size: int) -> int | None:
    """The end offset of a chunk record starting at q, when its header makes sense."""
    if q + 9 + 32 > size:
        return None
    length = struct.unpack_from("<Q", mm, q + 1)[0]
    end = q + 9 + length
    if length < 32 or end > size:
        return None
    comp_len = struct.unpack_from("<I", mm, q + 9 + 28)[0]
    if comp_len > 8 or bytes(mm[q + 9 + 32: q + 9 + 32 + comp_len]) not in _COMPRESSIONS:
        return None
    return end


def mcap_messages(path: Path, problems: list[str], label: str,
                  topics: dict[str, str] | None = None) -> Iterator[Message]:
    """Every intact message of one MCAP file, in file order. `topics` is filled with the channels
    (topic -> msgtype) as they are read."""
    from mcap.records import Channel, Schema
    from mcap.records import Message as McapMessage

    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with open(path, "rb") as fh:
        size = path.stat().st_size
        if size < len(MCAP_MAGIC) or fh.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            problems.append(f"{label}: {path.name} is not an MCAP file")
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            p, lost_bytes, damaged = len(MCAP_MAGIC), 0, 0
            while p + 9 <= size:
                op = mm[p]
                length = struct.unpack_from("<Q", mm, p + 1)[0]
                end = p + 9 + length
                records = None
                if 1 <= op <= _MAX_OPCODE and end <= size:
                    try:
                        records = _parse(bytes(mm[p:end]))
                    except Exception:  # noqa: BLE001  a damaged record
                        records = None
                if records is None:
                    # damaged here: the next chunk that parses is where reading goes on
                    damaged += 1
                    q, resumed = p, None
                    while True:
                        q = mm.find(bytes([_CHUNK]), q + 1)
                        if q < 0:
                            break
                        chunk_end = _plausible_chunk(mm, q, size)
                        if chunk_end is None:
                            continue
                        try:
                            records = _parse(bytes(mm[q:chunk_end]))
                        except Exception:  # noqa: BLE001  not a chunk after all
                            continue
                        resumed, end = q, chunk_end
                        break
                    if resumed is None:
                        lost_bytes += size - p
                        break
                    lost_bytes += resumed - p
                for rec in records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec.name
                    elif isinstance(rec, Channel):
                        channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                        if topics is not None:
                            topics[rec.topic] = channels[rec.id][1]
                    elif isinstance(rec, McapMessage) and rec.channel_id in channels:
                        topic, msgtype = channels[rec.channel_id]
                        yield topic, msgtype, rec.log_time, rec.data
                if op == _FOOTER and records is not None and end == size - len(MCAP_MAGIC):
                    break
                p = end
            if damaged or lost_bytes:
                problems.append(f"{label}: {path.name} is damaged: {damaged} damaged region(s), {lost_bytes} of {size} "
                                f"bytes ({lost_bytes / max(1, size):.1%}) unreadable; every intact record around "
                                "them is used")
        finally:
            mm.close()


def sqlite_messages(path: Path, problems: list[str], label: str) -> tuple[dict[str, str], Iterator[Message]]:
    """(topic -> msgtype, every message row that still reads, by row id)."""
    import sqlite3
    import tempfile

    tmp = None
    with open(path, "rb") as fh:
        head = fh.read(100)
    size = path.stat().st_size
    if len(head) == 100 and head.startswith(b"SQLite format 3\x00"):
        page = struct.unpack(">H", head[16:18])[0]
        page = 65536 if page == 1 else page
        want = struct.unpack(">I", head[28:32])[0] * page
        if size % page or size < want:
            # a file cut short: SQLite refuses it whole; a copy padded to its page count reads, the
            # missing pages as damaged ones (the recording itself is never written to)
            tmp = tempfile.TemporaryDirectory(prefix="cde_salvage_")
            copy = Path(tmp.name) / path.name
            with open(path, "rb") as src, open(copy, "wb") as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
                dst.write(bytes(max(want, (size // page + 1) * page) - size))
            problems.append(f"{label}: {path.name} is cut short ({size} of {want} bytes)")
            path_to_open = copy
        else:
            path_to_open = path
    else:
        path_to_open = path
    db = sqlite3.connect(f"file:{path_to_open}?mode=ro&immutable=1", uri=True)

    def done() -> None:
        db.close()
        if tmp is not None:
            tmp.cleanup()

    try:
        rows = db.execute("SELECT id, name, type FROM topics").fetchall()
    except sqlite3.DatabaseError as exc:
        done()
        problems.append(f"{label}: {path.name}: its topics table cannot be read ({exc}); nothing is usable")
        return {}, iter(())
    topics = {tid: (name, msgtype) for tid, name, msgtype in rows}
    try:
        top = db.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
    except sqlite3.DatabaseError:  # the index pages are damaged: the count the recorder wrote down
        top = max(_probe_top(db), _metadata_count(path.parent))

    def rows_in(lo: int, hi: int, out: dict) -> None:
        try:
            for rid, tid, ts, data in db.execute("SELECT id, topic_id, timestamp, data FROM messages "
                                                 "WHERE id >= ? AND id < ? ORDER BY id", (lo, hi)):
                out["rows"].append((rid, tid, ts, data))
        except sqlite3.DatabaseError:
            if hi - lo <= 1:
                out["lost"] += 1
                return
            out["rows"] = [r for r in out["rows"] if r[0] < lo]
            mid = (lo + hi) // 2
            rows_in(lo, mid, out)
            rows_in(mid, hi, out)

    def gen() -> Iterator[Message]:
        state = {"rows": [], "lost": 0}
        step = 512
        try:
            for lo in range(1, top + 1, step):
                state["rows"] = []
                rows_in(lo, min(top + 1, lo + step), state)
                for _, tid, ts, data in state["rows"]:
                    if tid in topics:
                        yield topics[tid][0], topics[tid][1], int(ts), bytes(data)
        finally:
            done()
            if state["lost"]:
                problems.append(f"{label}: {path.name} is damaged: {state['lost']} of {top} message rows "
                                f"({state['lost'] / max(1, top):.1%}) cannot be read; the other rows are used")

    return {name: msgtype for name, msgtype in topics.values()}, gen()


def _probe_top(db) -> int:
    """The largest message id that still reads (ids are dense from 1 in rosbag2's sqlite3)."""
    import sqlite3

    def ok(i: int) -> bool:
        try:
            return db.execute("SELECT 1 FROM messages WHERE id = ?", (i,)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    hi = 1
    while ok(hi * 2):
        hi *= 2
    lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo if ok(lo) else 0


def _metadata_count(folder: Path) -> int:
    """message_count of the bag's metadata.yaml (0 when it cannot be read)."""
    import yaml

    try:
        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        return int(meta["rosbag2_bagfile_information"]["message_count"])
    except Exception:  # noqa: BLE001  no or damaged metadata: the probe's count stands
        return 0
