"""The benchmarks on simulated recordings, small: a suite recorded in parts (and resumed), a model
evaluated on it with the pixel floor beside it, the few-shot table and plot."""
from __future__ import annotations

import json

import pytest

from conftest import TINY_YAML

from cde_ros.training.simbench import (FEW_SHOT_STARTS, SUITE, TARGET_SIZE_BINS, bags_of, choose_change_threshold,
                                       draw_episodes, evaluate_model_on_suite, few_shot, open_set, read_split,
                                       record_suite, truth_rois)

SIZES = {"train": 12, "val": 3, "comp": 4, "syst": 4, "style": 3, "style_comp": 4, "style_syst": 4, "style_train": 14,
         "twin": 4, "style_many": 10}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    data = tmp_path_factory.mktemp("suite")
    logs: list[str] = []
    record_suite(data, tuple(SIZES), workers=2, part_episodes=8, size=(160, 120), episodes=SIZES, log=logs.append)
    return data, logs


def test_the_suite_is_recorded_in_parts_and_resumes(suite):
    data, logs = suite
    assert len(bags_of(data, "train")) == 2 and len(bags_of(data, "style_train")) == 2
    summaries = [json.loads(p.read_text()) for p in sorted((data / "train").glob("part_*.json"))]
    assert [s["episodes"] for s in summaries] == [8, 4] and [s["first_episode"] for s in summaries] == [0, 8]
    assert summaries[0]["camera"] != summaries[1]["camera"]  # one camera placement per training part
    assert json.loads((data / "twin" / "part_00000.json").read_text())["twin"] is True
    assert not any(json.loads(p.read_text())["twin"] for p in (data / "train").glob("*.json"))
    assert {json.loads(p.read_text())["style"] for p in (data / "style").glob("*.json")} == {"heldout"}
    again: list[str] = []
    record_suite(data, tuple(SIZES), workers=2, part_episodes=8, size=(160, 120), episodes=SIZES, log=again.append)
    assert again == []  # nothing recorded twice


def test_a_part_that_fails_to_record_is_one_sentence_with_the_recorders_own_reason(tmp_path):
    """The recorder process's own error (here a frame size it refuses), once, without a second
    "cde-ros: error:" inside; no summary is written for the failed part, so a rerun records it."""
    with pytest.raises(RuntimeError) as err:
        record_suite(tmp_path, ("val",), workers=1, part_episodes=2, size=(0, 0), episodes={"val": 2},
                     log=lambda m: None)
    msg = str(err.value)
    assert "part_00000 failed (image size 0x0 is outside" in msg and "cde-ros: error" not in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert not list((tmp_path / "val").glob("*.json"))


def test_a_model_is_evaluated_on_every_split_with_the_pixel_floor(suite, tiny_model, tmp_path):
    data, _ = suite
    result = evaluate_model_on_suite(tiny_model, data, tmp_path, cache_dir=tmp_path / "cache", log=lambda m: None)
    assert set(result["splits"]) == {"val", "comp", "syst", "style", "style_comp", "style_syst", "twin"}
    for name, m in result["splits"].items():
        assert m["n"] == SIZES[name] and 0 <= m["accuracy"] <= 1
        assert {"false_success_rate", "false_failure_rate"} <= set(m["floor"])
        assert set(m["per_object"]) and "?" not in m["per_object"]  # object classes from the ground truth
        # where the change was put, against the fixture's box from the ground truth (160 x 120 frames)
        assert ("where" in m) == (m["action_pairs"] > 0)
        if m["action_pairs"]:
            w = m["where"]["all"]
            assert 0 < w["n"] <= m["action_pairs"]  # every pair that changed something, its fixture in view
            assert 0 <= w["share_inside"] <= 1 and 0 <= w["iou"] <= 1 and 0 < w["chance"] < 1
            assert set(m["where"]["per_action"]) <= set(m["labels"]) - {"none"}
            roi = m["where"]["roi"]  # spatial verification with the fixture's box and a decoy
            assert roi["pairs"] <= m["action_pairs"]
            assert roi["pairs"] == 0 or 0 <= roi["kept_with_target_roi"] <= 1 and 0 <= roi["caught_with_decoy_roi"] <= 1
            # the twin split's decoy is the second object recorded beside the target
            assert roi["decoy"] == ("the recorded twin" if name == "twin" else "a box beside the target")
            # accuracy by the fixture's size: every pair that changed something with its box in one bin
            sizes = m["by_target_size"]
            assert [b for _, _, b in TARGET_SIZE_BINS] == list(sizes)
            assert sum(v["n"] for v in sizes.values()) == w["n"]
            assert all(v["accuracy"] is None if v["n"] == 0 else 0 <= v["accuracy"] <= 1 for v in sizes.values())
    text = (tmp_path / f"sim_model_{tiny_model.name}.md").read_text()
    assert "held-out object classes" in text and "pixel floor" in text.lower() and "Where the change" in text
    assert "by the size of the manipulated fixture's box" in text
    assert (tmp_path / f"sim_confusion_{tiny_model.name}_syst.png").stat().st_size > 5000


