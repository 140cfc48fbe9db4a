"""Starting a training from what is already known: `train --init`, timm hub weights from an
offline Hugging Face cache, local DINOv2-style checkpoints, a frozen backbone with cached tokens,
the backbone's learning rate, the environment-invariance term, the change-reconstruction term."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_YAML, interrupt_at, run_cli

from cde_ros.core.actions import ACTIONS
from cde_ros.core.preprocess import Preprocessing
from cde_ros.model.losses import (CHANGE_TARGETS, LossWeights, causal_delta_loss, change_reconstruction,
                                  change_targets, env_mmd)
from cde_ros.model.network import CausalDeltaModel, ModelConfig, init_from
from cde_ros.synthetic.scenes import SceneConfig, generate_pairs
from cde_ros.training.trainer import TrainConfig, train

MC = ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                 embed_dim=32, projector_hidden=32, top_k=4)
PRE = Preprocessing(32)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs("iid", 96, SceneConfig(size=(64, 64)), seed=1)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, pairs):
    out = tmp_path_factory.mktemp("base")
    train(pairs, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=1, batch_size=32), out, progress=False,
          log=lambda m: None)
    return out


def test_init_from_keeps_the_shared_classifier_rows_and_starts_new_ones(base_model):
    old, _ = CausalDeltaModel.load(base_model)
    labels = ["open", "close", "wipe", "none"]
    model, info = init_from(base_model, labels)
    assert info["labels_kept"] == ["open", "close", "none"] and info["labels_new"] == ["wipe"]
    assert set(info["labels_dropped"]) == set(ACTIONS) - {"open", "close", "none"}
    assert info["model_id"] == json.loads((base_model / "model.json").read_text())["model_id"]
    for a in info["labels_kept"]:
        assert torch.equal(model.classifier.weight[labels.index(a)], old.classifier.weight[ACTIONS.index(a)])
    assert not any(torch.equal(model.classifier.weight[2], old.classifier.weight[i]) for i in range(len(ACTIONS)))
    for (k, v), (k2, v2) in zip(model.backbone.state_dict().items(), old.backbone.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert model.none_logit_bias == 0.0 and model.labels == labels


def test_frozen_backbone_trains_from_cached_tokens_and_keeps_the_init_weights(base_model, pairs):
    init, _ = init_from(base_model, list(ACTIONS))
    before = _state(init.backbone)
    head_before = _state(init.projector)
    lines: list[str] = []
    res = train(pairs, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=2, batch_size=32, freeze_backbone="all"),
                None, progress=False, log=lines.append, init=init)
    assert any("tokens of 96 pairs cached" in line for line in lines)
    after = _state(res.model.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics included
    assert any(not torch.equal(head_before[k], v) for k, v in _state(res.model.projector).items())
    assert all(r["backbone_lr"] == 0.0 for r in res.history)


def test_partly_frozen_backbone_learns_after_its_frozen_epochs(base_model, pairs):
    init, _ = init_from(base_model, list(ACTIONS))
    before = _state(init.backbone)
    res = train(pairs, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=3, batch_size=32, freeze_backbone=1),
                None, progress=False, log=lambda m: None, init=init)
    # (the logged rate is the one after an epoch's last step; the cosine schedule ends at 0)
    assert res.history[0]["backbone_lr"] == 0.0 < res.history[1]["backbone_lr"]
    assert any(not torch.equal(before[k], v) for k, v in _state(res.model.backbone).items())


def test_backbone_learning_rate_is_scaled_down_when_it_starts_from_knowledge(base_model, pairs, tmp_path):
    init, _ = init_from(base_model, list(ACTIONS))
    res = train(pairs, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=1, batch_size=32, warmup_epochs=0), tmp_path,
                progress=False, log=lambda m: None, init=init)
    row = res.history[0]
    assert row["backbone_lr"] == pytest.approx(0.1 * row["lr"])
    assert json.loads((tmp_path / "model.json").read_text())["training"]["config"]["backbone_lr_scale"] == 0.1
    scratch = train(pairs, None, list(ACTIONS), MC, PRE, TrainConfig(epochs=1, batch_size=32, warmup_epochs=0), None,
                    progress=False, log=lambda m: None)
    assert scratch.history[0]["backbone_lr"] == pytest.approx(scratch.history[0]["lr"])


def _bag(tmp_path: Path, name: str, split: str, seed: int) -> Path:
    bag = tmp_path / name
    run_cli("record-synthetic", str(bag), "--events", "24", "--seed", str(seed), "--split", split, "--quiet")
    return bag


def test_train_init_cli_records_its_origin_and_relabels(tmp_path, base_model):
    bag = _bag(tmp_path, "bag", "iid", 3)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    # the user's labels differ entirely: every event is relabelled through a CSV sidecar
    rows = ["bag,event_id,start,end,action"] + [f",ev-{i:04d},,,{'wipe' if i % 2 else 'stir'}" for i in range(24)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "fine"
    proc = run_cli("train", str(bag), "--out", str(out), "--init", str(base_model), "--labels",
                   str(tmp_path / "labels.csv"), "--epochs", "1", "--no-cache", "--quiet")
    meta = json.loads((out / "model.json").read_text())
    base_id = json.loads((base_model / "model.json").read_text())["model_id"]
    assert meta["init"]["model_id"] == base_id and meta["init"]["labels_new"] == ["stir", "wipe"]
    assert meta["labels"] == ["stir", "wipe"] and meta["input_size"] == 32  # the init model's preprocessing
    assert "starting from" in proc.stderr
    # a config that asks for another architecture is one sentence
    (tmp_path / "wide.yaml").write_text("model:\n  embed_dim: 64\n")
    bad = run_cli("train", str(bag), "--out", str(tmp_path / "x"), "--init", str(base_model), "--config",
                  str(tmp_path / "wide.yaml"), "--no-cache", "--quiet", check=False)
    assert bad.returncode == 2 and "model.embed_dim" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x" / "model.json").exists()


def test_train_refuses_to_replace_a_model_or_a_checkpoint(tmp_path, base_model):
    bag = _bag(tmp_path, "bag", "iid", 4)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    out = tmp_path / "m"
    run_cli("train", str(bag), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"), "--epochs", "1",
            "--no-cache", "--quiet")
    first = (out / "model.safetensors").read_bytes()
    again = run_cli("train", str(bag), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"), "--no-cache",
                    "--quiet", check=False)
    assert again.returncode == 2 and "already holds a model" in again.stderr and "--overwrite" in again.stderr
    assert (out / "model.safetensors").read_bytes() == first
    run_cli("train", str(bag), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"), "--epochs", "1",
            "--no-cache", "--quiet", "--overwrite")
    (out / "model.json").unlink()
    ckpt = run_cli("train", str(bag), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"), "--no-cache",
                   "--quiet", check=False)
    assert ckpt.returncode == 2 and "checkpoint" in ckpt.stderr and "--resume" in ckpt.stderr


@pytest.mark.parametrize("yaml,expect", [("training: {epochs: ten}", "training.epochs must be a whole number"),
                                         ("training: {batch_size: 0}", "training.batch_size must be a whole number"),
                                         ("training: {freeze_backbone: some}", "freeze_backbone"),
                                         ("training: {backbone_lr_scale: -1}", "backbone_lr_scale"),
                                         ("training: 3", "expected a mapping")])
def test_config_values_of_the_wrong_kind_are_one_sentence(tmp_path, yaml, expect):
    (tmp_path / "c.yaml").write_text(yaml + "\n")
    proc = run_cli("train", str(tmp_path / "nobag"), "--out", str(tmp_path / "m"), "--config", str(tmp_path / "c.yaml"),
                   check=False)
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------ pretrained weights

def _hf_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face hub cache holding `repo`'s model.safetensors, in the layout huggingface_hub
    itself writes (blobs, refs/main, snapshots/<commit>/ with a link to the blob)."""
    from safetensors.torch import save_file

    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    (base / "blobs").mkdir()
    blob = base / "blobs" / "b1f1e5d0c0ffee"
    save_file({k: v.contiguous() for k, v in state.items()}, str(blob))
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snap), snap / "model.safetensors")
    return root


