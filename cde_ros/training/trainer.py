"""The training loop, shared by `cde-ros train` (bags), the benchmark and the shipped model.

- Inputs are `PairSet`s already resized to the model's input size (`resize_pairs`).
- Each epoch: train with AdamW + cosine schedule, log every loss term, evaluate on the validation
  pairs, write a checkpoint atomically (one file, `checkpoint/state.safetensors`, the epoch
  counter and history in its metadata; optimizer
  state included, nothing pickled) so `resume=True` continues where an interrupted run stopped.
- The final model is the last epoch's (no epoch is picked on test data). Its `none` operating
  point is then chosen on the validation pairs (`TrainConfig.none_recall_target`, model.decision).
- Under `torchrun` (WORLD_SIZE > 1) it trains with DistributedDataParallel; rank 0 writes files.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.actions import OPPOSITE
from ..core.dataset import PairSet
from ..core.preprocess import Preprocessing
from ..model import decision
from ..model.inference import pick_device
from ..model.losses import CHANGE_TARGETS, LossWeights, causal_delta_loss, change_targets
from ..model.network import CausalDeltaModel, ModelConfig
from .evaluation import evaluate_pairs

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    seed: int = 0
    loss: LossWeights = field(default_factory=LossWeights)
    # augmentation: independent brightness jitter per view, and horizontal flips that swap
    # push_left <-> push_right (the only labels a mirror changes)
    augment: bool = True
    # with augment: what differs between robot cells, the same for both frames of a pair (the
    # change between them stays what it is): the view zoomed in by up to this share of the frame
    # and shifted within it (another camera placement), and a colour cast of the light (a
    # per-channel shift of this size in normalised units). 0: off. Fixed beforehand to what the
    # simulator's cells differ by (camera placements, tinted light), not tuned on held-out data
    augment_view: float = 0.15
    augment_tint: float = 0.1
    # with augment, two more of the same kind (0: off): another camera angle, as a perspective
    # warp whose corners move by up to this share of the frame; other materials and light, as a
    # contrast and saturation change of up to this share, and with probability half of it a
    # grey image
    augment_perspective: float = 0.0
    augment_color: float = 0.0
    # time reversal: a pair played backwards (after as before) is a pair of the opposite action
    # (core.actions.OPPOSITE: open <-> close, turn_on <-> turn_off, push_left <-> push_right,
    # fill <-> empty; none stays none) and its delta is the negated delta. True: every pair whose
    # label has its opposite (or is none) in the label set is played backwards with probability
    # 0.5, so each recorded episode teaches its action and the opposite one
    reverse_pairs: bool = False
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = all cores
    # after the last epoch, the `none` operating point is chosen on the validation pairs so that
    # `none` recall there reaches this (model.decision); 0: leave it at 0 (plain argmax)
    none_recall_target: float = 0.98
    # learning rate of the backbone relative to `lr`. None: 1 for a backbone trained from
    # scratch, BACKBONE_LR_SCALE_PRETRAINED when it starts from pretrained weights or from a
    # trained model (`cde-ros train --init`): a large step wipes out what those weights know
    backbone_lr_scale: float | None = None
    # epochs at the start during which the backbone is frozen (its tokens are computed once and
    # cached, so such an epoch costs the head only); "all": it is never trained
    freeze_backbone: int | str = 0
    token_cache_gb: float = 4.0  # most memory the cached tokens may take; above it they are recomputed

    def __post_init__(self) -> None:
        def whole(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"training.{name} must be a whole number >= {lo}, got {v!r}")

        def number(name: str, lo: float, hi: float = math.inf, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or v != v:
                raise ValueError(f"training.{name} must be a number within [{lo}, {hi}], got {v!r}")

        whole("epochs", 1)
        whole("batch_size", 1)
        whole("seed", 0)
        whole("threads", 0)
        number("lr", 1e-8, 10.0)
        number("weight_decay", 0.0, 10.0)
        number("warmup_epochs", 0.0)
        number("token_cache_gb", 0.0)
        number("augment_view", 0.0, 0.5)
        number("augment_tint", 0.0, 1.0)
        number("augment_perspective", 0.0, 0.5)
        number("augment_color", 0.0, 1.0)
        number("backbone_lr_scale", 0.0, 10.0, optional=True)
        if not 0.0 <= self.none_recall_target <= 1.0:  # refused now, not after the last epoch
            raise ValueError(f"none_recall_target must be within [0, 1], got {self.none_recall_target}")
        f = self.freeze_backbone
        if not (f == "all" or (isinstance(f, int) and not isinstance(f, bool) and f >= 0)):
            raise ValueError(f"training.freeze_backbone must be a number of epochs >= 0 or 'all', got {f!r}")
        for name in ("augment", "reverse_pairs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"training.{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def frozen_epochs(self) -> int:
        return self.epochs if self.freeze_backbone == "all" else min(int(self.freeze_backbone), self.epochs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        loss = data.pop("loss", {})
        if not isinstance(loss, dict):
            raise ValueError(f"training.loss must be a mapping, got {loss!r}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        return cls(loss=LossWeights(**loss), **data)


# the backbone's learning rate relative to the head's when it starts from what it already knows;
# measured on the few-shot benchmark (benchmarks/results/fewshot.md)
BACKBONE_LR_SCALE_PRETRAINED = 0.1


def resize_pairs(pairs: PairSet, pre: Preprocessing) -> PairSet:
    """Resize every frame to the model input size with the shared preprocessing."""
    s = pre.input_size
    if pairs.before.shape[1:3] == (s, s):
        return pairs
    before = np.stack([pre.resize(im) for im in pairs.before])
    after = np.stack([pre.resize(im) for im in pairs.after])
    return PairSet(before, after, pairs.actions, pairs.objects, pairs.event_ids, pairs.envs)


def _flip_map(labels: list[str]) -> torch.Tensor:
    idx = {a: i for i, a in enumerate(labels)}
    out = list(range(len(labels)))
    for a in ("push_left", "push_right"):
        if a in idx and OPPOSITE[a] in idx:
            out[idx[a]] = idx[OPPOSITE[a]]
    return torch.tensor(out)


def _reverse_map(labels: list[str]) -> torch.Tensor:
    """Per label index: the index of the label a pair played backwards has, -1 where the label
    set has no such label (such pairs are never reversed)."""
    idx = {a: i for i, a in enumerate(labels)}
    return torch.tensor([idx.get("none" if a == "none" else OPPOSITE.get(a, ""), -1) for a in labels])


def _reverse(y: torch.Tensor, reverse_map: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Which pairs of a batch are played backwards (half of the reversible ones) and their labels."""
    rev = (torch.rand(len(y), generator=gen) < 0.5) & (reverse_map[y] >= 0)
    return rev, torch.where(rev, reverse_map[y], y)


