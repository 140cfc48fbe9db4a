"""Class prototypes in delta space: the unknown_change rule, its threshold, enrolled actions, the
files and model id, `calibrate --unknown` and `enroll` on real bags, and the node's answer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

from cde_ros.model.network import CausalDeltaModel, ModelFileError
from cde_ros.model.prototypes import (FILE, UNKNOWN, Prototypes, auroc, choose_change_threshold,
                                      choose_roi_change_threshold, choose_threshold, enroll, from_pairs, prototype,
                                      roi_changes_of)
from cde_ros.model.where import roi_change


def _axes(*names: str) -> Prototypes:
    """Prototypes along the first unit axes of R^4."""
    return Prototypes(list(names), np.eye(4, dtype=np.float32)[:len(names)], {n: 3 for n in names})


def _wipe(**kw) -> Prototypes:
    """open and close along the first axes of R^4; in a backbone space of R^3, open, close and
    none along its axes and `wipe` enrolled between close and none's negative."""
    bb = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, -1]], np.float32)
    return Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, enrolled=["wipe"],
                      backbone_labels=["open", "close", "none", "wipe"], backbone_vectors=bb, **kw)


def test_a_prototype_is_the_unit_mean_of_unit_examples():
    p = prototype(np.array([[10.0, 0.0], [0.0, 0.1]]))  # the sizes do not weigh: directions do
    assert np.allclose(p, [2 ** -0.5, 2 ** -0.5])
    with pytest.raises(ValueError, match="at least one example"):
        prototype(np.zeros((0, 2)))
    protos = from_pairs(np.array([[1.0, 0], [2, 0], [0, 1], [0, 0.5]]), ["open", "open", "close", "none"],
                        ["open", "close", "none"])
    assert protos.labels == ["open", "close"] and protos.counts == {"open": 2, "close": 1}  # `none` has none


def test_the_rule_keeps_none_flags_far_changes_and_lets_an_enrolled_action_name_them():
    p = _axes("open", "close")
    deltas = np.array([[1.0, 0.1, 0, 0], [0.05, 0.05, 1, 0], [1, 0, 0, 0]])
    answers, sims = p.decide(["open", "open", "none"], deltas, threshold=0.5)
    assert answers == ["open", UNKNOWN, "none"]  # the second points nowhere known; none stays none
    assert sims.shape == (3, 2) and sims[0, 0] > 0.99
    assert p.decide(["open", "open", "none"], deltas, threshold=None)[0] == ["open", "open", "none"]
    # an enrolled `wipe` names the unknown changes whose backbone delta is nearest its prototype;
    # it never takes a known answer, and a change nearer a known label's or none's stays unknown
    w = _wipe(threshold=0.5)
    deltas = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    backbone = np.array([[0, 1, -1.0], [0, 1, -0.9], [0, 1, 0.2], [0, 0, 1.0]])
    assert w.decide(["open"] * 4, deltas, backbone_deltas=backbone)[0] == ["open", "wipe", UNKNOWN, UNKNOWN]
    assert w.enrolled_similarities(backbone).shape == (4, 1)
    with pytest.raises(ValueError, match="backbone deltas"):
        w.decide(["open"] * 4, deltas)
    with pytest.raises(ValueError, match="no prototype"):
        Prototypes(["open"], np.eye(4)[:1], {}, enrolled=["wipe"])
    with pytest.raises(ValueError, match="classifier labels"):
        Prototypes(["open"], np.eye(4)[:1], {}, enrolled=["open"], backbone_labels=["open"],
                   backbone_vectors=np.eye(3)[:1])
    with pytest.raises(ValueError, match="backbone prototype labels"):
        Prototypes(["open"], np.eye(4)[:1], {}, backbone_labels=["open", "none"], backbone_vectors=np.eye(3)[:1])
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        Prototypes(["open"], np.eye(4)[:1], {}, threshold=2.0)


