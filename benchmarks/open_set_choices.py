"""How the unknown_change / enroll rule was checked, on the suite's VALIDATION split only (the
test splits comp and syst are not read here).

    ./dev python benchmarks/open_set_choices.py data/sim MODEL_DIR

MODEL_DIR: trained with `cde-ros train --skip-actions ...`. Two checks:
1. Novelty scores, leave one known action out: prototypes of the other known actions from the
   val pairs; AUROC of the left-out action's pairs against the others' for the raw cosine, the
   cosine of centred deltas (the mean delta of the known labels' val pairs subtracted first) and
   1 - the classifier's largest probability over the other actions.
2. Enrolling the left-out actions from k of their train-split events (seeds as in the open-set
   benchmark), raw against centred deltas, scored on the val pairs of the left-out actions (never
   trained on, never used for prototypes or the threshold) and of the known labels; no
   unknown_change threshold.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from cde_ros.data.pairing import PairingConfig
from cde_ros.model.inference import predict_pairs
from cde_ros.model.network import CausalDeltaModel
from cde_ros.model.prototypes import Prototypes, auroc, prototype, unit
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
    pool = pool.subset(np.flatnonzero(np.isin(pool.actions, held)))
    _, pool_d = predict_pairs(model, pool)
    pool_a = np.array(pool.actions)
    for centred in (False, True):
        mu = d[known].mean(0) if centred else 0.0
        known_vectors = [prototype(d[known & (truth == a)] - mu) for a in actions]
        for k in (1, 5, 10):
            scores = []
            for seed in range(3):
                enrolled = []
                for a in held:
                    idx = np.flatnonzero(pool_a == a)
                    pick = np.random.default_rng([seed, k, 23]).choice(idx, size=min(k, len(idx)), replace=False)
                    enrolled.append(prototype(pool_d[pick] - mu))
                # the model's own rule (no unknown_change threshold) on the (centred) deltas
                protos = Prototypes(actions + held, np.stack(known_vectors + enrolled), {}, enrolled=held)
                answers = np.array(protos.decide(list(picks), d - mu, None)[0])
                scores.append((np.mean(answers[~known] == truth[~known]), np.mean(answers[known] == truth[known])))
            s = np.mean(scores, 0)
            print(f"  enroll {'centred' if centred else 'raw':>7} k={k:>2}: left-out actions {s[0]:.3f}, "
                  f"known labels {s[1]:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: benchmarks/open_set_choices.py SUITE_DIR MODEL_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
