"""What a new robot cell costs, factor by factor (issue 19): the training scene style with one
factor of the held-out style at a time, and a model's accuracy on each.

The simulator's held-out style differs from training in three factors at once: where the camera
is (low and far to the side, or nearly top-down), the light (tinted, low from the side) and the
room's materials (concrete, brick, granite, brushed steel). This records the same episodes (the
`val` split's training combinations, seed 21, the suite's camera rate and JPEG frames) four
times: the training style as it is, and with its camera placement, its lighting or its
materials replaced by those of a held-out style drawn beside it; then evaluates a model on each:

    ./dev python benchmarks/style_factors.py OUT_DIR [MODEL_DIR ...]    # default: the shipped model

Recording takes about 8 minutes on 2 cores (4 x 180 episodes). The recordings are diagnostics,
not suite splits: no choice is made on them. Writes OUT_DIR/style_factors.{md,json}.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

FACTORS = {"none": (), "camera": ("camera",), "lighting": ("lighting",),
           "materials": ("floor", "wall", "counter", "cabinet")}
EPISODES, SEED = 180, 21


def factor_style(fields: tuple[str, ...]):
    """A style function for `record_sim`: a training style with `fields` from a held-out style.
    Both are drawn for every factor (the control too), so the four recordings hold the same
    episodes and differ only in the replaced factor."""
    from cde_ros.sim.styles import sample_style

    def draw(rng, cfg):
        own = sample_style(rng, "train")
        other = sample_style(np.random.default_rng(int(rng.integers(2**32))), "heldout")
        return replace(own, **{f: getattr(other, f) for f in fields})

    return draw


def record(out: Path) -> None:
    from cde_ros.sim.record import SimRecordConfig, record_sim
    from cde_ros.training.simbench import SUITE_RATE_HZ

    for name, fields in FACTORS.items():
        bag = out / name / "part_00000"
        if (bag.parent / "part_00000.json").is_file():
            continue
        cfg = SimRecordConfig(episodes=EPISODES, split="val", style="train", seed=SEED, rate_hz=SUITE_RATE_HZ,
                              image_format="compressed", around_event_only=True)
        summary = record_sim(bag, cfg, progress=False, log=lambda m: None, style=factor_style(fields))
        (bag.parent / "part_00000.json").write_text(json.dumps(summary, indent=1) + "\n")


def evaluate(out: Path, model_dirs: list[Path]) -> list[dict]:
    from cde_ros.data.pairing import PairingConfig
    from cde_ros.model.network import CausalDeltaModel
    from cde_ros.training.evaluation import evaluate_pairs
    from cde_ros.training.simbench import read_split

    rows = []
    for model_dir in model_dirs:
        model, meta = CausalDeltaModel.load(model_dir)
        for name in FACTORS:
            pairs = read_split(out, name, model.preprocessing, PairingConfig.of_model(meta))
            m = evaluate_pairs(model, pairs)
            rows.append({"model": str(model_dir), "model_id": meta["model_id"], "factor": name,
                         **{k: m[k] for k in ("n", "accuracy", "false_success_rate", "false_failure_rate",
                                              "per_class")}})
    return rows


def markdown(rows: list[dict]) -> str:
    labels = list(rows[0]["per_class"])
    L = ["# A new cell, factor by factor", "",
         f"The `val` split's training combinations ({EPISODES} episodes, seed {SEED}) recorded four times: the "
         "training scene style as it is (`none`), and with one factor of a held-out style drawn beside it: its "
         "camera placement, its lighting, or its materials (floor, walls, counter, cabinets). The same episodes "
         "each time (`benchmarks/style_factors.py`). Simulator data; a diagnostic, not a test split.", "",
         "| model | held-out factor | pairs | accuracy | false success | false failure | "
         + " | ".join(labels) + " |", "|---|---|---|---|---|---|" + "---|" * len(labels)]
    for r in rows:
        L.append(f"| {Path(r['model']).name} ({r['model_id']}) | {r['factor']} | {r['n']} | {r['accuracy']:.3f} | "
                 f"{r['false_success_rate']:.3f} | {r['false_failure_rate']:.3f} | "
                 + " | ".join(f"{r['per_class'].get(a, float('nan')):.2f}" for a in labels) + " |")
    return "\n".join(L) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    from cde_ros.core.paths import shipped_model_dir

    out = Path(argv[0])
    models = [Path(m) for m in argv[1:]] or [shipped_model_dir()]
    record(out)
    rows = evaluate(out, models)
    (out / "style_factors.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "style_factors.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