def test_the_threshold_is_the_largest_that_keeps_the_accuracy_share():
    p = _axes("open", "close")
    rng = np.random.default_rng(0)
    # 20 correct open pairs at growing angles from the prototype, 5 none pairs read as none
    angles = np.linspace(0.0, 1.2, 20)
    deltas = np.concatenate([np.stack([np.cos(angles), np.sin(angles), 0 * angles, 0 * angles], 1),
                             rng.normal(size=(5, 4))])
    truth = ["open"] * 20 + ["none"] * 5
    picks = list(truth)
    chosen = choose_threshold(p, picks, deltas, truth, keep=0.8)
    t = chosen["unknown_threshold"]
    v = chosen["validation"]
    assert v["accuracy"]["without"] == 1.0 and v["accuracy"]["with"] >= 0.8
    # exactly the 5 widest of the 25 pairs fall below it: one more would break the 0.8 share
    assert np.sum(np.cos(angles) < t) == 5 and v["actions_read_as_unknown"] == pytest.approx(5 / 20)
    assert choose_threshold(p, picks, deltas, truth, keep=1.0)["unknown_threshold"] <= np.cos(angles[-1]) + 1e-6
    with pytest.raises(ValueError, match="keep"):
        choose_threshold(p, picks, deltas, truth, keep=0.0)


def test_a_pair_read_as_none_with_a_long_delta_is_a_change_an_enrolled_action_may_take():
    deltas = np.array([[0.1, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 2.0], [2.0, 0, 0, 0]])
    picks = ["none", "none", "none", "open"]
    p = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.5, change_threshold=1.0)
    # short: none stays none; long: unknown_change (nothing enrolled); the classifier's action as before
    assert p.decide(picks, deltas)[0] == ["none", UNKNOWN, UNKNOWN, "open"]
    assert p.decide(picks, deltas, threshold=None)[0] == ["none", UNKNOWN, UNKNOWN, "open"]
    off = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.5)
    assert off.decide(picks, deltas)[0] == ["none", "none", "none", "open"]  # no change threshold: as before
    wipe = _wipe(threshold=0.5, change_threshold=1.0)
    # a long none is an unknown change, which the enrolled action names where it is the nearest
    backbone = np.array([[0, 1, -1.0], [0, 1, -1.0], [0, 0, 1.0], [1.0, 0, 0]])
    assert wipe.decide(picks, deltas, backbone_deltas=backbone)[0] == ["none", "wipe", UNKNOWN, "open"]
    with pytest.raises(ValueError, match="delta length"):
        Prototypes(["open"], np.eye(4)[:1], {}, change_threshold=-1.0)


def test_roi_change_is_the_change_inside_the_roi_of_the_frames_the_model_sees():
    before = np.full((128, 128, 3), 100, np.uint8)
    after = before.copy()
    after[64:96, 32:64] = 200  # a 32 x 32 px change: 64 blocks of 4 px, 1/16 of the frame
    # camera 640 x 480: the change lies in x 160-320, y 240-360
    assert roi_change(before, after, [160, 240, 160, 120], 640, 480) == pytest.approx(100.0)
    assert roi_change(before, after, [0, 0, 640, 480], 640, 480) == pytest.approx(100.0)  # its largest blocks
    assert roi_change(before, after, [400, 0, 200, 200], 640, 480) == 0.0  # elsewhere: nothing changed
    half = roi_change(before, after, [0, 0, 640, 480], 640, 480, share=1 / 8)  # the 128 largest: half changed
    assert half == pytest.approx(50.0)
    assert roi_change(before, after, None, 640, 480) is None
    assert roi_change(before, after, [700, 500, 10, 10], 640, 480) is None  # outside the frame
    assert roi_change(before, after, [0.25, 0.5, 0.25, 0.25], 1, 1) == pytest.approx(100.0)  # as fractions
    with pytest.raises(ValueError, match="one size"):
        roi_change(before, after[:64], [0, 0, 10, 10], 640, 480)

    class Pre:  # resizing is the model's; these frames are already its size
        register_max_shift = 0.0

        @staticmethod
        def resize(im):
            return im

    assert roi_changes_of(Pre, [before], [after], [None], (640, 480)) is None
    got = roi_changes_of(Pre, [before, before], [after, after], [[160, 240, 160, 120], None], (640, 480))
    assert got[0] == pytest.approx(100.0) and got[1] is None


