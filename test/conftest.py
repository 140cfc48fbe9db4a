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


# Commands that load a model: run in this process, where torch and timm are imported once (each
# `python -m cde_ros.cli` pays 5-7 s of imports on a 2-core machine). The rest (recorders, the
# demo, calls with an environment of their own) run as a real `cde-ros` process; so do these with
# process=True.
IN_PROCESS = frozenset({"train", "train-synthetic", "calibrate", "enroll", "eval", "benchmark"})


def run_cli(*args: str, check: bool = True, env: dict | None = None, process: bool = False):
    """Run `cde-ros ARGS` and return a CompletedProcess (returncode, stdout, stderr).

    In a subprocess of this interpreter (`env` added to its environment), or, for the commands in
    IN_PROCESS, through `cde_ros.cli.main` in this process with stdout and stderr captured: exit
    codes as the process would give them, and an exception escaping `main` is exit 1 with its
    traceback on stderr, as Python prints it. The process-wide state a command may change (the
    environment, torch's threads and random state, numpy's random state) is restored afterwards."""
    import subprocess

    if process or env or not args or args[0] not in IN_PROCESS:
        proc = subprocess.run([sys.executable, "-m", "cde_ros.cli", *args], capture_output=True, text=True,
                              timeout=900, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    else:
        proc = _run_cli_here(list(args))
    if check and proc.returncode != 0:
        raise AssertionError(f"cde-ros {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def _run_cli_here(args: list[str]):
    import contextlib
    import io
    import subprocess
    import traceback

    import numpy as np
    import torch

    from cde_ros.cli import main

    environ, threads = dict(os.environ), torch.get_num_threads()
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    out, err = io.StringIO(), io.StringIO()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except Exception:  # what an uncaught exception does to the process: exit 1, traceback
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)
    return subprocess.CompletedProcess(["cde-ros", *args], code, out.getvalue(), err.getvalue())
