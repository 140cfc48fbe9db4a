import numpy as np
import pytest

from cde_ros.synthetic import scenes as s
from cde_ros.core.actions import ACTIONS, OPPOSITE


def test_vocabulary_has_opposing_pairs_and_none():
    acting = [a for a in ACTIONS if a != "none"]
    assert len(acting) >= 8 and "none" in ACTIONS
    assert all(OPPOSITE[OPPOSITE[a]] == a for a in acting)
    assert len(s.OBJECT_CLASSES) >= 10


def test_splits_are_disjoint_and_cover_everything():
    iid, comp, syst = (set(s.combinations(x)) for x in ("iid", "comp", "syst"))
    acting = lambda c: {x for x in c if x[1] != "none"}  # noqa: E731
    assert not acting(iid) & acting(comp) and not acting(iid) & acting(syst)
    train_objects = {o for o, _ in iid}
    train_actions = {a for _, a in iid}
    # compositional: every held-out action and object is seen in training with something else
    assert {o for o, _ in comp} <= train_objects and {a for _, a in comp} <= train_actions
    # systematic: classes never seen in training, actions all seen
    assert not {o for o, _ in syst} & train_objects and {a for _, a in syst} <= train_actions
    assert all(sum(a == b for _, b in acting(iid)) >= 2 for a in train_actions - {"none"})


def test_generation_is_deterministic_by_seed():
    a = s.generate_pairs("comp", 12, s.SceneConfig(clutter=True, size=(64, 64)), seed=5)
    b = s.generate_pairs("comp", 12, s.SceneConfig(clutter=True, size=(64, 64)), seed=5)
    c = s.generate_pairs("comp", 12, s.SceneConfig(clutter=True, size=(64, 64)), seed=6)
    np.testing.assert_array_equal(a.before, b.before)
    assert a.actions == b.actions and a.objects == b.objects
    assert not np.array_equal(a.before, c.before)
    assert set(zip(a.objects, a.actions)) <= set(s.combinations("comp"))


def test_preconditions_and_actions():
    rng = np.random.default_rng(0)
    for cls in s.OBJECT_CLASSES:
        for act in cls.actions:
            scene = s.make_scene(cls.name, act, s.SceneConfig(), rng)
            b, a = scene.target, scene.after_target
            if act == "open":
                assert not b.is_open and a.is_open
            if act == "close":
                assert b.is_open and not a.is_open
            if act == "turn_on":
                assert not b.is_on and a.is_on
            if act == "fill":
                assert a.fill > b.fill + 0.3
            if act == "push_left":
                assert a.x < b.x - 0.1 and a.x - a.cls.size[0] * a.scale / 2 > 0
    scene = s.make_scene("box", "none", s.SceneConfig(clutter=True), rng)
    assert scene.after_target == scene.target and scene.attempted in s.CLASS_BY_NAME["box"].actions


def test_nuisances_change_the_views_even_when_nothing_happens():
    pairs = s.generate_pairs("iid", 40, s.SceneConfig(clutter=True, size=(64, 64)), seed=1, none_fraction=1.0)
    assert set(pairs.actions) == {"none"}
    diffs = np.abs(pairs.before.astype(int) - pairs.after.astype(int)).mean(axis=(1, 2, 3))
    assert (diffs > 1.0).all()


def test_timed_stream_has_paired_events_in_stamp_order():
    items = list(s.stream("iid", 3, s.SceneConfig(size=(48, 48)), s.StreamConfig(rate_hz=20), seed=0))
    evs = [it for kind, _, it in items if kind == "event"]
    assert [e.phase for e in evs] == ["start", "end"] * 3
    assert all(e1.event_id == e2.event_id and e2.stamp_ns - e1.stamp_ns >= 1.4e9 for e1, e2 in zip(evs[::2], evs[1::2]))
    frames = [t for kind, t, _ in items if kind == "frame"]
    gaps = np.diff(frames) / 1e9
    assert 0.04 < np.median(gaps) < 0.06


def test_random_colours_repaint_objects_only_when_asked():
    def near_palette(o):
        return min(np.abs(np.subtract(o.color, p)).max() for p in o.cls.colors) <= 25

    def scenes(p):
        rng = np.random.default_rng(4)
        cfg = s.SceneConfig(clutter=True, random_color_p=p)
        return [s.make_scene("box", "open", cfg, rng) for _ in range(40)]

    plain, painted = scenes(0.0), scenes(1.0)
    assert all(near_palette(sc.target) and all(near_palette(d) for d in sc.distractors) for sc in plain)
    assert sum(near_palette(sc.target) for sc in painted) < 8
    assert sum(near_palette(d) for sc in painted for d in sc.distractors) < 0.2 * sum(len(sc.distractors) for sc in painted)
    # the change itself is untouched: the box still opens, in whatever colour
    assert all(not sc.target.is_open and sc.after_target.is_open for sc in painted)
    with pytest.raises(ValueError, match="probability"):
        s.SceneConfig(random_color_p=1.5)


def test_random_outlines_change_the_body_only_when_asked():
    def scenes(p):
        rng = np.random.default_rng(4)
        cfg = s.SceneConfig(clutter=True, random_shape_p=p)
        return [s.make_scene("lamp", "turn_on", cfg, rng) for _ in range(40)]

    plain, reshaped = scenes(0.0), scenes(1.0)
    assert {sc.target.cls.shape for sc in plain} == {"tri"}
    assert all(d.cls is s.CLASS_BY_NAME[d.cls.name] for sc in plain for d in sc.distractors)
    assert {sc.target.cls.shape for sc in reshaped} == set(s.BODY_SHAPES)
    # outline only: size, parts and name stay the class's, and the light still turns on
    for sc in reshaped:
        t, c = sc.target, s.CLASS_BY_NAME["lamp"]
        assert (t.cls.name, t.cls.size, t.cls.parts) == (c.name, c.size, c.parts)
        assert not t.is_on and sc.after_target.is_on and sc.after_target.cls == t.cls
    # the rendered views differ from the class outline's
    rng = np.random.default_rng(0)
    sc = next(sc for sc in reshaped if sc.target.cls.shape != "tri")
    b, _ = s.render_pair(sc, s.SceneConfig(clutter=True), rng)
    sc.target.cls = s.CLASS_BY_NAME["lamp"]
    b2, _ = s.render_pair(sc, s.SceneConfig(clutter=True), np.random.default_rng(0))
    assert np.abs(b.astype(int) - b2).max() > 100
    with pytest.raises(ValueError, match="random_shape_p is a probability"):
        s.SceneConfig(random_shape_p=-0.1)
