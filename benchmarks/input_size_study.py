"""Input size and Top-K for small changes: the shipped recipe with one of them changed, side by
side (issue 19, "what input size and top_k fit small changes").

Train each variant with the shipped recipe and a config that changes only `preprocessing.input_size`
and/or `model.top_k` (or `training.seed`, for the seed-to-seed spread), evaluate it on the suite,
then write the table:

    ./dev cde-ros train data/sim/train/part_????? --val-bags data/sim/val/part_00000 \\
        --image-topic /camera/image_raw/compressed --config VARIANT.yaml --out models/VARIANT
    ./dev cde-ros benchmark --sim data/sim --evaluate-model models/VARIANT --out EVALS
    ./dev python benchmarks/input_size_study.py EVALS models/default models/VARIANT ...

The choice is read from the validation split only (the model's own operating point and the
`val` row); the test splits are reported beside it, never used to choose.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = ("val", "comp", "syst", "style", "style_comp", "style_syst")


def row(evals: Path, model_dir: Path) -> dict:
    meta = json.loads((model_dir / "model.json").read_text())
    ev = json.loads((evals / f"sim_model_{model_dir.name}.json").read_text())
    cfg = meta["training"]["config"]
    hist = meta["training"]["history"]
    splits = ev["splits"]
    small = next(iter(splits["val"].get("by_target_size", {}).values()), {})
    patch = meta["model_config"].get("backbone_kwargs", {}).get("patch_size", 16)
    return {"model": model_dir.name, "model_id": meta["model_id"], "input_size": meta["input_size"],
            "patches": (meta["input_size"] // patch) ** 2,
            "top_k": meta["top_k"], "seed": cfg["seed"], "epochs": cfg["epochs"],
            "val_accuracy_last_epoch": hist[-1]["val_accuracy"], "none_logit_bias": ev["none_logit_bias"],
            "accuracy": {s: splits[s]["accuracy"] for s in ROWS if s in splits},
            "false_success": {s: splits[s]["false_success_rate"] for s in ROWS if s in splits},
            "val_small_fixtures": small,
            "by_target_size": {s: splits[s].get("by_target_size") for s in ROWS if s in splits}}


def markdown(rows: list[dict]) -> str:
    L = ["# Input size and Top-K (the shipped recipe with one setting changed)", "",
         "Each row: `cde-ros train` on the suite's 2400 training episodes, 15 epochs, the `none` operating point "
         "on the validation pairs (target recall 0.95), then `cde-ros benchmark --sim --evaluate-model` (240 "
         "pairs per split). Choices are read from the **val** columns only; the test splits are shown beside them. "
         "Simulator data only.", "",
         "| model | input px | patches | top_k | seed | val acc. (last epoch, argmax) | val | comp | syst | style | "
         "style_comp | style_syst | val: small fixtures (< 18 % of the image) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["accuracy"]
        small = r["val_small_fixtures"]
        L.append(f"| {r['model']} ({r['model_id']}) | {r['input_size']} | {r['patches']} | {r['top_k']} | "
                 f"{r['seed']} | {r['val_accuracy_last_epoch']:.3f} | "
                 + " | ".join(f"{a[s]:.3f}" if s in a else "–" for s in ROWS)
                 + f" | {small.get('accuracy', float('nan')):.2f} ({small.get('n', 0)}) |")
    L += ["", "False success (a failed manipulation read as an action) at the operating point:", "",
          "| model | " + " | ".join(ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    for r in rows:
        L.append(f"| {r['model']} | " + " | ".join(f"{r['false_success'][s]:.3f}" if s in r["false_success"] else "–"
                                                   for s in ROWS) + " |")
    L += ["", "Accuracy on the pairs that changed something by the manipulated fixture's size (small / medium / "
          "large, pairs in brackets), validation split:", ""]
    for r in rows:
        b = r["by_target_size"].get("val") or {}
        L.append(f"- {r['model']}: " + ", ".join(f"{k} {v['accuracy']:.2f} ({v['n']})" if v["accuracy"] is not None
                                                 else f"{k} – (0)" for k, v in b.items()))
    return "\n".join(L) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    evals, models = Path(argv[0]), [Path(m) for m in argv[1:]]
    rows = [row(evals, m) for m in models]
    out = Path(__file__).resolve().parent / "results"
    (out / "input_size_study.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "input_size_study.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
