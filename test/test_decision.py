"""The `none` operating point: the rule that picks the bias, where it is applied, how it is saved."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_YAML, run_cli

from cde_ros.model import decision
from cde_ros.model.inference import Predictor
from cde_ros.model.network import CausalDeltaModel, ModelFileError

NONE = 2  # label index of `none` in the hand-made logits below (labels: a, b, none)


def _logits(none_margins, action_margins, copies=5):
    """Rows whose `none` logit minus the best other logit is each of `none_margins` (true label:
    none), then rows whose true action `a` leads `none` by each of `action_margins`; each row
    `copies` times (the rule wants at least decision.MIN_NONE_PAIRS `none` pairs)."""
    rows, y = [], []
    for m in none_margins:
        rows.append([1.0, 0.0, 1.0 + m])
        y.append(NONE)
    for m in action_margins:
        rows.append([1.0 + m, 0.0, 1.0])
        y.append(0)
    return np.repeat(np.array(rows), copies, 0), np.repeat(np.array(y), copies)


def test_the_smallest_bias_on_the_grid_that_reaches_the_target_is_chosen():
    logits, y = _logits([1.0, 0.5, -0.2, -0.6], [2.0, 0.4])
    d = decision.choose_none_bias(logits, y, NONE, target_recall=0.75)
    # -0.2 needs a bias above 0.2 (at exactly 0.2 the tie goes to the lower index, `a`)
    assert d["none_logit_bias"] == 0.25 and d["target_reached"]
    v = d["validation"]
    assert v["pairs"] == 30 and v["none_pairs"] == 20
    assert v["none_recall"] == {"bias_0": 0.5, "chosen": 0.75}
    assert v["accuracy"] == {"bias_0": 4 / 6, "chosen": 5 / 6}
    assert v["actions_read_as_none"] == {"bias_0": 0.0, "chosen": 0.0}
    d = decision.choose_none_bias(logits, y, NONE, target_recall=1.0)
    assert d["none_logit_bias"] == 0.65  # the -0.6 pair flips; the action led by 0.4 is now read as none
    assert d["validation"]["actions_read_as_none"]["chosen"] == 0.5
    assert decision.choose_none_bias(logits, y, NONE, 0.5)["none_logit_bias"] == 0.0  # already there


def test_an_unreachable_target_says_so_and_bad_input_is_refused():
    logits, y = _logits([0.3, -5.0], [1.0], copies=10)
    d = decision.choose_none_bias(logits, y, NONE, target_recall=1.0)
    assert d["none_logit_bias"] == decision.MAX_BIAS and d["target_reached"] is False
    assert "NOT reached" in decision.describe(d)
    with pytest.raises(ValueError, match="19 `none` pairs, fewer than the 20"):
        decision.choose_none_bias(*_logits([0.5], [1.0, 2.0], copies=19), NONE, 0.9)
    with pytest.raises(ValueError, match="none_recall_target"):
        decision.choose_none_bias(logits, y, NONE, 1.5)


def test_the_bias_is_applied_saved_named_and_checked(tmp_path, tiny_model):
    model, meta = CausalDeltaModel.load(tiny_model)
    assert model.none_logit_bias == 0.0 and meta["model_id"] == meta["weights_id"]
    ni = model.labels.index("none")
    z = torch.randn(3, len(model.labels))
    shifted = model.decide(z)
    assert torch.equal(shifted, z)  # bias 0: the logits as they are
    model.decision = {"none_logit_bias": 1.5, "rule": decision.RULE}
    shifted = model.decide(z)
    torch.testing.assert_close(shifted[:, ni], z[:, ni] + 1.5)
    assert torch.equal(torch.cat([shifted[:, :ni], shifted[:, ni + 1:]], 1), torch.cat([z[:, :ni], z[:, ni + 1:]], 1))
    new_id = model.save(tmp_path / "biased", meta)
    saved = json.loads((tmp_path / "biased" / "model.json").read_text())
    # the id names the answers, so it changes with the bias; the weights are the same
    assert new_id == saved["model_id"] != meta["model_id"] and saved["weights_id"] == meta["weights_id"]
    assert saved["decision"]["none_logit_bias"] == 1.5 and saved["training"] == meta["training"]
    again, _ = CausalDeltaModel.load(tmp_path / "biased")
    assert again.none_logit_bias == 1.5
    for bad in (-1.0, "high", 99.0):
        saved["decision"]["none_logit_bias"] = bad
        (tmp_path / "biased" / "model.json").write_text(json.dumps(saved))
        with pytest.raises(ModelFileError, match="none_logit_bias"):
            CausalDeltaModel.load(tmp_path / "biased")


def test_the_predictor_reads_scores_at_the_operating_point(tmp_path, tiny_model):
    model, meta = CausalDeltaModel.load(tiny_model)
    model.decision = {"none_logit_bias": 2.0}
    model.save(tmp_path, meta)
    plain, biased = Predictor(tiny_model, device="cpu"), Predictor(tmp_path, device="cpu")
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
             for _ in range(3)]
    for b, a in pairs:
        p0, p1 = plain.classify(b, a), biased.classify(b, a)
        assert abs(sum(p1.scores.values()) - 1) < 1e-5
        assert p1.action == max(p1.scores, key=p1.scores.get) and p1.confidence == p1.scores[p1.action]
        for other in plain.labels[:-1]:  # the odds of `none` against every action grow by e^bias
            odds = (p1.scores["none"] / p1.scores[other]) / (p0.scores["none"] / p0.scores[other])
            assert odds == pytest.approx(math.exp(2.0), rel=1e-3)
        np.testing.assert_allclose(p1.delta, p0.delta)  # the embedding does not change
    batch = biased.classify_pairs([b for b, _ in pairs], [a for _, a in pairs])
    for (b, a), p in zip(pairs, batch):
        assert p.scores == pytest.approx(biased.classify(b, a).scores, abs=1e-4)


def test_calibrate_cli_rewrites_a_synthetic_model_and_refuses_others(tmp_path, tiny_model):
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    run_cli("train-synthetic", "--out", str(tmp_path / "m"), "--config", str(tmp_path / "tiny.yaml"),
            "--scenes", "single", "--pairs", "48", "--epochs", "1", "--quiet")
    trained = json.loads((tmp_path / "m" / "model.json").read_text())
    # 100 validation pairs with 1/9 `none`: too few to choose from; training says so and keeps 0
    assert trained["decision"]["none_logit_bias"] == 0.0 and "fewer than the 20" in trained["decision"]["not_chosen"]
    proc = run_cli("calibrate", str(tmp_path / "m"), "--pairs", "80", "--target", "0.9", "--scenes", "single",
                   "--out", str(tmp_path / "c"))
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "c" / "model.json").read_text())
    d = meta["decision"]
    assert printed["decision"] == d and printed["model_id"] == meta["model_id"]
    assert d["rule"] == decision.RULE and d["none_recall_target"] == 0.9 and d["validation"]["pairs"] == 80
    assert d["validation"]["none_pairs"] >= decision.MIN_NONE_PAIRS
    assert d["target_reached"] == (d["validation"]["none_recall"]["chosen"] >= 0.9)
    assert "seed 10" in d["validation"]["source"] and "['single']" in d["validation"]["source"]
    assert (meta["model_id"] == meta["weights_id"]) == (d["none_logit_bias"] == 0.0)
    assert meta["weights_id"] == trained["weights_id"] and meta["training"] == trained["training"]
    assert "none logit bias" in proc.stderr
    # registration switched on for the same weights: stored, named, and the bias chosen under it
    proc = run_cli("calibrate", str(tmp_path / "m"), "--pairs", "80", "--target", "0.9", "--scenes", "single",
                   "--register-max-shift", "0.06", "--out", str(tmp_path / "r"))
    reg = json.loads((tmp_path / "r" / "model.json").read_text())
    assert reg["preprocessing"]["register_max_shift"] == 0.06 and "registration: camera shifts up to 0.06" in proc.stderr
    assert reg["weights_id"] == meta["weights_id"] and reg["model_id"] not in (meta["model_id"], meta["weights_id"])
    assert meta["preprocessing"]["register_max_shift"] == 0.0
    proc = run_cli("calibrate", str(tmp_path / "m"), "--register-max-shift", "0.7", check=False)
    assert proc.returncode == 2 and "register_max_shift" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("calibrate", str(tiny_model), check=False)  # trained by train(), no synthetic recipe
    assert proc.returncode == 2 and "not made by train-synthetic" in proc.stderr
    proc = run_cli("calibrate", str(tmp_path / "m"), "--target", "0", check=False)
    assert proc.returncode == 2 and "none_recall_target" in proc.stderr and "Traceback" not in proc.stderr
