"""Frame selection and event bookkeeping exactly as CONTRACT.md says."""
import pytest

from cde_ros.data.events import EventPhase
from cde_ros.data.pairing import EventPairer, PairingConfig
from cde_ros.data.snapshot import Frame, SnapshotBuffer

MS = 1_000_000


def frame(ms: int, nbytes: int = 10) -> Frame:
    return Frame(ms * MS, payload=f"img@{ms}", frame_id="cam", nbytes=nbytes)


def make(pre=100, post=300, **kw) -> EventPairer:
    cfg = PairingConfig(pre_offset_s=pre / 1000, post_settle_s=post / 1000, **kw)
    return EventPairer(cfg, SnapshotBuffer(max_age_ns=10_000 * MS))


def feed(p: EventPairer, items):
    out = []
    for it in items:
        if isinstance(it, Frame):
            out += p.on_frame(it)
        else:
            out += p.on_event(it, received_ns=0)
    return out


def test_contract_selection_rule():
    p = make()
    out = feed(p, [frame(t) for t in range(0, 1001, 50)] +  # 0..1000 ms at 20 Hz
               [EventPhase("start", "a", 1000 * MS, "open")] +
               [frame(t) for t in range(1050, 3001, 50)] +
               [EventPhase("end", "a", 2000 * MS)] +
               [frame(t) for t in range(3050, 3500, 50)])
    kinds = [(o.kind, o.event_id) for o in out]
    assert kinds == [("before", "a"), ("pair", "a")]
    pair = out[-1]
    # newest frame with stamp <= 1000 - 100 ms; oldest frame with stamp >= 2000 + 300 ms
    assert pair.before.stamp_ns == 900 * MS
    assert pair.after.stamp_ns == 2300 * MS
    assert pair.expected_action == "open" and pair.status == "ok"


def test_exact_boundaries_are_inclusive():
    p = make(pre=100, post=300)
    out = feed(p, [frame(900), frame(950), EventPhase("start", "a", 1000 * MS), frame(1000),
                   EventPhase("end", "a", 1500 * MS), frame(1700), frame(1800), frame(1850)])
    pair = out[-1]
    assert pair.before.stamp_ns == 900 * MS and pair.after.stamp_ns == 1800 * MS


def test_before_waits_for_a_later_frame_and_after_waits_for_the_settle_time():
    p = make(pre=0, post=300)
    assert feed(p, [frame(0), EventPhase("start", "a", 10 * MS)]) == []  # a frame <= 10 ms may still come
    out = feed(p, [frame(10)])
    assert out[0].kind == "before" and out[0].before.stamp_ns == 10 * MS
    assert feed(p, [EventPhase("end", "a", 500 * MS), frame(600), frame(799)]) == []
    out = feed(p, [frame(800)])
    assert out[0].kind == "pair" and out[0].after.stamp_ns == 800 * MS


def test_events_that_overtake_frames_wait_for_them():
    """The end arrives before the frames around the start were processed (a backlog on the camera
    topic): the before frame must still be the newest frame <= start - pre_offset."""
    p = make(pre=100, post=100)
    out = feed(p, [frame(0), EventPhase("start", "a", 1000 * MS), EventPhase("end", "a", 1500 * MS)])
    assert out == []  # nothing is known yet: the frames up to 0.9 s have not arrived
    out = feed(p, [frame(t) for t in range(100, 2001, 100)])
    pair = [o for o in out if o.kind == "pair"][0]
    assert pair.before.stamp_ns == 900 * MS and pair.after.stamp_ns == 1600 * MS
    # and when frames never catch up, the event is still closed with what there is
    p = make(pre=100, post=100, after_wait_s=1.0)
    feed(p, [frame(0), EventPhase("start", "b", 1000 * MS), EventPhase("end", "b", 1500 * MS)])
    out = p.flush()
    assert [o.kind for o in out] == ["before", "error"]
    assert out[1].status == "no_after_frame" and out[1].before.stamp_ns == 0