def test_a_pair_read_as_none_that_changed_inside_its_roi_is_a_change(tmp_path):
    deltas = np.array([[0.1, 0, 0, 0]] * 4 + [[0, 0, 1.0, 0]])
    picks = ["none", "none", "none", "none", "open"]
    p = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.5, change_threshold=1.0,
                   roi_change_threshold=20.0)
    rois = [5.0, 30.0, None, 30.0, 30.0]
    # a short delta read as none: a change only where the roi changed more than the threshold
    assert p.decide(picks, deltas, roi_changes=rois)[0] == ["none", UNKNOWN, "none", UNKNOWN, UNKNOWN]
    assert p.decide(picks, deltas)[0] == ["none", "none", "none", "none", UNKNOWN]  # no rois: as before
    off = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.5, change_threshold=1.0)
    assert off.decide(picks, deltas, roi_changes=rois)[0] == ["none"] * 4 + [UNKNOWN]  # no roi threshold
    wipe = _wipe(threshold=0.5, roi_change_threshold=20.0)
    # an enrolled action may name a pair the roi says changed
    assert wipe.decide(["none"], [[0, 0, 0.1, 0]], roi_changes=[30.0], backbone_deltas=[[0, 1, -1.0]])[0] == ["wipe"]
    assert wipe.decide(["none"], [[0, 0, 0.1, 0]], roi_changes=[10.0])[0] == ["none"]
    assert p.digest() != off.digest()
    p.save(tmp_path / FILE)
    again = Prototypes.load(tmp_path / FILE, p.meta())
    assert again.roi_change_threshold == 20.0 and again.digest() == p.digest()
    with pytest.raises(ValueError, match="pixel change"):
        Prototypes(["open"], np.eye(4)[:1], {}, roi_change_threshold=300.0)


def test_the_roi_change_threshold_keeps_the_none_pairs_share():
    scores = [float(v) for v in range(1, 21)] + [50.0, 5.0, None]
    truth = ["none"] * 20 + ["wipe", "wipe", "none"]
    picks = ["none"] * 23
    c = choose_roi_change_threshold(picks, scores, truth, keep=0.9)
    assert c["roi_change_threshold"] == 18.0  # 18 of the 20 with a roi stay within it
    v = c["roi_change_validation"]
    assert v["pairs_with_roi"] == 22 and v["none_pairs_read_as_none"] == 20 and v["of_them_kept_none"] == 0.9
    assert v["actions_read_as_none"] == 2 and v["of_them_above"] == 0.5
    assert choose_roi_change_threshold(picks, [None] * 23, truth) is None  # no event had a roi
    with pytest.raises(ValueError, match="with a roi is read as none"):
        choose_roi_change_threshold(["open"] * 23, scores, truth)
    # the unknown_change threshold after it keeps the share of the accuracy without the gates
    deltas = np.tile([[1.0, 0, 0, 0]], (20, 1)) * 0.1
    p = Prototypes(["open"], np.eye(4, dtype=np.float32)[:1], {}, roi_change_threshold=18.0)
    chosen = choose_threshold(p, picks[:20], deltas, truth[:20], keep=0.9, roi_changes=scores[:20])
    assert chosen["validation"]["accuracy"]["without"] == 1.0
    assert chosen["validation"]["accuracy"]["with"] == pytest.approx(0.9)  # the 2 none pairs above it


def test_enrolling_adds_a_backbone_prototype_that_names_unknown_changes():
    class Model:
        labels = ["open", "close", "none"]
        prototypes = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.8,
                                backbone_labels=["open", "close", "none"], backbone_vectors=np.eye(3)[:3])

    m = Model()
    before = m.prototypes.digest()
    # three wipe examples around (1, 1, -1) in the backbone's space
    ex = np.array([[1.0, 1, -1], [1.2, 0.9, -1], [0.9, 1.1, -0.8]])
    meta = enroll(m, ex, "wipe", source="three events")
    p = m.prototypes
    assert p.enrolled == ["wipe"] and p.backbone_labels[-1] == "wipe" and p.counts["wipe"] == 3
    assert np.allclose(p.backbone_vectors[-1], prototype(ex)) and meta["enrolled_from"]["wipe"] == "three events"
    assert "enroll_rule" in meta and p.digest() != before and p.labels == ["open", "close"]  # the classifier's
    # a delta far from both actions' prototypes: unknown_change, named wipe where its backbone delta is
    far = np.array([[0, 0, 1.0, 0]] * 2)
    assert p.decide(["open", "open"], far, backbone_deltas=[[1, 1, -1.0], [0, 0, 1.0]])[0] == ["wipe", UNKNOWN]
    again = enroll(m, ex[:1], "wipe")  # enrolled again: replaced, not added twice
    assert m.prototypes.backbone_labels.count("wipe") == 1 and again["counts"]["wipe"] == 1
    with pytest.raises(ValueError, match="dimensions"):
        enroll(m, np.ones((2, 5)), "stir")
    with pytest.raises(ValueError, match="cannot be an enrolled action"):
        enroll(m, ex, UNKNOWN)
    with pytest.raises(ValueError, match="no example pairs"):
        enroll(m, np.zeros((0, 3)), "stir")
    old = Model()
    old.prototypes = Prototypes(["open", "close"], np.eye(4, dtype=np.float32)[:2], {}, threshold=0.8)
    with pytest.raises(ValueError, match="older cde_ros"):  # prototypes made before the backbone's
        enroll(old, ex, "wipe")


