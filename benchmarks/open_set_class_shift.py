"""Is the unknown_change threshold's loss on new object classes a calibration problem? (issue 22,
item 3). Chosen on validation data only; the test splits are read by the open-set benchmark after.

    ./dev python benchmarks/open_set_class_shift.py data/sim OUT_DIR [--skip-actions turn_on turn_off]
        [--name class_shift]

The `unknown_change` cosine threshold is chosen so that the known labels keep 95 % of their
accuracy on the `val` pairs. On held-out object classes (syst) they kept only 0.78-0.82: a known
action's delta on a class never seen lies further from its prototype. The remedy tested here: hold
some training classes out of training as well and choose the threshold on their pairs, so that it
is chosen on the shift it must survive.

1. Trains the shipped recipe (`benchmarks/shipped_model.yaml`) on the suite's `train` and
   `train_varied` pairs without the left-out actions and without the calibration classes
   (`--calibration-classes`; by default the rule `calibration_classes`, fixed before any result:
   of the training classes, the two whose training combinations cover the most known actions
   while every known action keeps two training classes or more, ties by name; box and pot with
   turn_on/turn_off left out, box and laptop with open/close), validating on `val` without them
   (OUT_DIR/heldout).
2. `val`: prototypes and thresholds as `cde-ros calibrate MODEL val --unknown --sim-rois` chooses
   them (`calibrate_unknown`), on the `val` pairs of the training classes (OUT_DIR/NAME_val).
3. `unseen classes`: the same, then the cosine threshold chosen again by the same rule on the
   calibration classes' pairs of the `train` and `train_varied` splits (never trained on), each
   with its recorded roi (OUT_DIR/NAME_unseen).
4. Prints and writes (OUT_DIR/choices.json) what each calibration does on validation data: the
   left-out actions' `val` pairs (never trained on, not calibrated on) answered unknown_change and
   the known labels' accuracy kept on `val` and on the calibration classes' pairs, all with rois.

Then, once: `cde-ros benchmark --open-set data/sim --evaluate-model OUT_DIR/NAME_{val,unseen}`
(the calibration classes' pairs are left out of comp and syst: model.json's `skipped_classes`),
and `... open_set_class_shift.py --plot RESULTS_DIR --name NAME` draws both calibrations against
the issue's target from those results (RESULTS_DIR/open_set_NAME.png).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cde_ros.core.actions import ACTIONS
from cde_ros.core.dataset import PairSet
from cde_ros.data.bags import default_cache_dir
from cde_ros.model.network import CausalDeltaModel
from cde_ros.model.prototypes import (UNKNOWN, calibrate_unknown, choose_threshold, classifier_outputs,
                                      roi_changes_of)
from cde_ros.training.config import load_config
from cde_ros.training.simbench import bags_of, read_split, truth_rois
from cde_ros.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
KEEP = 0.95


def _select(pairs: PairSet, data: Path, split: str, skip_actions: list[str], classes: list[str],
            inside: bool) -> tuple[PairSet, list]:
    """The pairs of `split` without `skip_actions`, of the `classes` (inside) or of the others,
    with each pair's recorded roi (fractions of the frame)."""
    keep = ~np.isin(pairs.actions, skip_actions) if skip_actions else np.ones(len(pairs), bool)
    keep &= np.isin(pairs.objects, classes) == inside
    sub = pairs.subset(np.flatnonzero(keep))
    return sub, truth_rois(bags_of(data, split), sub.event_ids)


def _outputs(model, pairs: PairSet, rois: list) -> tuple:
    """The classifier's picks, the deltas, the backbone's deltas and the change inside each pair's
    roi: what the rule decides from (the same for both calibrations: one model)."""
    picks, deltas, _, backbone = classifier_outputs(model, pairs)
    return picks, deltas, backbone, roi_changes_of(model.preprocessing, pairs.before, pairs.after, rois, (1.0, 1.0))


def _answers(protos, outputs: tuple) -> np.ndarray:
    picks, deltas, backbone, changes = outputs
    return np.asarray(protos.decide(picks, deltas, roi_changes=changes, backbone_deltas=backbone)[0])