def test_evaluation_names_a_missing_split_before_working(tmp_path, tiny_model):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no recorded parts"):
        evaluate_model_on_suite(tiny_model, tmp_path, tmp_path / "out", log=lambda m: None)


def test_few_shot_trains_both_starts_and_writes_table_and_plot(suite, tiny_model, tmp_path):
    from cde_ros.training.config import load_config

    data, _ = suite
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    rows = few_shot(data, tiny_model, tmp_path, load_config(tmp_path / "tiny.yaml"), ks=(1,), seeds=(0,),
                    cache_dir=tmp_path / "cache", log=lambda m: None)
    assert [(r["k"], r["start"]) for r in rows] == [(1, s) for s in FEW_SHOT_STARTS] == [
        (1, "scratch"), (1, "init"), (1, "init+replay"), (1, "init+replay+env"), (1, "init+replay+reverse"),
        (1, "init+prototypes"), (1, "finetune+replay"), (1, "finetune+replay+reverse")]
    by = {r["start"]: r for r in rows}
    assert by["init+prototypes"]["steps"] == 0  # prototypes train nothing; the finetune starts train everything
    assert by["finetune+replay"]["freeze_backbone"] == by["finetune+replay+reverse"]["freeze_backbone"] == 0
    assert all(r["style_comp"]["n"] == SIZES["style_comp"] and r["shots"] <= 9 for r in rows)
    # the new cell's check pairs: its recorded episodes that were not drawn as shots
    assert all(r["new_cell_val"]["n"] == SIZES["style_train"] - r["shots"] for r in rows)
    # the trained starts are calibrated on those check pairs where they hold enough `none` pairs;
    # this tiny suite does not, and the row says why instead of a number from too few pairs
    trained = [r for r in rows if r["start"] != "init+prototypes"]
    assert all("fewer than the 20" in r["check_not_calibrated"] and "style_comp_calibrated" not in r for r in trained)
    assert by["init+replay"]["pairs"] > by["init"]["pairs"] == by["init"]["shots"]  # the replay adds the init model's own pairs
    assert "| 1 | init | 1 |" in (tmp_path / "fewshot.md").read_text()
    assert (tmp_path / "fewshot.png").stat().st_size > 5000
    written = json.loads((tmp_path / "fewshot.json").read_text())
    assert written["rows"] == json.loads(json.dumps(rows))
    # the reference line: the init model alone (k = 0) on the same test pairs, in the table too
    alone = written["init_alone"]
    assert alone["style_comp"]["n"] == SIZES["style_comp"] and 0 <= alone["style_syst"]["accuracy"] <= 1
    assert f"| 0 | the init model alone | – | – | {alone['style_comp']['accuracy']:.3f} |" in (
        tmp_path / "fewshot.md").read_text()


def test_few_shot_reference_trains_on_every_episode_of_style_many_and_is_marked(suite, tiny_model, tmp_path):
    """The far end of the curve: finetune+replay on all of style_many with 5x the steps, tested on
    the whole few-shot pool (none of it trained on); a row of its own in the table and the plot."""
    from cde_ros.training.config import load_config

    data, _ = suite
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    rows = few_shot(data, tiny_model, tmp_path, load_config(tmp_path / "tiny.yaml"), ks=(1,), seeds=(0,),
                    starts=("finetune+replay",), steps=3, many=True, cache_dir=tmp_path / "cache", log=lambda m: None)
    few, ref = rows
    assert "many" not in few and ref["many"] == "style_many" and ref["start"] == "finetune+replay"
    assert 0 < ref["shots"] <= SIZES["style_many"] and ref["steps"] == 15 and few["steps"] == 3
    assert ref["pairs"] > ref["shots"]  # with the replay
    assert ref["new_cell_val"]["n"] == SIZES["style_train"]  # the whole pool: none of it was trained on
    assert 1 <= ref["k"] <= SIZES["style_many"]  # episodes per label
    text = (tmp_path / "fewshot.md").read_text()
    assert f"| {ref['k']} (every episode of style_many) | finetune+replay | 1 |" in text
    assert "is a reference, not a few-shot run" in text and "| 1 | finetune+replay | 1 |" in text
    # one seed per row here: a mean with no spread, not "± 0.000"
    acc = ref["style_comp"]["accuracy"]
    assert f"| finetune+replay | 1 | {ref['new_cell_val']['accuracy']:.3f} | {acc:.3f} |" in text
    assert "±" not in text.split("| k | start |")[1]
    assert (tmp_path / "fewshot.png").stat().st_size > 5000