def test_the_change_threshold_keeps_the_none_pairs_share_and_counts_what_it_catches():
    lengths = np.arange(1, 21, dtype=float)  # 20 none pairs read as none, lengths 1..20
    deltas = np.concatenate([lengths[:, None] * np.eye(4)[[3]], [[0, 0, 30.0, 0], [0, 0, 5.0, 0]]])
    truth = ["none"] * 20 + ["wipe", "wipe"]
    picks = ["none"] * 22
    c = choose_change_threshold(picks, deltas, truth, keep=0.9)
    assert c["change_threshold"] == 18.0  # 18 of the 20 stay within it: 0.9
    v = c["change_validation"]
    assert v["none_pairs_read_as_none"] == 20 and v["of_them_kept_none"] == 0.9
    assert v["actions_read_as_none"] == 2 and v["of_them_above"] == 0.5  # the 30-long one is caught
    with pytest.raises(ValueError, match="read as none"):
        choose_change_threshold(["open"] * 22, deltas, truth)
    # the unknown_change threshold after it keeps the share of the accuracy without either rule
    p = Prototypes(["open"], np.eye(4, dtype=np.float32)[:1], {}, change_threshold=c["change_threshold"])
    chosen = choose_threshold(p, picks[:20], deltas[:20], truth[:20], keep=0.9)
    assert chosen["validation"]["accuracy"]["without"] == 1.0  # without: no change threshold either
    assert chosen["validation"]["accuracy"]["with"] == pytest.approx(0.9)  # the 2 long none pairs


def test_auroc_counts_ranks_and_ties():
    assert auroc(np.array([3.0, 4]), np.array([1.0, 2])) == 1.0
    assert auroc(np.array([1.0]), np.array([2.0])) == 0.0
    assert auroc(np.array([1.0, 1]), np.array([1.0])) == 0.5
    assert np.isnan(auroc(np.array([]), np.array([1.0])))