def test_out_of_order_frames_are_sorted_by_stamp():
    p = make(pre=0, post=0)
    out = feed(p, [frame(100), frame(300), frame(200), EventPhase("start", "a", 250 * MS),
                   EventPhase("end", "a", 260 * MS)])
    pair = [o for o in out if o.kind == "pair"][0]
    assert pair.before.stamp_ns == 200 * MS and pair.after.stamp_ns == 300 * MS
    assert p.buffer.stats.out_of_order == 1


def test_overlapping_events_by_id():
    p = make(pre=0, post=0)
    out = feed(p, [frame(0), frame(100), EventPhase("start", "a", 100 * MS), frame(200),
                   EventPhase("start", "b", 200 * MS), frame(300), EventPhase("end", "a", 300 * MS), frame(400),
                   EventPhase("end", "b", 400 * MS)])
    pairs = {o.event_id: o for o in out if o.kind == "pair"}
    assert pairs["a"].before.stamp_ns == 100 * MS and pairs["a"].after.stamp_ns == 300 * MS
    assert pairs["b"].before.stamp_ns == 200 * MS and pairs["b"].after.stamp_ns == 400 * MS


def test_end_without_id_closes_the_latest_open_start():
    p = make(pre=0, post=0)
    out = feed(p, [frame(0), EventPhase("start", None, 0), frame(100), EventPhase("start", None, 100 * MS),
                   frame(200), EventPhase("end", None, 200 * MS)])
    pair = [o for o in out if o.kind == "pair"][0]
    assert pair.event_id == "auto-000002" and pair.before.stamp_ns == 100 * MS
    assert p.open_events == 1


def test_errors_have_statuses():
    p = make(pre=0, post=0, max_open_events=2, max_event_duration_s=5.0, after_wait_s=1.0)
    out = feed(p, [EventPhase("end", "ghost", 0)])
    assert out[0].status == "end_without_start"
    out = feed(p, [EventPhase("start", "early", 0)])  # no frame at all yet
    assert out == []
    out = feed(p, [frame(50)])
    assert out[0].status == "no_before_frame" and "no frame" in out[0].detail
    assert feed(p, [EventPhase("end", "early", 60 * MS)]) == []  # answered already: one result per event
    feed(p, [EventPhase("start", "x", 100 * MS), EventPhase("start", "y", 100 * MS)])
    out = feed(p, [EventPhase("start", "z", 100 * MS)])
    assert out[0].status == "dropped"
    assert feed(p, [EventPhase("start", "x", 100 * MS)]) == []  # x is open: it will be answered once
    out = feed(p, [EventPhase("end", "x", 10 * MS)])
    assert out[0].status == "end_before_start"
    assert feed(p, [EventPhase("end", "z", 200 * MS)]) == []  # z was answered (dropped): its end is not
    out = p.expire(100 * MS + 6_000 * MS)
    assert [(o.event_id, o.status) for o in out] == [("y", "timeout")]
    assert p.stats.errors == {"end_without_start": 1, "no_before_frame": 1, "dropped": 1, "end_before_start": 1,
                              "timeout": 1}
    assert p.stats.absorbed == {"end_of_answered_event": 2, "duplicate_start": 1}


def test_after_frame_that_never_comes():
    p = make(pre=0, post=100, after_wait_s=1.0)
    feed(p, [frame(0), frame(10), EventPhase("start", "a", 5 * MS), EventPhase("end", "a", 50 * MS)])
    assert p.expire(500 * MS) == []
    out = p.expire(1200 * MS)
    assert out[0].status == "no_after_frame" and out[0].before.stamp_ns == 0


def test_an_after_frame_stamped_long_after_the_settle_time_is_late_not_taken():
    """The camera fell silent after the end: the next frame (5 s later) shows a later scene. It
    is answered `late_after_frame`, never paired; a frame within after_wait still pairs."""
    p = make(pre=0, post=100, after_wait_s=1.0)
    out = feed(p, [frame(0), EventPhase("start", "a", 5 * MS), frame(10), EventPhase("end", "a", 50 * MS),
                   frame(5_150)])
    assert [(o.event_id, o.status) for o in out if o.kind != "before"] == [("a", "late_after_frame")]
    assert "5.0 s later, more than after_wait 1 s" in out[-1].detail
    out = feed(p, [EventPhase("start", "b", 5_200 * MS), frame(5_250), EventPhase("end", "b", 5_300 * MS),
                   frame(6_300)])
    assert [(o.event_id, o.status) for o in out if o.kind != "before"] == [("b", "ok")]


