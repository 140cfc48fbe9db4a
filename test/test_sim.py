"""The MuJoCo household simulator: real scenes rendered headless, real episodes, real bags."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import run_cli

from cde_ros.core.actions import ACTIONS
from cde_ros.sim.episodes import Episode, EpisodeError, EpisodeSpec
from cde_ros.sim.fixtures import CLASSES
from cde_ros.sim.fixtures.base import FAILURE_MODES
from cde_ros.sim.scene import Scene, SceneConfig
from cde_ros.sim.styles import DOMAINS, sample_style
from cde_ros.sim.tasks import COMPOSITIONAL_HOLDOUT, SPLITS, SYSTEMATIC_CLASSES, Draw, combinations

SMALL = SceneConfig(width=160, height=120, distractors=(1, 2))


def _episode(name: str, label: str, attempted: str, seed: int, cfg: SceneConfig = SMALL,
             failure: str | None = None) -> Episode:
    for attempt in range(20):
        rng = np.random.default_rng([seed, attempt])
        try:
            ep = Episode(EpisodeSpec(name, label, attempted, failure), sample_style(rng), rng, cfg)
            ep.check_reach()
            return ep
        except EpisodeError:
            continue
    raise AssertionError(f"{name} {attempted} could not be played in 20 scenes")


def _fixture_pixels(scene: Scene, state: dict) -> np.ndarray:
    scene.apply(state)
    return scene.render().astype(np.int16)


def test_vocabulary_is_big_enough_and_uses_the_project_actions():
    actions = {a for cls in CLASSES.values() for a in cls.specs}
    assert len(CLASSES) >= 14
    assert actions <= set(ACTIONS) and len(actions) >= 8 and "none" not in actions
    # every action comes with its opposite
    from cde_ros.core.actions import OPPOSITE
    assert all(OPPOSITE[a] in actions for a in actions)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_action_of_every_class_visibly_changes_the_fixture(name):
    """Set each action's precondition, render; set its result, render: the fixture's pixels
    change (the arm stays where it is), and the same state renders the same image twice."""
    rng = np.random.default_rng(11)
    fixture = CLASSES[name]("f")
    scene = Scene(fixture, sample_style(rng), rng, SMALL)
    try:
        for action, spec in fixture.specs.items():
            before = fixture.initial_state(action, rng)
            after = {**before, spec.var: spec.end}
            if name == "pot" and action in ("open", "close"):
                after["lz"] = 0.0 if action == "open" else fixture.lz_on
            a = _fixture_pixels(scene, before)
            again = _fixture_pixels(scene, before)
            b = _fixture_pixels(scene, after)
            assert np.array_equal(a, again), f"{name}: the same state rendered differently"
            changed = np.mean(np.abs(b - a).max(axis=2) > 12)
            assert changed > 0.002, f"{name} {action}: only {changed:.4f} of the pixels changed"
    finally:
        scene.close()


def test_a_successful_episode_changes_the_fixture_and_the_arm_ends_elsewhere():
    ep = _episode("drawer", "open", "open", seed=3)
    try:
        q_start = ep.scene.data.qpos[ep.scene.ik.qpos].copy()
        frames = list(ep.frames())
        q_end = ep.scene.data.qpos[ep.scene.ik.qpos].copy()
    finally:
        ep.close()
    planned, real, *_ = ep.state_at(ep.duration)
    assert ep.state0["open"] == 0.0 and real["open"] == 1.0
    assert np.abs(q_end - q_start).max() > 0.1  # the arm rests in another pose
    assert ep.truth.ik_max_error_m < 0.015  # it really held the handle
    ts = [t for t, _ in frames]
    assert ts == sorted(ts) and ts[0] < ep.start_s < ep.end_s < ts[-1]
    assert abs(np.mean(np.diff(ts)) - 0.1) < 0.01  # the camera's 10 Hz


def test_a_twin_stands_beside_the_fixture_as_it_was_before_and_is_never_touched():
    """SceneConfig.twin: a second drawer on the side away from the arm, shut like the opened one
    was, still shut at the end, its box in the truth beside the target's; the target and the arm
    are placed as without the twin (its draws come after theirs; the props' and the camera shake's
    after them change)."""
    from dataclasses import replace

    from cde_ros.sim.scene import TWIN_PREFIX

    plain = _episode("drawer", "open", "open", seed=3)
    ep = _episode("drawer", "open", "open", seed=3, cfg=replace(SMALL, twin=True))
    try:
        list(plain.frames(around_event_only=True))
        list(ep.frames(around_event_only=True))
        twin_open = ep.scene._vars[f"{TWIN_PREFIX}:open"][0]  # ("joint", qpos address, lo, hi)
        assert ep.scene.data.qpos[twin_open[1]] == twin_open[2]  # still shut
        _, real, *_ = ep.state_at(ep.duration)
        assert ep.state0["open"] == 0.0 and real["open"] == 1.0
        side = np.sign(ep.scene.arm_base[0] - ep.fixture.origin[0])
        assert np.sign(ep.scene.twin.origin[0] - ep.fixture.origin[0]) == -side  # away from the arm
        assert np.allclose(ep.fixture.origin, plain.fixture.origin) and np.allclose(ep.scene.arm_base,
                                                                                     plain.scene.arm_base)
    finally:
        ep.close()
        plain.close()
    # the same box up to the camera's shake (drawn after the twin)
    assert plain.truth.twin_box is None and np.allclose(ep.truth.target_box, plain.truth.target_box, atol=4)
    box, twin = ep.truth.target_box, ep.truth.twin_box
    assert twin is not None and (twin[0] + twin[2] <= box[0] + 2 or twin[0] >= box[0] + box[2] - 2)  # beside it


@pytest.mark.parametrize("name,attempted,mode", [("drawer", "open", "slip"), ("cabinet", "close", "blocked"),
                                                 ("lamp", "turn_on", "miss"), ("mug", "fill", "dry"),
                                                 ("box", "push_left", "touch")])
def test_a_failed_attempt_moves_the_arm_but_leaves_the_fixture_as_it_was(name, attempted, mode):
    ep = _episode(name, "none", attempted, seed=5, failure=mode)
    try:
        q_start = ep.scene.data.qpos[ep.scene.ik.qpos].copy()
        real_seen = []
        for t in np.linspace(0, ep.duration, 60):
            _, real, *_ = ep.state_at(float(t))
            real_seen.append(real)
        for _ in ep.frames():
            pass
        q_end = ep.scene.data.qpos[ep.scene.ik.qpos].copy()
    finally:
        ep.close()
    assert ep.failure == mode
    var = CLASSES[name].specs[attempted].var
    assert real_seen[-1][var] == ep.state0[var]  # nothing changed in the end
    moved = max(abs(r[var] - ep.state0[var]) for r in real_seen)
    assert (moved > 0.02) == (mode == "blocked")  # only a blocked part gives a little on the way
    assert np.abs(q_end - q_start).max() > 0.1


def test_failure_modes_are_defined_for_every_action():
    for cls in CLASSES.values():
        for spec in cls.specs.values():
            assert spec.failures and set(spec.failures) <= set(FAILURE_MODES)


def test_splits_hold_out_combinations_and_classes():
    train, val, comp, syst = (set(combinations(s)) for s in SPLITS)
    assert train == val and train and comp and syst
    assert not train & comp and not train & syst and not comp & syst
    assert comp == set(COMPOSITIONAL_HOLDOUT)
    assert {c for c, _ in syst} == set(SYSTEMATIC_CLASSES)
    assert not {c for c, _ in train} & set(SYSTEMATIC_CLASSES)
    per_action = Counter(a for _, a in train)
    assert all(per_action[a] >= 2 for a in {a for _, a in comp | syst})  # every held-out action is seen
    # a split's episodes: its combinations, about none_fraction failed attempts at them
    draw = Draw("comp", "train", seed=0, none_fraction=0.25)
    specs = [draw.spec(i) for i in range(200)]
    assert {(s.obj_class, s.attempted) for s in specs} <= comp
    assert 0.15 < np.mean([s.action == "none" for s in specs]) < 0.35
    assert all(s.action in ("none", s.attempted) for s in specs)
    assert [draw.spec(i) for i in range(5)] == specs[:5]  # deterministic


def test_the_held_out_style_shares_no_family_or_camera_placement_with_training():
    seen = {d: {"floor": set(), "wall": set(), "counter": set(), "camera": set()} for d in DOMAINS}
    for d in DOMAINS:
        rng = np.random.default_rng(0)
        for _ in range(300):
            s = sample_style(rng, d)
            seen[d]["floor"].add(s.floor.family)
            seen[d]["wall"].add(s.wall.family)
            seen[d]["counter"].add(s.counter.family)
            seen[d]["camera"].add(s.camera.name)
    for k in ("floor", "wall", "counter", "camera"):
        for d in ("train", "varied", "randomized"):
            assert seen[d][k] and seen["heldout"][k] and not seen[d][k] & seen["heldout"][k], (d, k)


def test_the_varied_style_is_wider_than_training_and_stays_clear_of_the_held_out_views():
    """`varied` (more training diversity) spans more than `train` but never reaches a held-out
    camera view (36-48 degrees to the side below 18 degrees of elevation, or above 64) or light
    direction (70-110 degrees to the side, below 38 degrees)."""
    views = {}
    for d in DOMAINS:
        rng = np.random.default_rng(1)
        styles = [sample_style(rng, d) for _ in range(400)]
        views[d] = np.degrees([[s.camera.azimuth, s.camera.elevation, s.lighting.key_azimuth,
                                s.lighting.key_elevation] for s in styles])
    train, varied, heldout = views["train"], views["varied"], views["heldout"]
    assert np.ptp(varied[:, 0]) > np.ptp(train[:, 0]) + 8 and np.ptp(varied[:, 1]) > np.ptp(train[:, 1]) + 8
    low, top = heldout[heldout[:, 1] < 30], heldout[heldout[:, 1] > 30]
    assert low[:, 1].max() < varied[:, 1].min() and varied[:, 1].max() < top[:, 1].min()
    assert np.abs(varied[:, 0]).max() < np.abs(low[:, 0]).min()
    assert np.abs(varied[:, 2]).max() < np.abs(heldout[:, 2]).min() and varied[:, 3].min() > heldout[:, 3].max()
    rng = np.random.default_rng(2)
    assert {sample_style(rng, "varied", camera=c).camera.name for c in ("wide_left", "wide_right")} == {
        "wide_left", "wide_right"}


def test_the_randomized_style_surrounds_the_held_out_views_and_lights_but_never_draws_them():
    """`randomized` (domain randomisation) spans wider camera and light directions than `varied`,
    on both sides of the held-out ones, and darker, tinted light; yet no draw falls within 3
    degrees of a held-out camera placement's or light direction's range."""
    def draws(domain, n=1500):
        rng = np.random.default_rng(2)
        return [sample_style(rng, domain) for _ in range(n)]

    def directions(styles):
        return np.degrees([[s.camera.azimuth, s.camera.elevation, s.lighting.key_azimuth, s.lighting.key_elevation]
                           for s in styles])

    rand, varied, held = draws("randomized"), directions(draws("varied", 400)), directions(draws("heldout", 400))
    r = directions(rand)
    for axis in range(4):
        assert np.ptp(r[:, axis]) > np.ptp(varied[:, axis]) + 10, axis
    low, top = held[held[:, 1] < 30], held[held[:, 1] > 30]

    def inside(points, box_of, cols, margin=3.0):
        lo, hi = box_of.min(0) - margin, box_of.max(0) + margin
        return np.all((points[:, cols] >= lo) & (points[:, cols] <= hi), axis=1)

    cam = np.column_stack([np.abs(r[:, 0]), r[:, 1]])
    light = np.column_stack([np.abs(r[:, 2]), r[:, 3]])
    assert not inside(cam, np.column_stack([np.abs(low[:, 0]), low[:, 1]]), [0, 1]).any()
    assert not inside(cam, np.column_stack([np.abs(top[:, 0]), top[:, 1]]), [0, 1]).any()
    assert not inside(light, np.column_stack([np.abs(held[:, 2]), held[:, 3]]), [0, 1]).any()
    # ... while training views now lie on every side of them: lower, higher, nearer the front, further out
    assert (cam[:, 1] < low[:, 1].min()).any() and ((cam[:, 0] > np.abs(low[:, 0]).max()) & (cam[:, 1] < 22)).any()
    assert ((cam[:, 0] < 10) & (cam[:, 1] > top[:, 1].max())).any() and ((cam[:, 0] < 10) & (cam[:, 1] < 60)).any()
    # darker surfaces and tinted light than `varied` draws
    tinted = [s for s in rand if max(s.lighting.key_rgb) > 0 and
              min(s.lighting.key_rgb) / max(s.lighting.key_rgb) < 0.75 and s.lighting.key_rgb[2] > s.lighting.key_rgb[0]]
    assert tinted and min(np.mean(s.wall.colors[0]) for s in rand) < 40
    assert {sample_style(np.random.default_rng(3), "randomized", camera=c).camera.name
            for c in ("rand_low", "rand_high")} == {"rand_low", "rand_high"}


def test_record_sim_refuses_a_camera_placement_of_another_style_in_one_sentence(tmp_path):
    """`--camera` must name a placement of the chosen style (a held-out one for training, a
    training one for `varied`, nonsense, an empty-looking or huge name): one sentence, nothing
    written."""
    for style, camera in (("varied", "front"), ("train", "low_left"), ("heldout", "wide_front"),
                          ("varied", "../../etc"), ("train", "x" * 5000), ("varied", " ")):
        proc = run_cli("record-sim", str(tmp_path / "bag"), "--style", style, "--camera", camera, "--episodes", "1",
                       check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert f"is not one of the {style} style's placements" in proc.stderr
        assert not (tmp_path / "bag").exists()
    sample = {"varied": ("wide_left", "wide_front", "wide_right"), "train": ("front", "front_left", "front_right",
                                                                           "high")}
    rng = np.random.default_rng(0)
    for style, names in sample.items():  # and the names the error lists are the ones that work
        assert {sample_style(rng, style, camera=c).camera.name for c in names} == set(names)


def test_record_sim_draws_each_episode_in_the_style_a_caller_gives(tmp_path):
    """The hook the factor diagnostic (benchmarks/style_factors.py) records with: the training
    style with the held-out style's top-down camera, and the ground truth says so."""
    from dataclasses import replace

    from cde_ros.data.bags import read_json_topic
    from cde_ros.sim.record import SimRecordConfig, record_sim

    calls = []

    def style(rng, cfg):
        calls.append(cfg.seed)
        top = sample_style(np.random.default_rng(int(rng.integers(2**32))), "heldout", camera="top").camera
        return replace(sample_style(rng, "train"), camera=top)

    bag = tmp_path / "mixed"
    record_sim(bag, SimRecordConfig(episodes=2, seed=5, width=96, height=72, around_event_only=True), progress=False,
               log=lambda m: None, style=style)
    truth = read_json_topic(bag, "/sim/ground_truth")
    assert len(truth) == 2 and len(calls) >= 2 and set(calls) == {5}
    assert {t["style"] for t in truth} == {"train"} and {t["camera"] for t in truth} == {"top"}