def test_prototypes_are_saved_beside_the_weights_and_named_by_the_model_id(tmp_path, tiny_model):
    model, meta = CausalDeltaModel.load(tiny_model)
    d = model.config.embed_dim
    plain_id = model.save(tmp_path / "plain", meta)
    rng = np.random.default_rng(1)
    b = model.backbone.dim
    model.prototypes = Prototypes(["open", "close"], rng.normal(size=(2, d)), {"open": 4, "close": 5}, threshold=0.2,
                                  backbone_labels=list(model.labels), backbone_vectors=rng.normal(size=(len(model.labels), b)))
    with_id = model.save(tmp_path / "p", meta)
    assert with_id != plain_id and (tmp_path / "p" / FILE).is_file()
    loaded, m2 = CausalDeltaModel.load(tmp_path / "p")
    assert m2["model_id"] == with_id and m2["prototypes"]["labels"] == ["open", "close"]
    assert np.allclose(loaded.prototypes.vectors, model.prototypes.vectors) and loaded.prototypes.threshold == 0.2
    assert np.allclose(loaded.prototypes.backbone_vectors, model.prototypes.backbone_vectors)
    assert m2["prototypes"]["backbone_labels"] == list(model.labels)
    enroll(loaded, rng.normal(size=(3, b)), "wipe", source="test")
    enrolled_id = loaded.save(tmp_path / "p", m2)
    assert enrolled_id not in (with_id, plain_id)
    again, m3 = CausalDeltaModel.load(tmp_path / "p")
    assert again.prototypes.enrolled == ["wipe"] and m3["prototypes"]["counts"]["wipe"] == 3
    # the model without them again: the file goes, model.json names none
    again.prototypes = None
    assert again.save(tmp_path / "p", m3) == plain_id and not (tmp_path / "p" / FILE).exists()
    assert "prototypes" not in json.loads((tmp_path / "p" / "model.json").read_text())
    # a model.json naming prototypes whose file is gone is one clear error
    shutil.copytree(tmp_path / "plain", tmp_path / "broken")
    meta_b = json.loads((tmp_path / "broken" / "model.json").read_text())
    meta_b["prototypes"] = m2["prototypes"]
    (tmp_path / "broken" / "model.json").write_text(json.dumps(meta_b))
    with pytest.raises(ModelFileError, match="prototypes"):
        CausalDeltaModel.load(tmp_path / "broken")
    # hostile prototype files and descriptions: one clear error each, never a model that loads
    good = (tmp_path / "p2")
    model.save(good, meta)
    m_good = json.loads((good / "model.json").read_text())

    def broken(name, write_file=None, **prototypes_meta):
        d = tmp_path / name
        shutil.copytree(good, d)
        if write_file is not None:
            write_file(d / FILE)
        m = dict(m_good)
        m["prototypes"] = {**m_good["prototypes"], **prototypes_meta}
        (d / "model.json").write_text(json.dumps(m))
        with pytest.raises(ModelFileError, match="prototypes"):
            CausalDeltaModel.load(d)

    from safetensors.numpy import save_file

    broken("garbage", lambda f: f.write_bytes(b"\x00\xff" * 100))
    broken("cut", lambda f: f.write_bytes(f.read_bytes()[:50]))
    broken("wide", lambda f: save_file({"vectors": np.ones((2, d + 3), np.float32)}, str(f)))
    broken("nan", lambda f: save_file({"vectors": np.full((2, d), np.nan, np.float32)}, str(f)))
    broken("no_backbone", lambda f: save_file({"vectors": np.ones((2, d), np.float32)}, str(f)))
    broken("wide_backbone", lambda f: save_file({"vectors": np.ones((2, d), np.float32),
                                                 "backbone": np.ones((len(model.labels), b + 1), np.float32)}, str(f)))
    broken("labels", labels=["open"])
    broken("repeat", labels=["open", "open"])
    broken("threshold", unknown_threshold="high")
    broken("threshold_nan", unknown_threshold=float("nan"))
    broken("enrolled", enrolled=["wipe"])
    # enrolled by a cde_ros that kept enrolled actions in the projected space: says how to redo it
    old_style = tmp_path / "old_style"
    shutil.copytree(good, old_style)
    m_old = dict(m_good)
    m_old["prototypes"] = {**{k: v for k, v in m_good["prototypes"].items() if k != "backbone_labels"},
                           "labels": ["open", "close", "wipe"], "enrolled": ["wipe"], "own_thresholds": {}}
    (old_style / "model.json").write_text(json.dumps(m_old))
    with pytest.raises(ModelFileError, match="enroll the actions again"):
        CausalDeltaModel.load(old_style)
    with pytest.raises(ValueError, match="one of the classifier's labels"):
        enroll(model, rng.normal(size=(3, d)), "open")


