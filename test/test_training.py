import json

import pytest
from conftest import interrupt_at

from cde_ros.core.actions import ACTIONS
from cde_ros.core.preprocess import Preprocessing
from cde_ros.model.network import ModelConfig
from cde_ros.synthetic.scenes import SceneConfig, generate_pairs
from cde_ros.training.config import load_config
from cde_ros.training.trainer import TrainConfig, train

MC = ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                 embed_dim=32, projector_hidden=32, top_k=4)
PRE = Preprocessing(32)


@pytest.fixture(scope="module")
def data():
    cfg = SceneConfig(size=(64, 64))
    # validation with enough `none` pairs to choose the none operating point from (>= 20)
    return generate_pairs("iid", 160, cfg, seed=0), generate_pairs("val", 80, cfg, seed=0, none_fraction=0.3)


def test_training_learns_and_logs_every_term(tmp_path, data):
    tr, va = data
    res = train(tr, va, list(ACTIONS), MC, PRE, TrainConfig(epochs=4, batch_size=32, lr=2e-3), tmp_path,
                progress=False, log=lambda m: None)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert {"train_ce", "train_supcon", "train_l1", "train_total", "val_accuracy"} <= set(h[0])
    assert h[-1]["train_total"] < h[0]["train_total"]  # the optimised objective goes down
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["training"]["history"] == h and meta["metrics"]["val_accuracy"] == h[-1]["val_accuracy"]
    assert meta["model_id"] == res.model_id
    # after the last epoch the `none` operating point is chosen on the validation pairs
    d = meta["decision"]
    assert d["validation"]["none_pairs"] == va.actions.count("none") >= 20 and d["none_recall_target"] == 0.98
    assert d["validation"]["source"] == "the training run's validation pairs"
    assert res.model.none_logit_bias == d["none_logit_bias"]
    assert d["target_reached"] == (d["validation"]["none_recall"]["chosen"] >= 0.98)
    if d["none_logit_bias"] > 0:  # the smallest bias that reaches it: below it, the target is missed
        assert d["validation"]["none_recall"]["bias_0"] < 0.98


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, data):
    tr, _ = data
    cfg = TrainConfig(epochs=3, batch_size=32)
    full = train(tr, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "full", progress=False, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        train(tr, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "run", progress=False, log=interrupt_at("epoch 2/3"))
    assert not (tmp_path / "run" / "model.json").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "checkpoint" / "state.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["state"])["epoch"] == 2  # one file: weights and counter together
    lines = []
    resumed = train(tr, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "run", resume=True, progress=False,
                    log=lines.append)
    assert any("resuming" in line and "after epoch 2" in line for line in lines)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == full.history[:2]
    assert resumed.history[-1]["train_total"] == pytest.approx(full.history[-1]["train_total"], rel=1e-4)


def test_unknown_labels_are_refused(data):
    tr, _ = data
    with pytest.raises(ValueError, match="not in the label set"):
        train(tr, None, ["open", "close"], MC, PRE, TrainConfig(epochs=1), None, progress=False)


def test_yaml_config_is_read_and_checked(tmp_path):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "train.yaml")
    assert cfg == load_config(None), "config/train.yaml says it shows the built-in defaults; they differ"
    assert cfg.model.head == "patch" and cfg.training.loss.alpha_contrast == 2.0
    assert cfg.training.loss.alpha_sparsity == 1.0 and cfg.model.embed_dim == 256
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad)
    bad.write_text("training:\n  none_recall_target: 98\n")
    with pytest.raises(ValueError, match="none_recall_target must be within"):
        load_config(bad)
    bad.write_text("modle: {}\n")
    with pytest.raises(ValueError, match="modle"):
        load_config(bad)


def test_train_synthetic_cli_makes_a_loadable_model_that_records_its_recipe(tmp_path):
    """`cde-ros train-synthetic` (the 2D scenes' trainer) runs end to end, small."""
    from conftest import TINY_YAML, run_cli

    from cde_ros.model.network import CausalDeltaModel

    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    proc = run_cli("train-synthetic", "--out", str(tmp_path / "m"), "--config", str(tmp_path / "tiny.yaml"),
                   "--scenes", "cluttered", "--pairs", "48", "--epochs", "1", "--random-shape-p", "0.25", "--quiet")
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    model, meta = CausalDeltaModel.load(tmp_path / "m")
    assert printed["model_id"] == meta["model_id"] and list(model.labels) == list(ACTIONS)
    assert meta["data"]["synthetic"] == {"scenes": ["cluttered"], "pairs": 48, "seed": 0, "none_fraction": 0.25,
                                         "random_color_p": 0.5, "random_shape_p": 0.25}
    assert meta["input_size"] == 32 and len(meta["training"]["history"]) == 1