def _swap(rev: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = rev.view(-1, *([1] * (before.dim() - 1))).to(before.device)
    return torch.where(m, after, before), torch.where(m, before, after)


def _shared_view(b: torch.Tensor, a: torch.Tensor, amount: float, gen: torch.Generator):
    """One crop per pair, the same for both frames: zoomed in by up to `amount`, shifted anywhere
    inside the frame, resized back (another camera placement)."""
    import torch.nn.functional as F

    n = b.shape[0]
    scale = 1 - amount * torch.rand(n, generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    grid = F.affine_grid(theta, list(b.shape), align_corners=False)
    return (F.grid_sample(b, grid, align_corners=False, padding_mode="reflection"),
            F.grid_sample(a, grid, align_corners=False, padding_mode="reflection"))


def _shared_tint(b: torch.Tensor, a: torch.Tensor, amount: float, gen: torch.Generator):
    """One colour cast per pair, the same for both frames (the light of another cell)."""
    cast = amount * torch.randn(b.shape[0], 3, 1, 1, generator=gen)
    return b + cast, a + cast


_FRAME_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))  # grid_sample's frame, clockwise


def _homographies(corners: torch.Tensor) -> torch.Tensor:
    """Per sample the 3x3 homography taking the corners of [-1, 1]^2 to `corners` (n, 4, 2)."""
    src = torch.tensor(_FRAME_CORNERS)
    n = corners.shape[0]
    rows = torch.zeros(n, 8, 8)
    x, y = src[:, 0], src[:, 1]
    u, v = corners[..., 0], corners[..., 1]
    rows[:, 0::2, 0], rows[:, 0::2, 1], rows[:, 0::2, 2] = x, y, 1.0
    rows[:, 1::2, 3], rows[:, 1::2, 4], rows[:, 1::2, 5] = x, y, 1.0
    rows[:, 0::2, 6], rows[:, 0::2, 7] = -u * x, -u * y
    rows[:, 1::2, 6], rows[:, 1::2, 7] = -v * x, -v * y
    rhs = torch.stack([u, v], dim=2).reshape(n, 8)
    h = torch.linalg.solve(rows, rhs)
    return torch.cat([h, torch.ones(n, 1)], dim=1).view(n, 3, 3)


def _shared_perspective(b: torch.Tensor, a: torch.Tensor, amount: float, gen: torch.Generator):
    """One perspective warp per pair, the same for both frames: each corner of the frame moves by
    up to `amount` of the frame inwards or outwards (the counter seen from another angle)."""
    import torch.nn.functional as F

    n, _, hgt, wid = b.shape
    corners = torch.tensor(_FRAME_CORNERS) + (torch.rand(n, 4, 2, generator=gen) * 2 - 1) * 2 * amount
    hom = _homographies(corners)
    ident = torch.eye(2, 3).expand(n, 2, 3)
    grid = F.affine_grid(ident, [n, 1, hgt, wid], align_corners=False).view(n, -1, 2)
    pts = torch.cat([grid, torch.ones(n, grid.shape[1], 1)], dim=2) @ hom.transpose(1, 2)
    grid = (pts[..., :2] / pts[..., 2:].clamp_min(1e-3)).view(n, hgt, wid, 2)
    return (F.grid_sample(b, grid, align_corners=False, padding_mode="reflection"),
            F.grid_sample(a, grid, align_corners=False, padding_mode="reflection"))


def _shared_color(b: torch.Tensor, a: torch.Tensor, amount: float, gen: torch.Generator,
                  mean: torch.Tensor, std: torch.Tensor):
    """One contrast and saturation change per pair, the same for both frames, on the images'
    pixel values (normalised frames in and out); with probability amount/2 the pair turns grey."""
    n = b.shape[0]
    contrast = 1 + amount * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    saturation = 1 + amount * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    saturation = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < amount / 2, torch.zeros_like(saturation),
                             saturation)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    level = ((b * std + mean) * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # the before frame's

    def apply(x: torch.Tensor) -> torch.Tensor:
        rgb = x * std + mean
        grey = (rgb * weights).sum(1, keepdim=True)
        rgb = grey + saturation * (rgb - grey)
        rgb = level + contrast * (rgb - level)
        return (rgb - mean) / std

    return apply(b), apply(a)


def _augment(b: torch.Tensor, a: torch.Tensor, y: torch.Tensor, flip_map: torch.Tensor, gen: torch.Generator,
             view: float = 0.0, tint: float = 0.0, perspective: float = 0.0, color: float = 0.0,
             mean: tuple[float, float, float] = (0.0, 0.0, 0.0), std: tuple[float, float, float] = (1.0, 1.0, 1.0)):
    n = b.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    b = torch.where(flip[:, None, None, None], b.flip(3), b)
    a = torch.where(flip[:, None, None, None], a.flip(3), a)
    y = torch.where(flip, flip_map[y], y)
    gb = 1 + 0.3 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    ga = 1 + 0.3 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    b, a = b * gb, a * ga
    if perspective:
        b, a = _shared_perspective(b, a, perspective, gen)
    if view:
        b, a = _shared_view(b, a, view, gen)
    if color:
        b, a = _shared_color(b, a, color, gen, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    if tint:
        b, a = _shared_tint(b, a, tint, gen)
    return b, a, y


@dataclass
class TrainResult:
    model: CausalDeltaModel
    history: list[dict[str, float]]
    model_id: str | None
    seconds: float


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


CHECKPOINT_FILE = "state.safetensors"


def _save_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict,
                     aux: nn.Module | None = None) -> None:
    """One file, replaced atomically: weights and optimizer tensors, and the epoch counter,
    history and settings as JSON in its metadata, so they cannot come from different epochs.
    `aux`: a training-only head (the change decoder), kept under `aux.`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if aux is not None:
        tensors.update({f"aux.{k}": v.detach().cpu().contiguous() for k, v in aux.state_dict().items()})
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{pid}.{k}"] = t.detach().cpu().contiguous()
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"state": json.dumps({**state, "param_groups": opt_state["param_groups"]})})
    os.replace(tmp, directory / CHECKPOINT_FILE)
    (directory / "state.json").unlink(missing_ok=True)  # the two-file layout of earlier versions


def _load_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer, cfg: "TrainConfig",
                     aux: nn.Module | None = None) -> dict:
    """The checkpoint's state; ValueError (one sentence) when it is damaged, from an older layout,
    for another network or for other training settings."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = directory / CHECKPOINT_FILE
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        state = json.loads(meta["state"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"the checkpoint {path} cannot be resumed from (damaged, or written by an older version: "
                         f"{type(exc).__name__}); train without --resume (and with --overwrite) to start again") from None
    saved = state.get("train_config", {})
    now = _cfg_json(cfg)
    differ = sorted(k for k in set(saved) | set(now) if k != "epochs" and saved.get(k) != now.get(k))
    if differ:
        raise ValueError(f"the checkpoint in {directory} was made with other training settings ({', '.join(differ)}); "
                         "resume with the same config, or start again with --overwrite")
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if aux is not None:
            aux.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aux.")})
        opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[name] = v
        opt.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise ValueError(f"the checkpoint in {directory} is for another network or optimizer ({first}); resume with "
                         "the same model config, or start again with --overwrite") from None
    return state


def _token_cache(model: CausalDeltaModel, pairs: PairSet, pre: Preprocessing, device: torch.device,
                 limit_gb: float, log: Callable[[str], None]) -> tuple[torch.Tensor, ...] | None:
    """The frozen backbone's tokens of every training pair, (glob_before, patches_before,
    glob_after, patches_after) on the CPU, or None when they would take more than `limit_gb`."""
    n = len(pairs)
    bb = model.backbone
    tokens = 1 + (bb.num_patches if model.config.head == "patch" else 0)
    gb = n * 2 * tokens * bb.dim * 4 / 2**30
    if gb > limit_gb:
        log(f"frozen backbone: its tokens would take {gb:.1f} GB (training.token_cache_gb {limit_gb:g}); recomputing "
            "them every batch")
        return None
    out: list[list[torch.Tensor]] = [[], [], [], []]
    model.eval()
    with torch.inference_mode():
        for i in range(0, n, 64):
            xb, xa = pre.normalise_pair(pairs.before[i:i + 64], pairs.after[i:i + 64])
            for k, x in enumerate((xb, xa)):
                g, p = bb(x.to(device))
                out[2 * k].append(g.float().cpu())
                out[2 * k + 1].append((p if model.config.head == "patch" else p[:, :0]).float().cpu())
    log(f"frozen backbone: tokens of {n} pairs cached ({gb * 1024:.0f} MB); augmentation is off while they are used")
    return tuple(torch.cat(parts) for parts in out)


def train(train_pairs: PairSet, val_pairs: PairSet | None, labels: list[str], model_cfg: ModelConfig,
          pre: Preprocessing, cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] = print,
          extra_meta: dict[str, Any] | None = None, init: CausalDeltaModel | None = None) -> TrainResult:
    """Train a model on `train_pairs`; evaluate on `val_pairs` each epoch; save to `out_dir`.
    `init`: start from this model (`model.network.init_from`; its architecture and preprocessing,
    `model_cfg` and `pre` are then not used) instead of a new one."""
    from tqdm.auto import tqdm

    world, rank, local_rank = _dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    unknown = sorted(set(train_pairs.actions) - set(labels))
    if unknown:
        raise ValueError(f"training pairs carry actions that are not in the label set: {unknown}")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if init is not None:
        if list(init.labels) != list(labels):
            raise ValueError(f"the init model's classifier is for {init.labels}, the training labels are {labels}")
        model, model_cfg, pre = init.to(device), init.config, init.preprocessing
    else:
        model_cfg = replace(model_cfg, labels=list(labels))
    if model_cfg.head == "baseline":
        cfg = replace(cfg, loss=replace(cfg.loss, alpha_contrast=0.0, alpha_sparsity=0.0, alpha_none=0.0,
                                        alpha_env=0.0, alpha_change=0.0))
    if init is None:
        model = CausalDeltaModel(model_cfg, pre).to(device)
    lr_scale = cfg.backbone_lr_scale
    if lr_scale is None:
        lr_scale = BACKBONE_LR_SCALE_PRETRAINED if (init is not None or model_cfg.starts_pretrained) else 1.0
    cfg = replace(cfg, backbone_lr_scale=float(lr_scale))  # resolved, so model.json records it
    train_pairs = resize_pairs(train_pairs, pre)
    val_pairs = resize_pairs(val_pairs, pre) if val_pairs is not None and len(val_pairs) else None
    label_idx = {a: i for i, a in enumerate(labels)}
    y_all = torch.tensor([label_idx[a] for a in train_pairs.actions])
    env_idx = {e: i for i, e in enumerate(sorted(set(train_pairs.envs)))}
    env_all = torch.tensor([env_idx[e] for e in train_pairs.envs])
    if cfg.loss.alpha_env and len(env_idx) < 2 and rank == 0:
        log(f"loss.alpha_env is set but the training pairs come from {len(env_idx)} environment; the term stays 0")
    before_all = torch.from_numpy(train_pairs.before)
    after_all = torch.from_numpy(train_pairs.after)
    n = len(train_pairs)
    if n < 2:
        raise ValueError(f"need at least 2 training pairs, got {n}")
    none_index = label_idx.get("none")
    flip_map = _flip_map(labels)
    reverse_map = _reverse_map(labels)
    if cfg.reverse_pairs and rank == 0 and not (reverse_map >= 0).any():
        log("training.reverse_pairs is set but no label has its opposite in the label set; no pair is reversed")
    decoder, grid = _change_decoder(model, cfg, distributed, device)
    opt = torch.optim.AdamW([{"params": list(model.backbone.parameters()), "lr": cfg.lr * lr_scale},
                             {"params": model.head_parameters() + list(decoder.parameters() if decoder else []),
                              "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    per_rank = math.ceil(n / world)
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))))
    ddp_model: nn.Module = model
    if distributed:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_dir = Path(out_dir) / CHECKPOINT_DIR if out_dir else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume and ckpt_dir and ((ckpt_dir / CHECKPOINT_FILE).is_file() or (ckpt_dir / "state.json").is_file()):
        state = _load_checkpoint(ckpt_dir, model, opt, cfg, decoder)
        start_epoch, history = int(state["epoch"]), list(state["history"])
        with warnings.catch_warnings():  # stepping the schedule without optimizer steps is the point here
            warnings.simplefilter("ignore", UserWarning)
            sched.last_epoch = start_epoch * steps_per_epoch - 1
            sched.step()
        if rank == 0:
            log(f"resuming from {ckpt_dir} after epoch {start_epoch}/{cfg.epochs}")
    elif resume and rank == 0:
        log(f"no checkpoint in {ckpt_dir}; starting from scratch")

    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    frozen = cfg.frozen_epochs
    cache = None
    if start_epoch < frozen and not distributed:
        cache = _token_cache(model, train_pairs, pre, device, cfg.token_cache_gb, log if rank == 0 else lambda m: None)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        freeze = epoch < frozen
        model.train()
        model.backbone.requires_grad_(not freeze)
        if freeze:
            model.backbone.eval()  # batch norm statistics stay the pretrained ones
        elif cache is not None:
            cache = None  # the backbone learns from here on: its tokens change
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        if distributed:  # each rank its own slice of the same permutation
            order = order[rank::world]
        sums: dict[str, float] = {}
        correct = seen = 0
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress or rank != 0, leave=False)
        for i in bar:
            idx = order[i:i + cfg.batch_size]
            y, env = y_all[idx], env_all[idx].to(device)
            rev = None
            if cfg.reverse_pairs:
                rev, y = _reverse(y, reverse_map, gen)
            xb = xa = None
            if cache is not None:
                gb, pb, ga, pa = (t[idx].to(device) for t in cache)
                if rev is not None:
                    (gb, ga), (pb, pa) = _swap(rev, gb, ga), _swap(rev, pb, pa)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    out = model.head(model.project(gb, pb), model.project(ga, pa))
                y = y.to(device)
                if decoder is not None:  # the targets from the frames the cached tokens came from
                    xb, xa = pre.normalise_pair(before_all[idx], after_all[idx])
                    if rev is not None:
                        xb, xa = _swap(rev, xb, xa)
                    xb, xa = xb.to(device), xa.to(device)
            else:
                xb, xa = pre.normalise_pair(before_all[idx], after_all[idx])
                if rev is not None:
                    xb, xa = _swap(rev, xb, xa)
                if cfg.augment:
                    xb, xa, y = _augment(xb, xa, y, flip_map, gen, cfg.augment_view, cfg.augment_tint,
                                          cfg.augment_perspective, cfg.augment_color, pre.mean, pre.std)
                xb, xa, y = xb.to(device, non_blocking=True), xa.to(device, non_blocking=True), y.to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    out = ddp_model(xb, xa)
            change = None
            if decoder is not None:
                change = (decoder(out.patch_deltas.float()), change_targets(xb, xa, grid))
            loss, terms = causal_delta_loss(out.logits, out.delta, y, cfg.loss, none_index, out.topk_delta,
                                             out.patch_deltas, env, change)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            correct += int((out.logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{terms['total']:.3f}")
        row = {"epoch": epoch + 1, **{f"train_{k}": v / max(1, seen) for k, v in sums.items()},
               "train_accuracy": correct / max(1, seen), "lr": opt.param_groups[1]["lr"],
               "backbone_lr": 0.0 if freeze else opt.param_groups[0]["lr"]}
        if val_pairs is not None and rank == 0:
            row["val_accuracy"] = evaluate_pairs(model, val_pairs, device=device, batch_size=256)["accuracy"]
        history.append(row)
        if rank == 0:
            if ckpt_dir:
                _save_checkpoint(ckpt_dir, model, opt, {"epoch": epoch + 1, "history": history,
                                                        "train_config": _cfg_json(cfg)}, decoder)
            log("epoch {epoch}/{total}: ".format(epoch=epoch + 1, total=cfg.epochs) + ", ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch",)))
    seconds = time.perf_counter() - t0
    model.eval()
    if rank == 0 and cfg.none_recall_target and val_pairs is not None and decision.NONE in labels:
        try:
            log(decision.describe(decision.calibrate(
                model, val_pairs, cfg.none_recall_target, device, source="the training run's validation pairs")))
        except ValueError as exc:  # too few `none` pairs among the validation pairs
            model.decision = {"none_logit_bias": 0.0, "not_chosen": str(exc)}
            log(f"none operating point left at bias 0: {exc}")
    model_id = None
    if out_dir and rank == 0:
        meta = {"training": {"config": _cfg_json(cfg), "history": history, "pairs": n,
                             "val_pairs": len(val_pairs) if val_pairs is not None else 0,
                             "seconds": round(seconds, 1), "world_size": world},
                **(extra_meta or {})}
        if history:
            meta["metrics"] = {k: v for k, v in history[-1].items() if k != "epoch"}
        model_id = model.save(out_dir, meta)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(model, history, model_id, seconds)


def _change_decoder(model: CausalDeltaModel, cfg: TrainConfig, distributed: bool, device: torch.device
                    ) -> tuple[nn.Module | None, int]:
    """The training-only head of the change-reconstruction term (loss.alpha_change) and the
    side of the patch grid it reads; (None, 0) when the term is off."""
    if not cfg.loss.alpha_change:
        return None, 0
    if model.config.head != "patch":
        raise ValueError(f"loss.alpha_change needs the patch head (model.head: patch), not {model.config.head!r}")
    if distributed:
        raise ValueError("loss.alpha_change is not supported when training with several processes")
    n = model.backbone.num_patches
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"loss.alpha_change needs a square grid of patch tokens; this backbone has {n}")
    return nn.Linear(model.config.embed_dim, CHANGE_TARGETS).to(device), grid


def _cfg_json(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)