def test_calibrate_unknown_and_enroll_on_recorded_events(tmp_path, tiny_model):
    from cde_ros.model.inference import Predictor
    from cde_ros.synthetic.scenes import SceneConfig, generate_pairs

    bag = tmp_path / "val"
    # 120 events of seed 7 hold 20 or more `none` pairs, what the operating point needs
    run_cli("record-synthetic", str(bag), "--events", "120", "--seed", "7", "--split", "val", "--quiet")
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    # enroll needs the model's own prototypes first: one sentence saying how to make them
    no = run_cli("enroll", str(model), str(bag), "--action", "open", "--no-cache", check=False)
    assert no.returncode == 2 and "calibrate" in no.stderr and "Traceback" not in no.stderr
    proc = run_cli("calibrate", str(model), str(bag), "--target", "0.5", "--unknown", "--no-cache", "--quiet")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((model / "model.json").read_text())
    p = meta["prototypes"]
    assert out["model_id"] == meta["model_id"] != out["previous_model_id"]
    assert -1 <= p["unknown_threshold"] <= 1 and p["validation"]["accuracy"]["with"] >= 0.95 * p["validation"][
        "accuracy"]["without"] - 1e-9
    assert p["change_threshold"] > 0 and p["change_validation"]["of_them_kept_none"] >= 0.95
    assert "is a change" in proc.stderr
    plain = run_cli("calibrate", str(model), str(bag), "--target", "0.5", "--unknown", "--no-change-threshold",
                    "--no-cache", "--out", str(tmp_path / "plain"), "--quiet")
    assert json.loads((tmp_path / "plain" / "model.json").read_text())["prototypes"]["change_threshold"] is None
    assert json.loads(plain.stdout.strip().splitlines()[-1])["model_id"] != meta["model_id"]
    # a new action from the events relabelled `wipe` in a sidecar
    rows = ["bag,event_id,start,end,action"] + [f",ev-{i:04d},,,wipe" for i in range(0, 120, 12)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    clash = run_cli("enroll", str(model), str(bag), "--action", "open", "--no-cache", check=False)
    assert clash.returncode == 2 and "classifier's labels" in clash.stderr
    missing = run_cli("enroll", str(model), str(bag), "--action", "stir", "--no-cache", check=False)
    assert missing.returncode == 2 and "labelled 'stir'" in missing.stderr
    done = json.loads(run_cli("enroll", str(model), str(bag), "--action", "wipe", "--labels",
                              str(tmp_path / "labels.csv"), "--no-cache", "--out", str(tmp_path / "e"),
                              "--quiet").stdout.strip().splitlines()[-1])
    assert done["examples"] == 10 and done["previous_model_id"] == meta["model_id"] != done["model_id"]
    pe = json.loads((tmp_path / "e" / "model.json").read_text())["prototypes"]
    # the classifier's labels (none too) have backbone prototypes from calibrate; wipe's comes after them
    labels = json.loads((model / "model.json").read_text())["labels"]
    assert pe["backbone_labels"][-1] == "wipe" and "none" in pe["backbone_labels"]
    assert pe["backbone_labels"][:-1] == [a for a in labels if a in pe["backbone_labels"]]
    assert pe["counts"]["wipe"] == 10 and "enroll_rule" in pe
    predictor = Predictor(tmp_path / "e", device="cpu")
    assert predictor.model_id == done["model_id"] and predictor.model.prototypes.enrolled == ["wipe"]
    pairs = generate_pairs("val", 12, SceneConfig(), seed=5)
    preds = predictor.classify_pairs(list(pairs.before), list(pairs.after))
    allowed = set(predictor.labels) | {"wipe", UNKNOWN}
    assert all(set(pr.similarity) == set(p["labels"]) | {"wipe"} and pr.action in allowed for pr in preds)
    assert predictor.answer_labels == predictor.labels + ["wipe", UNKNOWN]
    # eval scores the enrolled action like any other: its events are no longer "labels the model does not know"
    ev = json.loads(run_cli("eval", str(bag), "--model", str(tmp_path / "e"), "--labels", str(tmp_path / "labels.csv"),
                            "--no-cache", "--json").stdout.strip().splitlines()[-1])
    assert ev["unknown_labels"] == [] and "wipe" in ev["per_class"] and ev["labels"][-2:] == ["wipe", UNKNOWN]


def test_the_predictor_judges_a_pair_with_its_roi_one_at_a_time_and_in_batches(roi_gate_model):
    """A model that reads these pairs as none, with a roi change threshold: the pair whose roi
    holds the change is unknown_change, by `classify` and by `classify_pairs` alike."""
    from cde_ros.model.inference import Predictor

    predictor = Predictor(roi_gate_model, device="cpu")
    before = np.full((24, 32, 3), 20, np.uint8)
    after = before.copy()
    after[:, :8] = 230  # the left quarter brightens
    rois = [[0, 0, 8, 24], [16, 0, 16, 24], None]
    one = [predictor.classify(before, after, roi=r).action for r in rois]
    assert one == [UNKNOWN, "none", "none"]
    many = predictor.classify_pairs([before] * 3, [after] * 3, rois=rois, camera_size=(32, 24))
    assert [p.action for p in many] == one
    assert [p.action for p in predictor.classify_pairs([before] * 3, [after] * 3)] == ["none"] * 3
    with pytest.raises(ValueError, match="rois for"):
        predictor.classify_pairs([before], [after], rois=rois)


def test_unknown_change_is_no_false_success():
    from cde_ros.training.evaluation import success_failure_rates

    r = success_failure_rates(["none", "none", "none", "open"], ["none", UNKNOWN, "open", UNKNOWN])
    assert r["false_success_rate"] == pytest.approx(1 / 3) and r["false_failure_rate"] == 0.0
