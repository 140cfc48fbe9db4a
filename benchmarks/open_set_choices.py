"""How the unknown_change / enroll rule was checked, on the suite's VALIDATION split only (the
test splits comp and syst are not read here).

    ./dev python benchmarks/open_set_choices.py data/sim MODEL_DIR

MODEL_DIR: trained with `cde-ros train --skip-actions ...`. Two checks:
1. Novelty scores, leave one known action out: prototypes of the other known actions from the
   val pairs; AUROC of the left-out action's pairs against the others' for the raw cosine, the
   cosine of centred deltas (the mean delta of the known labels' val pairs subtracted first) and
   1 - the classifier's largest probability over the other actions.
2. Enrolling the left-out actions from k of their train-split events, scored on the val pairs of
   the left-out actions (never trained on, never used for prototypes or thresholds):
   a. the space: how often the nearer of the two left-out actions' k-example prototypes is the
      right one, in the projected delta space and in the backbone's global-token delta space
      (10 draws);
   b. the rule that names the model's unknown_change answers (each val event with the
      manipulated fixture's recorded box as its roi; MODEL_DIR calibrated with --sim-rois), in
      the backbone's space: the nearest enrolled prototype above its own leave-one-out threshold
      (the rule before), nearer than `none`'s backbone prototype, or nearer than every known
      label's (the rule chosen); the left-out actions right, the other left-out action taken for
      the first when that is enrolled alone, and the failed manipulations answered an enrolled
      action (3 draws, as in the open-set benchmark).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from cde_ros.data.pairing import PairingConfig
from cde_ros.model.inference import predict_pairs
from cde_ros.model.network import CausalDeltaModel
from cde_ros.model.prototypes import UNKNOWN, auroc, prototype, roi_changes_of, unit
from cde_ros.training.simbench import read_split


def main(data: Path, model_dir: Path) -> None:
    model, meta = CausalDeltaModel.load(model_dir)
    held = list(meta["skipped_actions"])
    pc = PairingConfig.of_model(meta)
    cache = Path.home() / ".cache" / "cde_ros" / "pairs"
    val = read_split(data, "val", model.preprocessing, pc, cache)
    logits, d = predict_pairs(model, val)
    picks = np.array([model.labels[i] for i in model.decide(torch.from_numpy(logits)).argmax(1).numpy()])
    truth = np.array(val.actions)
    known = ~np.isin(truth, held)
    actions = [a for a in model.labels if a != "none"]
    print(f"{model_dir}: left out {held}; {int((~known).sum())} of their val pairs, "
          f"{np.mean(picks[~known] == 'none'):.2f} of them read as none")
    # 1. leave one known action out
    kd, kt, kl = d[known], truth[known], logits[known]
    for variant in ("raw", "centred", "max probability"):
        res = []
        for a in actions:
            rest = [b for b in actions if b != a]
            others = (kt != a) & (kt != "none")
            if variant == "max probability":
                cols = [model.labels.index(b) for b in rest]
                nov = 1 - torch.from_numpy(kl[:, cols]).softmax(1).numpy().max(1)
            else:
                mu = kd[kt != a].mean(0) if variant == "centred" else 0.0
                x = kd - mu
                nov = 1 - (unit(x) @ np.stack([prototype(x[kt == b]) for b in rest]).T).max(1)
            res.append(auroc(nov[kt == a], nov[others]))
        print(f"  novelty {variant:>15}: " + " ".join(f"{a} {r:.2f}" for a, r in zip(actions, res)) +
              f"  mean {np.mean(res):.3f}")
    # 2. enrolling the left-out actions
    pool = read_split(data, "train", model.preprocessing, pc, cache)
    keep = np.flatnonzero(np.isin(pool.actions, held))
    pool = pool.subset(keep)
    pool_a = np.array(pool.actions)
    spaces = {"projected": (d, predict_pairs(model, pool)[1])}
    spaces["backbone"] = (backbone_deltas(model, val), backbone_deltas(model, pool))
    new = ~known
    # 2a. the space: the two left-out actions told apart by the nearer k-example prototype
    for name, (x, xp) in spaces.items():
        row = []
        for k in (1, 5, 10):
            hits = []
            for seed in range(10):
                rng = np.random.default_rng(seed)
                vecs = np.stack([prototype(xp[rng.choice(np.flatnonzero(pool_a == a), k, replace=False)]) for a in held])
                hits.append(np.mean(np.array(held)[(unit(x[new]) @ vecs.T).argmax(1)] == truth[new]))
            row.append(np.mean(hits))
        print(f"  enroll space {name:>9}: left-out actions told apart at k = 1 / 5 / 10: "
              + " / ".join(f"{v:.3f}" for v in row))
    # 2b. the rule that names the model's unknown_change answers (events with the target's roi)
    rois = roi_changes_of(model.preprocessing, val.before, val.after, val.target_boxes, val.camera_size)
    base = np.array(model.prototypes.decide(list(picks), d, roi_changes=rois)[0])
    unknown = base == UNKNOWN
    x, xp = spaces["backbone"]
    labels_bb = [a for a in model.labels if np.any(known & (truth == a))]
    known_bb = np.stack([prototype(x[known & (truth == a)]) for a in labels_bb])
    print(f"  the rule answers {np.mean(unknown[new]):.2f} of the left-out val pairs unknown_change")
    for rule in ("own thresholds", "against none", "against all"):
        for k in (1, 5, 10):
            right, taken, failed = [], [], []
            for seed in range(3):
                rng = np.random.default_rng([seed, k, 23])
                picked = {a: rng.choice(np.flatnonzero(pool_a == a), k, replace=False) for a in held}

                def answers(enrolled: list[str]) -> np.ndarray:
                    vecs = np.stack([prototype(xp[picked[a]]) for a in enrolled])
                    own = [leave_one_out(xp[picked[a]]) for a in enrolled]
                    se, sk = unit(x) @ vecs.T, unit(x) @ known_bb.T
                    out = base.copy()
                    for i in np.flatnonzero(unknown):
                        j = int(se[i].argmax())
                        if rule == "own thresholds" and own[j] is not None and se[i, j] < own[j]:
                            continue
                        if rule == "against none" and sk[i, labels_bb.index("none")] > se[i, j]:
                            continue
                        if rule == "against all" and sk[i].max() > se[i, j]:
                            continue
                        out[i] = enrolled[j]
                    return out

                both, alone = answers(held), answers(held[:1])
                right.append(np.mean(both[new] == truth[new]))
                taken.append(np.mean(alone[truth == held[1]] == held[0]))
                failed.append(np.mean(np.isin(both[truth == "none"], held)))
            print(f"  enroll rule {rule:>14} k={k:>2}: left-out actions right {np.mean(right):.3f}; "
                  f"{held[1]} taken for {held[0]} enrolled alone {np.mean(taken):.3f}; failed manipulations "
                  f"answered an enrolled action {np.mean(failed):.3f}")


def backbone_deltas(model, pairs) -> np.ndarray:
    return predict_pairs(model, pairs, backbone=True)[2]


def leave_one_out(x: np.ndarray) -> float | None:
    """The lowest similarity of one example to the prototype of the others (the rule before)."""
    if len(x) < 2:
        return None
    return float(min(prototype(np.delete(x, j, 0)) @ unit(x)[j] for j in range(len(x))))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: benchmarks/open_set_choices.py SUITE_DIR MODEL_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