def test_cell_augmentations_treat_both_frames_alike():
    """The zoom/shift and the colour cast are the same for both frames of a pair: a pair without
    change stays without change, while the frames themselves do change."""
    import torch

    from cde_ros.training.trainer import _shared_tint, _shared_view

    x = torch.randn(8, 3, 32, 32)
    b, a = _shared_view(x, x.clone(), 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(b, a) and not torch.allclose(b, x, atol=0.1)
    b, a = _shared_tint(x, x.clone(), 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(b, a) and not torch.allclose(b, x, atol=0.01)
    # and a real change survives it: the difference between the views is cropped, not removed
    moved = x.clone()
    moved[:, :, 12:20, 12:20] += 2.0
    b, a = _shared_view(x, moved, 0.3, torch.Generator().manual_seed(2))
    assert (a - b).abs().sum() > 0.5 * (moved - x).abs().sum()


def test_perspective_and_colour_augmentations_treat_both_frames_alike():
    """The perspective warp maps the frame's corners where it says, is the identity at 0 and is
    the same for both frames; the contrast/saturation change keeps a grey image grey and leaves a
    pair without change without change."""
    import torch

    from cde_ros.training.trainer import _homographies, _shared_color, _shared_perspective

    corners = torch.tensor([[[-0.9, -1.1], [1.2, -0.8], [0.9, 1.0], [-1.0, 0.7]]])
    hom = _homographies(corners)[0]
    src = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    mapped = src @ hom.T
    assert torch.allclose(mapped[:, :2] / mapped[:, 2:], corners[0], atol=1e-5)
    x = torch.randn(8, 3, 32, 32)
    b, a = _shared_perspective(x, x.clone(), 0.0, torch.Generator().manual_seed(1))
    assert torch.allclose(b, x, atol=1e-4)
    b, a = _shared_perspective(x, x.clone(), 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(b, a) and not torch.allclose(b, x, atol=0.1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    b, a = _shared_color(x, x.clone(), 0.0, torch.Generator().manual_seed(1), mean, std)
    assert torch.allclose(b, x, atol=1e-5)
    b, a = _shared_color(x, x.clone(), 0.4, torch.Generator().manual_seed(1), mean, std)
    assert torch.equal(b, a) and not torch.allclose(b, x, atol=0.05)
    grey = ((torch.rand(8, 1, 32, 32).expand(8, 3, 32, 32)) - mean) / std
    b, _ = _shared_color(grey, grey.clone(), 0.4, torch.Generator().manual_seed(3), mean, std)
    rgb = b * std + mean
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 1], rgb[:, 2], atol=1e-5)


def test_augmentation_strengths_out_of_range_are_refused_in_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    for name, value in (("augment_perspective", "-0.1"), ("augment_perspective", "0.9"), ("augment_color", "1.5"),
                        ("augment_color", "strong"), ("augment_color", ".nan"), ("augment_perspective", "true"),
                        ("augment_color", "1e308")):
        bad.write_text(f"training:\n  {name}: {value}\n")
        with pytest.raises(ValueError, match=f"training.{name} must be a number within"):
            load_config(bad)
    bad.write_text("training:\n  augment_perspective: 0.5\n  augment_color: 1.0\n")
    cfg = load_config(bad)
    assert (cfg.training.augment_perspective, cfg.training.augment_color) == (0.5, 1.0)


def test_push_labels_follow_the_mirror():
    import torch

    from cde_ros.training.trainer import _augment, _flip_map

    labels = list(ACTIONS)
    x = torch.arange(8.0).repeat(128, 3, 8, 1)  # columns 0..7: a mirror shows in column 0
    y = torch.tensor([labels.index("push_left")] * 64 + [labels.index("open")] * 64)
    b, _, y2 = _augment(x, x.clone(), y, _flip_map(labels), torch.Generator().manual_seed(0))
    mirrored = b[:, 0, 0, 0] > b[:, 0, 0, 7]
    assert mirrored.any() and (~mirrored).any()
    left, right = labels.index("push_left"), labels.index("push_right")
    assert torch.equal(y2[:64], torch.where(mirrored[:64], right, left))
    assert (y2[64:] == labels.index("open")).all()


def test_resume_refuses_a_damaged_checkpoint_or_other_settings_in_one_sentence(tmp_path, data):
    tr, _ = data
    cfg = TrainConfig(epochs=2, batch_size=32)
    train(tr, None, list(ACTIONS), MC, PRE, cfg, tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="other training settings .*lr"):
        train(tr, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=3, batch_size=32, lr=1e-3), tmp_path, resume=True,
              progress=False, log=lambda m: None)
    ckpt = tmp_path / "checkpoint" / "state.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size * 9 // 10])  # killed while copying
    with pytest.raises(ValueError, match="cannot be resumed from"):
        train(tr, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=3, batch_size=32), tmp_path, resume=True,
              progress=False, log=lambda m: None)


def test_reversed_pairs_teach_the_opposite_action():
    """With training.reverse_pairs, pairs of `open` played backwards teach `close`: a model that
    never saw a `close` pair recognises reversed `open` pairs as `close`; without it, it does not.
    Labels without their opposite in the label set (`wipe`) are never reversed."""
    import numpy as np

    from cde_ros.core.dataset import PairSet
    from cde_ros.training.evaluation import evaluate_pairs
    from cde_ros.training.trainer import _reverse_map

    assert _reverse_map(["open", "close", "wipe", "none"]).tolist() == [1, 0, -1, 3]
    pairs = generate_pairs("iid", 360, SceneConfig(size=(64, 64)), seed=3)
    keep = np.flatnonzero(np.isin(pairs.actions, ["open", "none"]))
    tr = pairs.subset(keep)
    opened = pairs.subset(np.flatnonzero(np.array(pairs.actions) == "open"))
    backwards = PairSet(opened.after, opened.before, ["close"] * len(opened))
    labels = ["open", "close", "none"]
    rates = {}
    for reverse in (False, True):
        cfg = TrainConfig(epochs=30, batch_size=16, lr=2e-3, reverse_pairs=reverse, none_recall_target=0.0)
        model = train(tr, None, labels, MC, PRE, cfg, None, progress=False, log=lambda m: None).model
        rates[reverse] = evaluate_pairs(model, backwards)["per_class"]["close"]
    assert rates[False] < 0.2 and rates[True] > 0.8, rates
    with pytest.raises(ValueError, match="reverse_pairs must be true or false"):
        TrainConfig(reverse_pairs="yes")