HUB_SCRIPT = """
import sys, torch
from cde_ros.core.actions import ACTIONS
from cde_ros.model.network import CausalDeltaModel, ModelConfig, ModelFileError
from cde_ros.core.preprocess import Preprocessing
mc = ModelConfig(backbone="test_vit.r160_in1k", backbone_kwargs={}, pretrained=True, embed_dim=32,
                 projector_hidden=32, top_k=4, labels=list(ACTIONS))
assert mc.patch_stem == "linear"  # the checkpoint brings its patch embedding
try:
    model = CausalDeltaModel(mc, Preprocessing(64))  # 64 px: timm resamples the position embeddings
except ModelFileError as exc:
    print("ERROR", exc)
    sys.exit(3)
state = model.backbone.net.state_dict()
torch.save({"qkv": state["blocks.0.attn.qkv.weight"], "pos": torch.tensor(state["pos_embed"].shape)}, sys.argv[1])
model.save(sys.argv[2])
"""


def _run_offline(tmp_path: Path, hub: Path, *args: str):
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", HUB_SCRIPT, *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_timm_hub_weights_load_offline_from_the_hugging_face_cache(tmp_path):
    """A hub name with pretrained: true, HF_HUB_OFFLINE=1, the weights in a cache laid out as
    huggingface_hub lays it out: timm loads them; no network is asked."""
    import timm

    source = timm.create_model("test_vit.r160_in1k", pretrained=False)
    torch.nn.init.normal_(source.blocks[0].attn.qkv.weight, std=0.3)  # unlike any fresh initialisation
    hub = _hf_cache(tmp_path / "hub", "timm/test_vit.r160_in1k", source.state_dict())
    proc = _run_offline(tmp_path, hub, str(tmp_path / "got.pt"), str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "got.pt", weights_only=True)
    assert torch.equal(got["qkv"], source.state_dict()["blocks.0.attn.qkv.weight"])
    assert int(got["pos"][1]) == 1 + (64 // 16) ** 2
    assert "huggingface.co" not in proc.stderr  # nothing was requested
    # once trained, the weights are in model.safetensors: loading it needs no cache at all
    loaded, meta = CausalDeltaModel.load(tmp_path / "m")
    assert meta["model_config"]["pretrained"] is True
    assert torch.equal(loaded.backbone.net.state_dict()["blocks.0.attn.qkv.weight"], got["qkv"])


def test_missing_hub_weights_offline_say_what_to_download_and_where(tmp_path):
    proc = _run_offline(tmp_path, tmp_path / "empty_hub", str(tmp_path / "got.pt"), str(tmp_path / "m"))
    assert proc.returncode == 3, proc.stderr
    assert "huggingface-cli download timm/test_vit.r160_in1k" in proc.stdout
    assert str(tmp_path / "empty_hub") in proc.stdout and "huggingface.co" not in proc.stderr


def test_a_dinov2_style_patch14_checkpoint_loads_at_a_multiple_of_14(tmp_path):
    import timm
    from safetensors.torch import save_file

    kw = {"embed_dim": 48, "depth": 1, "num_heads": 2}
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, **kw)  # 518 px: 37 x 37 positions
    torch.nn.init.normal_(source.blocks[0].mlp.fc1.weight, std=0.3)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "dino.safetensors"))
    mc = ModelConfig(backbone="vit_small_patch14_dinov2", backbone_kwargs=kw, embed_dim=32, projector_hidden=32,
                     pretrained_file=str(tmp_path / "dino.safetensors"), labels=list(ACTIONS))
    model = CausalDeltaModel(mc, Preprocessing(126))
    assert model.backbone.num_patches == 9 * 9
    assert torch.equal(model.backbone.net.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)
    out = model(torch.zeros(2, 3, 126, 126), torch.zeros(2, 3, 126, 126))
    assert out.logits.shape == (2, len(ACTIONS))