def test_flush_at_end_of_recording():
    p = make(pre=0, post=0)
    feed(p, [frame(0), EventPhase("start", "a", 0), frame(10)])
    out = p.flush()
    assert out[0].status == "timeout"


def test_clock_jump_back_clears_buffer_and_fails_open_events():
    p = make(pre=0, post=0)
    feed(p, [frame(5000), frame(5100), EventPhase("start", "a", 5100 * MS), frame(5200)])
    out = feed(p, [frame(100)])  # bag loop / simulator reset
    assert [o.status for o in out] == ["clock_jump"]
    assert len(p.buffer) == 1 and p.buffer.stats.clock_jumps == 1
    out = feed(p, [EventPhase("start", "b", 100 * MS), frame(200), EventPhase("end", "b", 200 * MS)])
    assert out[-1].kind == "pair" and out[-1].before.stamp_ns == 100 * MS


def test_buffer_bounds_age_count_and_bytes():
    b = SnapshotBuffer(max_age_ns=1000 * MS, max_frames=5, max_bytes=10**9)
    for t in range(0, 2000, 100):
        b.add(frame(t))
    assert len(b) == 5 and b.oldest_ns == 1500 * MS
    b = SnapshotBuffer(max_age_ns=1000 * MS, max_frames=100, max_bytes=10**9, jump_back_ns=5000 * MS)
    for t in range(0, 3000, 100):
        b.add(frame(t))
    assert b.oldest_ns == 1900 * MS
    b.add(frame(1000))  # older than the buffer, but no clock jump: refused
    assert b.stats.too_old == 1 and b.stats.clock_jumps == 0 and b.oldest_ns == 1900 * MS
    b.add(frame(-3000))  # further back than jump_back_ns: a new time line
    assert b.stats.clock_jumps == 1 and len(b) == 1
    b = SnapshotBuffer(max_age_ns=10**12, max_frames=100, max_bytes=35)
    for t in range(10):
        b.add(frame(t, nbytes=10))
    assert len(b) == 3 and b.nbytes == 30


def test_duplicate_stamp_replaces_frame():
    b = SnapshotBuffer()
    b.add(Frame(1, "old", nbytes=5))
    b.add(Frame(1, "new", nbytes=7))
    assert len(b) == 1 and b.newest_at_or_before(1).payload == "new" and b.nbytes == 7


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError):
        PairingConfig(pre_offset_s=-1)
    with pytest.raises(ValueError):
        SnapshotBuffer(max_frames=0)


def test_a_silent_camera_gives_no_stale_before_frame():
    p = make(pre=100, post=0, max_before_age_s=2.0)
    out = feed(p, [frame(0), EventPhase("start", "late", 5_000 * MS), frame(5_500)])  # silent for 5.5 s
    assert [(o.event_id, o.status) for o in out] == [("late", "no_before_frame")]
    assert "camera was silent" in out[0].detail and "4.9 s" in out[0].detail
    out = feed(p, [EventPhase("start", "fresh", 6_000 * MS), frame(6_100), EventPhase("end", "fresh", 6_100 * MS),
                   frame(6_200)])
    assert out[0].kind == "before" and out[0].before.stamp_ns == 5_500 * MS


def test_events_and_frames_far_from_the_data_clock_are_refused():
    p = make(pre=0, post=0, max_stamp_skew_s=60.0)
    feed(p, [frame(1000)])
    out = p.on_event(EventPhase("start", "future", 1_000_000 * 1000 * MS), received_ns=1000 * MS)
    assert out[0].status == "bad_event" and "max_stamp_skew" in out[0].detail
    assert p.open_events == 0  # it does not sit there forever
    assert p.on_event(EventPhase("end", "future", 1_000_000 * 1000 * MS), received_ns=1000 * MS) == []
    # a glitch frame 11 days ahead mid-event: a clock jump, and never an after frame
    feed(p, [EventPhase("start", "a", 1000 * MS), frame(1100)])
    out = feed(p, [frame(1100 + 11 * 86_400_000)])
    assert [(o.event_id, o.status) for o in out] == [("a", "clock_jump")] and len(p.buffer) == 0
    out = feed(p, [EventPhase("end", "a", 1200 * MS), frame(1300)])
    assert out == []  # answered already
    assert p.stats.frames_ahead == 1