def _kept(protos, outputs: tuple, truth: list[str]) -> dict[str, float]:
    """The known labels' accuracy without the unknown_change rule and with it (rois sent)."""
    truth_a = np.asarray(truth)
    without = float(np.mean(np.asarray(outputs[0]) == truth_a))
    with_rule = float(np.mean(_answers(protos, outputs) == truth_a))
    return {"pairs": len(truth), "without": without, "with": with_rule, "kept": with_rule / without}


def calibration_classes(skip_actions: list[str]) -> list[str]:
    """The rule: of the training classes, the two whose training combinations cover the most
    known actions (all but `skip_actions`) while every known action keeps two training classes or
    more; ties by name."""
    from itertools import combinations as pairs_of

    from cde_ros.sim.tasks import combinations

    train = combinations("train")
    known = {a for _, a in train if a not in skip_actions}
    best: tuple[int, list[str]] | None = None
    for two in pairs_of(sorted({c for c, _ in train}), 2):
        left = {a: sum(1 for c, b in train if b == a and c not in two) for a in known}
        covered = len({a for c, a in train if c in two and a in known})
        if min(left.values()) >= 2 and (best is None or covered > best[0]):
            best = (covered, list(two))
    if best is None:
        raise ValueError(f"no two training classes can be held out with {skip_actions} left out")
    return best[1]