# ------------------------------------------------------------------------ environments

def test_env_mmd_is_zero_for_one_environment_and_grows_with_the_gap():
    torch.manual_seed(0)
    labels = torch.tensor([0] * 16 + [1] * 16)
    same = torch.randn(32, 8)
    one_env = torch.zeros(32, dtype=torch.long)
    assert float(env_mmd(same, labels, one_env)) == 0.0
    envs = torch.tensor(([0] * 8 + [1] * 8) * 2)
    shifted = same.clone()
    shifted[envs == 1] += torch.tensor([3.0] + [0.0] * 7)
    assert float(env_mmd(shifted, labels, envs)) > float(env_mmd(same, labels, envs)) + 0.05
    logits = torch.randn(32, 2)
    _, terms = causal_delta_loss(logits, shifted, labels, LossWeights(alpha_env=1.0), envs=envs)
    assert terms["env_mmd"] == pytest.approx(float(env_mmd(shifted, labels, envs)))


def test_training_with_two_environments_logs_the_invariance_term(pairs):
    envs = ["cell_a" if i % 2 else "cell_b" for i in range(len(pairs))]
    two = type(pairs)(pairs.before, pairs.after, pairs.actions, pairs.objects, pairs.event_ids, envs)
    res = train(two, None, list(ACTIONS), MC, PRE,
                TrainConfig(epochs=1, batch_size=48, loss=LossWeights(alpha_env=1.0)), None, progress=False,
                log=lambda m: None)
    assert res.history[0]["train_env_mmd"] > 0