def test_property_every_event_id_gets_exactly_one_answer_and_memory_stays_bounded():
    """Random interleavings of frames and events: duplicates, reordering, past and future stamps,
    missing ids, storms. Every id ever seen is answered once, nothing raises, state is bounded."""
    import random

    for trial in range(60):
        rnd = random.Random(trial)
        p = make(pre=rnd.choice([0, 50, 100]), post=rnd.choice([0, 100, 300]), max_open_events=rnd.choice([2, 8, 32]),
                 max_event_duration_s=5.0, after_wait_s=1.0, max_stamp_skew_s=60.0)
        answers: dict[str, int] = {}
        seen: set[str] = set()
        t = 1000
        now = 0
        for _ in range(400):
            r = rnd.random()
            if r < 0.45:
                jitter = rnd.choice([0, 0, 0, -30, 20, -2000, 86_400_000 * 11]) if rnd.random() < 0.05 else 0
                t += rnd.choice([10, 33, 50, 100])
                outs = p.on_frame(frame(max(0, t + jitter)))
            elif r < 0.9:
                eid = rnd.choice([f"e{rnd.randrange(40)}", None]) if rnd.random() < 0.9 else "dup"
                stamp = rnd.choice([t, t - 500, t + 200, None, t + 10**8, 0])
                ev = EventPhase(rnd.choice(["start", "end"]), eid, None if stamp is None else max(0, stamp) * MS,
                                rnd.choice([None, "open"]))
                if eid is not None:
                    seen.add(eid)
                outs = p.on_event(ev, received_ns=t * MS)
            else:
                now = max(now, t) + rnd.choice([0, 500, 3000, 7000])
                outs = p.expire(now * MS)
            for o in outs:
                if o.kind != "before" and o.event_id not in ("unknown",) and not o.event_id.startswith("auto-"):
                    answers[o.event_id] = answers.get(o.event_id, 0) + 1
            assert p.open_events <= p.cfg.max_open_events
        for o in p.flush():
            if o.kind != "before" and o.event_id != "unknown" and not o.event_id.startswith("auto-"):
                answers[o.event_id] = answers.get(o.event_id, 0) + 1
        assert all(n == 1 for n in answers.values()), (trial, {k: n for k, n in answers.items() if n != 1})
        assert set(answers) == seen, (trial, seen - set(answers))
        assert p.open_events == 0 and len(p._answered) <= 10_000


def test_frame_gaps_count_missing_frames_with_and_without_the_camera_rate():
    from cde_ros.core.stamps import FrameGaps

    ms = 10**6
    estimated, known = FrameGaps(), FrameGaps(expected_rate_hz=30.0)
    sent = [i * 33 * ms for i in range(300)]
    arrived = [t for i, t in enumerate(sent) if i % 10 != 5]  # every tenth frame lost
    for t in arrived:
        estimated.observe(t)
        known.observe(t)
    assert known.missing == 30 and known.received == 270
    assert 25 <= estimated.missing <= 30  # the first 20 intervals teach it the period
    assert known.take() == (270, 30) and known.take() == (0, 0)
    known.observe(0)  # a replay restarting: stamps going back are not a gap
    assert known.missing == 30


def test_a_models_pairing_comes_from_its_model_json_and_is_checked_like_any_other():
    """`PairingConfig.of_model`: what evaluation and the benchmarks pair a model's bags with."""
    assert PairingConfig.of_model({"model_id": "x"}) == PairingConfig()  # written before pairing was recorded
    meta = {"pairing": {"pre_offset_s": 0.25, "post_settle_s": 0.5}}
    assert PairingConfig.of_model(meta) == PairingConfig(pre_offset_s=0.25, post_settle_s=0.5)
    with pytest.raises(ValueError, match="post_settle_s must be >= 0"):
        PairingConfig.of_model({"pairing": {"post_settle_s": -1.0}})
    with pytest.raises(TypeError):
        PairingConfig.of_model({"pairing": {"no_such_setting": 1}})