def test_record_sim_writes_bags_the_trainer_pairs(tmp_path):
    """Both storages and image formats; the pairs are the episodes, labelled as the ground truth."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.data.bags import read_pairs
    from cde_ros.data.pairing import PairingConfig

    ts = get_typestore(Stores.ROS2_KILTED)
    for storage, image, size in (("mcap", "raw", (640, 480)), ("sqlite3", "both", (320, 240))):
        bag = tmp_path / f"sim_{storage}"
        proc = run_cli("record-sim", str(bag), "--episodes", "3", "--seed", "4", "--storage", storage, "--image", image,
                       "--width", str(size[0]), "--height", str(size[1]), "--none-fraction", "0.34", "--quiet")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["episodes"] == 3 and summary["frames"] > 60 and summary["ms_per_frame"] > 0
        truth, sizes = [], set()
        with Reader(bag) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            assert topics["/cde/event"] == "std_msgs/msg/String"
            assert ("/camera/image_raw" in topics) == (image in ("raw", "both"))
            assert ("/camera/image_raw/compressed" in topics) == (image in ("compressed", "both"))
            for conn, _, raw in reader.messages():
                msg = ts.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == "/sim/ground_truth":
                    truth.append(json.loads(msg.data))
                elif conn.topic == "/camera/image_raw":
                    sizes.add((msg.width, msg.height, msg.encoding))
                    assert msg.header.stamp.sec >= 1  # sim time from 1 s on
        assert len(truth) == 3 and {t["style"] for t in truth} == {"train"}
        if image != "compressed":
            assert sizes == {(*size, "rgb8")}
        pairs, reports = read_pairs([bag], Preprocessing(64), PairingConfig(), progress=False, log=lambda m: None)
        assert len(pairs) == 3 and not reports[0].skipped
        assert pairs.actions == [t["action"] for t in truth] and pairs.event_ids == [t["event_id"] for t in truth]


def test_an_episode_whose_first_twenty_scenes_the_arm_cannot_reach_is_still_recorded(tmp_path):
    """The varied style's train episode 3397 (seed 8, a pot close) is reached first in its 26th
    scene: the suite's train_varied split at --scale 2 stopped there when 20 scenes were drawn."""
    assert Draw("train", "varied", 8, 0.2).spec(3397).obj_class == "pot"
    bag = tmp_path / "pot"
    proc = run_cli("record-sim", str(bag), "--split", "train", "--style", "varied", "--seed", "8", "--first-episode",
                   "3397", "--episodes", "1", "--camera", "wide_right", "--width", "64", "--height", "48",
                   "--around-event-only", "--quiet")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["redrawn_episodes"] >= 20