# ------------------------------------------------------------------------ change reconstruction

def test_change_targets_are_each_patchs_signed_and_absolute_colour_change():
    before = torch.zeros(1, 3, 16, 16)
    after = before.clone()
    after[0, 0, :8, 8:] = 2.0  # the top right patch of a 2 x 2 grid turns red
    after[0, 2, 8:, :8] = -1.0  # the bottom left one loses blue
    t = change_targets(before, after, 2)
    assert t.shape == (1, 4, CHANGE_TARGETS)
    assert torch.allclose(t[0, 1], torch.tensor([2.0, 0, 0, 2.0, 0, 0]))  # row-major: patch 1 is top right
    assert torch.allclose(t[0, 2], torch.tensor([0, 0, -1.0, 0, 0, 1.0]))
    assert torch.equal(t[0, 0], torch.zeros(6)) and torch.equal(t[0, 3], torch.zeros(6))
    assert float(change_reconstruction(t, t)) == 0.0
    assert float(change_reconstruction(torch.zeros_like(t), t)) == pytest.approx(1.0)


def test_training_with_the_change_term_logs_it_and_saves_no_decoder(tmp_path, pairs):
    cfg = TrainConfig(epochs=2, batch_size=32, loss=LossWeights(alpha_change=1.0))
    res = train(pairs, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "m", progress=False, log=lambda m: None)
    first, last = res.history[0]["train_change"], res.history[-1]["train_change"]
    assert 0 < last < first  # the decoder learns to read the patch changes from the patch deltas
    plain = CausalDeltaModel(replace(MC, labels=list(ACTIONS)), PRE)
    saved, _ = CausalDeltaModel.load(tmp_path / "m")
    assert set(saved.state_dict()) == set(plain.state_dict())  # the decoder is a training-only head
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["config"]["loss"]["alpha_change"] == 1.0
    # a frozen backbone (cached tokens): the targets come from the frames the tokens were made of
    frozen = train(pairs, None, list(ACTIONS), MC, PRE, replace(cfg, freeze_backbone="all"), None, progress=False,
                   log=lambda m: None)
    assert 0 < frozen.history[-1]["train_change"] < frozen.history[0]["train_change"]


def test_the_change_term_resumes_with_its_decoder_and_needs_the_patch_head(tmp_path, pairs):
    cfg = TrainConfig(epochs=2, batch_size=32, loss=LossWeights(alpha_change=1.0))
    full = train(pairs, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "full", progress=False, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        train(pairs, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "run", progress=False, log=interrupt_at("epoch 1/2"))
    resumed = train(pairs, None, list(ACTIONS), MC, PRE, cfg, tmp_path / "run", resume=True, progress=False,
                    log=lambda m: None)
    # a decoder started afresh on resume would read the changes worse than the uninterrupted one
    assert resumed.history[-1]["train_change"] == pytest.approx(full.history[-1]["train_change"], rel=1e-4)
    with pytest.raises(ValueError, match="needs the patch head"):
        train(pairs, None, list(ACTIONS), replace(MC, head="global"), PRE, cfg, None, progress=False,
              log=lambda m: None)


def test_validation_pairs_can_come_from_recordings_of_their_own(tmp_path):
    train_bag, val_bag = _bag(tmp_path, "train", "iid", 5), _bag(tmp_path, "val", "val", 6)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    run_cli("train", str(train_bag), "--val-bags", str(val_bag), "--out", str(tmp_path / "m"), "--config",
            str(tmp_path / "tiny.yaml"), "--epochs", "1", "--no-cache", "--quiet")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["pairs"] == 24 and meta["training"]["val_pairs"] == 24  # none of the training events held out
    assert meta["data"]["val_bags"] == [str(val_bag)] and "val_accuracy" in meta["metrics"]