def test_few_shot_reference_names_the_missing_split_before_working(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="record-sim .* --suite --splits style_many"):
        few_shot(tmp_path, tiny_model, tmp_path / "out", many=True, log=lambda m: None)


def test_few_shot_cli_runs_every_start_by_default_and_refuses_an_unknown_one(tmp_path):
    """By default the whole benchmark (every start passes the check and the run goes on to the
    data, missing here); an unknown start is one sentence, before anything is read."""
    from conftest import run_cli

    proc = run_cli("benchmark", "--few-shot", str(tmp_path), "--starts", "init", "bogus", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown --starts ['bogus']; choose from scratch, init" in proc.stderr
    proc = run_cli("benchmark", "--few-shot", str(tmp_path), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "style_train holds no recorded parts" in proc.stderr
    proc = run_cli("benchmark", "--few-shot", str(tmp_path), "--many", "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"record it with cde-ros record-sim {tmp_path} --suite --splits style_many" in proc.stderr


def test_draw_episodes_takes_k_per_label_and_the_floor_threshold_balances():
    import numpy as np

    from cde_ros.core.dataset import PairSet

    acts = ["open"] * 10 + ["none"] * 3
    pool = PairSet(np.zeros((13, 2, 2, 3), np.uint8), np.zeros((13, 2, 2, 3), np.uint8), acts)
    drawn = draw_episodes(pool, 5, seed=0)
    assert drawn.actions.count("open") == 5 and drawn.actions.count("none") == 3
    assert draw_episodes(pool, 5, seed=0).actions == drawn.actions
    scores = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    assert choose_change_threshold(scores, np.array([True] * 3 + [False] * 3)) == 10.0
    assert set(SUITE) >= set(SIZES)


def test_open_set_measures_unknown_change_and_enrolled_actions(suite, tmp_path):
    """A model trained without one action, given prototypes, measured on the suite's held-out
    splits; then the action enrolled from k of its train-split events."""
    import numpy as np

    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.data.pairing import PairingConfig
    from cde_ros.model.network import CausalDeltaModel, ModelConfig
    from cde_ros.model.prototypes import calibrate_unknown
    from cde_ros.training.trainer import TrainConfig, train

    data, _ = suite
    pre, cache = Preprocessing(32), tmp_path / "cache"
    pairs = read_split(data, "train", pre, PairingConfig(), cache)
    tests = [read_split(data, n, pre, PairingConfig(), cache).actions for n in ("comp", "syst")]
    # the action left out: one the train split and both test splits hold
    held = next(a for a in sorted(set(pairs.actions) - {"none"}) if all(a in t for t in tests))
    known = pairs.subset(np.flatnonzero(np.asarray(pairs.actions) != held))
    labels = sorted(set(known.actions))
    mc = ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                     embed_dim=32, projector_hidden=32, top_k=4, labels=labels)
    out = tmp_path / "m"
    train(known, None, labels, mc, pre, TrainConfig(epochs=1, batch_size=8, none_recall_target=0.0), out,
          progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="trained on every action"):
        open_set(data, out, tmp_path / "os", cache_dir=cache, log=lambda m: None)
    model, meta = CausalDeltaModel.load(out)
    # its own pairs (the tiny suite has no validation split to spare), each event with the
    # manipulated fixture's recorded box as its roi
    rois = truth_rois(bags_of(data, "train"), known.event_ids)
    assert all(r is not None and all(0 <= v <= 1 for v in r) for r in rois)
    calibrate_unknown(model, known, rois=rois, camera_size=(1.0, 1.0))
    assert model.prototypes.roi_change_threshold is not None
    # as `cde-ros train` records them: the bags it read, here two of the suite's splits
    bags = [str(data / "train" / "part_00000"), str(data / "train_varied" / "part_00000")]
    model.save(out, {**meta, "skipped_actions": [held], "data": {"bags": bags}})
    r = open_set(data, out, tmp_path / "os", ks=(1, 2), seeds=(0,), cache_dir=cache, log=lambda m: None)
    assert r["held_out_actions"] == [held] and [(e["k"], e["seed"]) for e in r["enroll"]] == [(1, 0), (2, 0)]
    for name, want in zip(("comp", "syst"), tests):
        m = r["splits"][name]
        assert m["held_out_pairs"] == want.count(held) > 0 and 0 <= m["auroc"] <= 1
        assert sum(m["held_out_answers"].values()) == pytest.approx(1.0)
        assert sum(m["with_roi"]["held_out_answers"].values()) == pytest.approx(1.0)
        # the roi only turns pairs read as none into changes: no fewer unknown_change answers
        assert m["with_roi"]["held_out_answers"]["unknown_change"] >= m["held_out_answers"]["unknown_change"]
        assert m["with_roi"]["held_out_answers"]["known_action"] == m["held_out_answers"]["known_action"]
        for e in r["enroll"]:
            for got, base in ((e[name], m), (e[name]["with_roi"], m["with_roi"])):
                # an enrolled action only names what the rule answers unknown_change: it gets at most
                # those of the left-out pairs right and leaves the known labels' accuracy as it was
                assert got["held_out_accuracy"] <= base["held_out_answers"]["unknown_change"] + 1e-9
                assert got["known_accuracy"] == pytest.approx(base["known_accuracy"]["with"])
                none_as, none_unknown = got["none_as_enrolled"], base["none_read_as_unknown"]
                assert (np.isnan(none_as) and np.isnan(none_unknown)) or 0 <= none_as <= none_unknown + 1e-9
    assert r["trained_on"] == ["train", "train_varied"]
    assert "trained on the suite's `train` and `train_varied` splits without" in (tmp_path / "os" / "open_set_m.md").read_text()
    assert "| comp |" in (tmp_path / "os" / "open_set_m.md").read_text()
    assert "| comp, events with the target's roi |" in (tmp_path / "os" / "open_set_m.md").read_text()
    assert "| 2, roi |" in (tmp_path / "os" / "open_set_m.md").read_text()
    assert (tmp_path / "os" / "open_set_m.png").stat().st_size > 5000
    # a model trained without an object class too (benchmarks/open_set_class_shift.py): that
    # class's pairs are left out of every split, their recorded boxes with them
    comp = read_split(data, "comp", pre, PairingConfig(), cache)
    gone = comp.objects[comp.actions.index(held)]
    rest = read_split(data, "comp", pre, PairingConfig(), cache, skip_classes=[gone])
    assert gone not in rest.objects and len(rest) == sum(o != gone for o in comp.objects) < len(comp)
    assert rest.target_boxes == [b for b, o in zip(comp.target_boxes, comp.objects) if o != gone]
    assert rest.camera_size == comp.camera_size
    assert read_split(data, "comp", pre, PairingConfig(), cache, skip_classes=[]).event_ids == comp.event_ids
    model.save(out, {**meta, "skipped_actions": [held], "skipped_classes": [gone], "data": {"bags": bags}})
    r2 = open_set(data, out, tmp_path / "os", ks=(1,), seeds=(0,), cache_dir=cache, log=lambda m: None)
    assert r2["skipped_classes"] == [gone]
    assert r2["splits"]["comp"]["held_out_pairs"] == sum(a == held and o != gone for a, o in zip(comp.actions,
                                                                                                    comp.objects))
    assert r2["splits"]["comp"]["n"] == len(rest) and r2["splits"]["syst"]["n"] == r["splits"]["syst"]["n"]
    assert f"without the object classes {gone}" in (tmp_path / "os" / "open_set_m.md").read_text()
    # the same through the command line: `calibrate --unknown --sim-rois` takes the rois from the
    # recorded boxes; recordings without ground truth, and the options alone, are one sentence
    from conftest import run_cli

    topic = ["--image-topic", "/camera/image_raw/compressed", "--no-cache"]
    bags = [str(b) for b in bags_of(data, "train")]
    proc = run_cli("calibrate", str(out), *bags, "--unknown", "--keep-operating-point", "--sim-rois", *topic,
                   "--out", str(tmp_path / "cli"))
    p = json.loads((tmp_path / "cli" / "model.json").read_text())["prototypes"]
    assert p["roi_change_threshold"] == pytest.approx(model.prototypes.roi_change_threshold, rel=1e-5)
    assert p["roi_change_validation"]["pairs_with_roi"] == len(known) and "inside its event's roi" in proc.stderr
    assert "none operating point kept" in proc.stderr
    plain = run_cli("calibrate", str(out), *bags, "--unknown", "--keep-operating-point", *topic,
                    "--out", str(tmp_path / "cli"))
    assert json.loads((tmp_path / "cli" / "model.json").read_text())["prototypes"]["roi_change_threshold"] is None
    assert "no event carries a roi" in plain.stderr
    alone = run_cli("calibrate", str(out), *bags, "--sim-rois", *topic, check=False)
    assert alone.returncode == 2 and "--sim-rois goes with --unknown" in alone.stderr
    keep = run_cli("calibrate", str(out), *bags, "--keep-operating-point", *topic, check=False)
    assert keep.returncode == 2 and "goes with --unknown" in keep.stderr
    run_cli("record-synthetic", str(tmp_path / "syn"), "--events", "40", "--seed", "7", "--split", "val", "--quiet")
    other = run_cli("calibrate", str(out), str(tmp_path / "syn"), "--unknown", "--sim-rois", "--no-cache",
                    check=False)
    assert other.returncode == 2 and "not made by cde-ros record-sim" in other.stderr
    assert "Traceback" not in alone.stderr + keep.stderr + other.stderr