def test_an_episode_no_scene_can_play_is_one_sentence_and_the_bag_keeps_the_episodes_before_it(tmp_path):
    """With fewer scenes allowed than the pot above needs (MAX_ATTEMPTS patched in the recorder's
    own process), the recording stops there in one sentence, and the episode before it is in the bag."""
    import subprocess
    import sys

    from cde_ros.data.bags import read_json_topic

    bag = tmp_path / "stops"
    code = ("import sys; import cde_ros.sim.record as r; r.MAX_ATTEMPTS = 20; from cde_ros.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "record-sim", str(bag), "--split", "train", "--style", "varied",
                           "--seed", "8", "--first-episode", "3396", "--episodes", "2", "--camera", "wide_right",
                           "--width", "64", "--height", "48", "--around-event-only", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "episode 3397 (pot close) could not be played" in proc.stderr
    assert [t["event_id"] for t in read_json_topic(bag, "/sim/ground_truth")] == ["train-varied-s8-03396"]


def test_recording_around_events_only_keeps_exactly_the_frames_pairing_picks(tmp_path):
    """--around-event-only renders only the frames before each start and from each end on: those
    frames are the full recording's (same stamps, same pixels), and the pairs are the same."""
    from rosbags.highlevel import AnyReader

    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.data.bags import read_pairs
    from cde_ros.data.pairing import PairingConfig

    frames, pairs = {}, {}
    for mode in ("all", "around"):
        bag = tmp_path / mode
        run_cli("record-sim", str(bag), "--episodes", "3", "--seed", "2", "--rate", "5", "--width", "160", "--height",
                "120", "--quiet", *(["--around-event-only"] if mode == "around" else []))
        with AnyReader([bag]) as reader:
            conns = [c for c in reader.connections if c.topic == "/camera/image_raw"]
            frames[mode] = {}
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                frames[mode][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = bytes(msg.data)
        got, _ = read_pairs([bag], Preprocessing(input_size=32), PairingConfig(), "/camera/image_raw", "/cde/event",
                            None, None, progress=False, log=lambda m: None)
        pairs[mode] = got
    assert 0 < len(frames["around"]) < len(frames["all"]) / 2
    assert all(frames["all"].get(k) == v for k, v in frames["around"].items())
    assert pairs["around"].actions == pairs["all"].actions and len(pairs["all"]) == 3
    assert (pairs["around"].before == pairs["all"].before).all() and (pairs["around"].after == pairs["all"].after).all()


def test_record_sim_refuses_bad_arguments_in_one_sentence(tmp_path):
    for args, expect in ((["--episodes", "0"], "episodes must be at least 1"), (["--rate", "0"], "camera rate"),
                         (["--rate", "-5"], "camera rate"), (["--width", "4"], "image size"),
                         (["--none-fraction", "1.5"], "none_fraction")):
        proc = run_cli("record-sim", str(tmp_path / "bag"), *args, "--quiet", check=False)
        assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "bag").exists()
    (tmp_path / "taken").mkdir()
    proc = run_cli("record-sim", str(tmp_path / "taken"), "--episodes", "1", "--quiet", check=False)
    assert proc.returncode == 2 and "exists" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unusable_gl_backend_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    proc = run_cli("record-sim", str(tmp_path / "bag"), "--episodes", "1", "--quiet", check=False)
    assert proc.returncode == 2 and "MUJOCO_GL='vulkan'" in proc.stderr and "Traceback" not in proc.stderr
