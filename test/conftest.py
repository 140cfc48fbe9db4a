"""Shared fixtures. ROS traffic stays on this machine in a domain of its own."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# An isolated ROS domain per test session, discovery on localhost only. Set before rclpy loads.
os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]

# a model small enough to train in seconds on 2 CPU cores, as a `cde-ros train --config` file
TINY_YAML = """
model:
  backbone_kwargs: {patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}
  embed_dim: 32
  projector_hidden: 32
  top_k: 4
preprocessing: {input_size: 32}
training: {epochs: 2, batch_size: 16, threads: 1}
data: {val_fraction: 0.2}
"""
SHIPPED = ROOT / "models" / "default"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small real model trained for one epoch on synthetic pairs (seconds)."""
    from cde_ros.core.actions import ACTIONS
    from cde_ros.core.preprocess import Preprocessing
    from cde_ros.model.network import ModelConfig
    from cde_ros.synthetic.scenes import SceneConfig, generate_pairs
    from cde_ros.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_model")
    pre = Preprocessing(32)
    pairs = generate_pairs("iid", 96, SceneConfig(size=(64, 64)), seed=3)
    mc = ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                     embed_dim=32, projector_hidden=32, top_k=4)
    train(pairs, None, list(ACTIONS), mc, pre, TrainConfig(epochs=1, batch_size=32), out, progress=False,
          log=lambda m: None)
    return out


@pytest.fixture
def roi_gate_model(tiny_model, tmp_path) -> Path:
    """The tiny model at its largest none bias (it reads plain test frames as none) with class
    prototypes whose roi change threshold is 50 (of 255) and no unknown_change threshold."""
    import numpy as np

    from cde_ros.model.network import CausalDeltaModel
    from cde_ros.model.prototypes import Prototypes

    model, meta = CausalDeltaModel.load(tiny_model)
    model.decision = {"none_logit_bias": 3.0}
    actions = [a for a in model.labels if a != "none"]
    model.prototypes = Prototypes(actions, np.random.default_rng(0).normal(size=(len(actions), model.config.embed_dim)),
                                  {}, threshold=-1.0, roi_change_threshold=50.0)
    model.save(tmp_path / "roi_gate_model", meta)
    return tmp_path / "roi_gate_model"


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    if not (SHIPPED / "model.json").is_file():
        pytest.fail(f"the shipped model is missing from {SHIPPED}")
    return SHIPPED


def interrupt_at(line_prefix: str):
    """A training `log` that stops the run (KeyboardInterrupt, as Ctrl-C) at the first line that
    starts with `line_prefix`, e.g. "epoch 2/3"."""

    def log(line: str) -> None:
        if line.startswith(line_prefix):
            raise KeyboardInterrupt

    return log


def run_cli(*args: str, check: bool = True, env: dict | None = None):
    """Run `cde-ros` in a subprocess of this interpreter (`env` added to its environment);
    returns CompletedProcess."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "cde_ros.cli", *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"cde-ros {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc
