"""What a backbone costs on this machine's CPU: the shipped small ViT against a pretrained-size ViT-S
(DINO / DINOv2 layouts), at the input sizes that fit small changes.

    ./dev python benchmarks/backbones.py [--threads N] [--out benchmarks/results/backbones.md]

Per backbone and input size: tokens, parameters, inference of one pair (before + after, head
included), a training step of a batch of 16 pairs (forward + backward + AdamW) with the whole
network learning and with the backbone frozen (head only, from cached tokens), and how many
pixels of a 640x480 camera frame one patch covers (a handle that moves a few pixels must stay
inside a patch's view to be seen as a change of that patch).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from cde_ros.core.actions import ACTIONS
from cde_ros.core.preprocess import Preprocessing
from cde_ros.model.network import CausalDeltaModel, ModelConfig

CASES = [
    ("shipped small ViT (conv stem, 16 px patches)", ModelConfig(), 128),
    ("shipped small ViT at 160 px", ModelConfig(), 160),
    ("ViT-S/16 (DINO layout)", ModelConfig(backbone="vit_small_patch16_224", backbone_kwargs={}, patch_stem="linear"), 224),
    ("ViT-S/16 at 160 px", ModelConfig(backbone="vit_small_patch16_224", backbone_kwargs={}, patch_stem="linear"), 160),
    ("ViT-S/14 (DINOv2 layout) at 126 px", ModelConfig(backbone="vit_small_patch14_dinov2", backbone_kwargs={},
                                                       patch_stem="linear"), 126),
    ("ViT-S/14 (DINOv2 layout) at 224 px", ModelConfig(backbone="vit_small_patch14_dinov2", backbone_kwargs={},
                                                       patch_stem="linear"), 224),
]


def _time(fn, repeat: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1e3


def measure(name: str, mc: ModelConfig, size: int, repeat: int) -> dict:
    from dataclasses import replace

    model = CausalDeltaModel(replace(mc, labels=list(ACTIONS)), Preprocessing(size))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(1, 3, size, size)
    model.eval()
    with torch.inference_mode():
        infer = _time(lambda: model(x, x), repeat)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb = torch.randn(16, 3, size, size)
    y = torch.randint(0, len(ACTIONS), (16,))

    def step():
        out = model(xb, xb)
        loss = torch.nn.functional.cross_entropy(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    full = _time(step, max(1, repeat // 4))
    with torch.no_grad():
        g, p = model.backbone(xb)
    opt_head = torch.optim.AdamW(model.head_parameters(), lr=1e-3)

    def head_step():
        out = model.head(model.project(g, p), model.project(g, p))
        loss = torch.nn.functional.cross_entropy(out.logits, y)
        opt_head.zero_grad()
        loss.backward()
        opt_head.step()

    head = _time(head_step, repeat)
    patch = model.backbone.net.patch_embed.patch_size[0]
    return {"name": name, "size": size, "tokens": model.backbone.num_patches, "params_m": params,
            "infer_ms": infer, "train_step_ms": full, "head_step_ms": head,
            "camera_px_per_patch": f"{640 * patch / size:.0f} x {480 * patch / size:.0f}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--repeat", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/backbones.md")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(n, mc, s, args.repeat) for n, mc, s in CASES]
    lines = ["# Backbones on the CPU", "",
             f"`benchmarks/backbones.py` on {platform.platform()}, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}. One pair: before + after through backbone, projector and patch head. Training step: "
             "16 pairs, forward + backward + AdamW. Frozen backbone: the head alone on cached tokens.", "",
             "| backbone | input | patches | params (M) | one pair (ms) | train step, all (ms) | train step, frozen "
             "backbone (ms) | camera pixels per patch (640x480) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['size']} | {r['tokens']} | {r['params_m']:.1f} | {r['infer_ms']:.1f} | "
                     f"{r['train_step_ms']:.0f} | {r['head_step_ms']:.1f} | {r['camera_px_per_patch']} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