def plot(results: Path, name: str = "class_shift") -> Path:
    """The left-out actions answered unknown_change against the known labels' accuracy kept, for
    both calibrations on comp and syst (events with the target's roi, and without), with the
    issue's target region (>= 0.8 at >= 0.95 kept)."""
    from cde_ros.training.evaluation import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.add_patch(plt.Rectangle((0.95, 0.8), 0.06, 0.21, color="tab:green", alpha=0.15, label="issue 22's target"))
    held = None
    for which, color in (("val", "tab:blue"), ("unseen", "tab:orange")):
        r = json.loads((results / f"open_set_{name}_{which}.json").read_text())
        held = ", ".join(r["held_out_actions"])
        for split, marker in (("comp", "o"), ("syst", "s")):
            for roi in (False, True):
                m = r["splits"][split].get("with_roi") if roi else r["splits"][split]
                if m is None:
                    continue
                ka = m["known_accuracy"]
                ax.scatter(ka["with"] / ka["without"], m["held_out_answers"]["unknown_change"], color=color,
                           marker=marker, facecolors=color if roi else "none", s=60,
                           label=f"threshold from {'val' if which == 'val' else 'unseen classes'}: {split}"
                                 + (", rois" if roi else ""))
    ax.set(xlim=(0.6, 1.01), ylim=(0, 1.01), xlabel="known labels' accuracy kept (with / without the rule)",
           ylabel="left-out actions answered unknown_change",
           title=f"unknown_change threshold chosen on val or on unseen classes\n(test splits, {held} left out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, results / f"open_set_{name}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--plot", type=Path, metavar="RESULTS_DIR", help="only draw the open-set results there")
    ap.add_argument("--skip-actions", nargs="+", default=["turn_on", "turn_off"])
    ap.add_argument("--calibration-classes", nargs="+", help="instead of the rule's (calibration_classes)")
    ap.add_argument("--name", default="class_shift", help="the calibrated models' folder names: NAME_val, NAME_unseen")
    ap.add_argument("--epochs", type=int, help="instead of the recipe's 30 (a quick run through every step)")
    args = ap.parse_args()
    if args.plot:
        print(plot(args.plot, args.name))
        return
    if args.out is None:
        ap.error("give the suite's folder and an output folder (or --plot RESULTS_DIR)")
    cfg = load_config(ROOT / "benchmarks" / "shipped_model.yaml",
                      {"training": {"epochs": args.epochs}} if args.epochs else None)
    skip = args.skip_actions
    pre, classes = cfg.preprocessing, args.calibration_classes or calibration_classes(skip)
    print(f"calibration classes: {', '.join(classes)}")
    cache = default_cache_dir()  # the pair cache `cde-ros train` and `benchmark` read too
    read = lambda split: read_split(args.data, split, pre, cfg.pairing, cache, print)  # noqa: E731

    model_dir = args.out / "heldout"
    if not (model_dir / "model.json").is_file():
        parts = [_select(read(s), args.data, s, skip, classes, inside=False)[0] for s in ("train", "train_varied")]
        train_pairs = PairSet.concat(parts)
        val_pairs, _ = _select(read("val"), args.data, "val", skip, classes, inside=False)
        labels = [a for a in ACTIONS if a in set(train_pairs.actions)]
        print(f"training on {len(train_pairs)} pairs, validating on {len(val_pairs)}; labels {labels}")
        train(train_pairs, val_pairs, labels, cfg.model, pre, cfg.training, model_dir, log=print,
              extra_meta={"data": {"bags": [str(b) for s in ("train", "train_varied") for b in bags_of(args.data, s)],
                                   "val_bags": [str(b) for b in bags_of(args.data, "val")]},
                          "pairing": asdict(cfg.pairing), "skipped_actions": sorted(skip),
                          "skipped_classes": sorted(classes)})

    val = read("val")
    val_known, val_rois = _select(val, args.data, "val", skip, classes, inside=False)
    left_out = val.subset(np.flatnonzero(np.isin(val.actions, skip) & ~np.isin(val.objects, classes)))
    left_rois = truth_rois(bags_of(args.data, "val"), left_out.event_ids)
    calib = [_select(read(s), args.data, s, skip, classes, inside=True) for s in ("train", "train_varied")]
    calib_pairs = PairSet.concat([c[0] for c in calib])
    calib_rois = sum((c[1] for c in calib), [])

    model, meta = CausalDeltaModel.load(model_dir)
    val_out, left_out_out, calib_out = (_outputs(model, p, r) for p, r in ((val_known, val_rois),
                                                                          (left_out, left_rois),
                                                                          (calib_pairs, calib_rois)))
    calibrate_unknown(model, val_known, KEEP, source="the val split's pairs of the training classes",
                      rois=val_rois, camera_size=(1.0, 1.0))
    by_val = model.prototypes
    model.save(args.out / f"{args.name}_val", meta)

    picks, deltas, _, changes = calib_out
    chosen = choose_threshold(by_val, picks, deltas, calib_pairs.actions, KEEP, changes)
    info = dict(by_val.info)
    info["threshold_from"] = (f"cosine {chosen['unknown_threshold']:.3f} (was {by_val.threshold:.3f} "
                              f"from val), the known labels keeping {KEEP:.0%} of their accuracy on "
                              f"{len(calib_pairs)} pairs of the object classes {', '.join(classes)} "
                              "(train and train_varied episodes, never trained on, each with its recorded roi)")
    info["unseen_class_validation"] = chosen["validation"]
    by_classes = model.prototypes = replace(by_val, threshold=chosen["unknown_threshold"], info=info)
    model.save(args.out / f"{args.name}_unseen", meta)

    report = {"skipped_actions": skip, "calibration_classes": classes, "keep": KEEP,
              "left_out_val_pairs": len(left_out), "calibrations": {}}
    for name, protos in (("val", by_val), ("unseen classes", by_classes)):
        ans = _answers(protos, left_out_out)
        r = {"unknown_threshold": protos.threshold,
             "left_out_to_unknown_change": float(np.mean(ans == UNKNOWN)),
             "left_out_to_none": float(np.mean(ans == "none")),
             "val_known": _kept(protos, val_out, val_known.actions),
             "calibration_classes_known": _kept(protos, calib_out, calib_pairs.actions)}
        report["calibrations"][name] = r
        print(f"{name}: cosine {r['unknown_threshold']:.3f}; left-out val pairs -> unknown_change "
              f"{r['left_out_to_unknown_change']:.2f} (none {r['left_out_to_none']:.2f}); known kept "
              f"{r['val_known']['kept']:.3f} on val, {r['calibration_classes_known']['kept']:.3f} on "
              f"{', '.join(classes)}")
    (args.out / "choices.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
