"""Benchmarks on simulated recordings (`cde-ros record-sim`): the data suite, a model evaluated on
every split with a pixel-difference floor beside it, and the data-efficiency (few-shot) benchmark.

The suite (`SUITE`) is a directory of rosbag2 recordings, one folder per split, each made of
parts of at most `PART_EPISODES` episodes (recorded in parallel processes, resumable):

    train        training combinations, training scene style      (the shipped model trains on it)
    train_varied training combinations, the `varied` scene style     (and on it: more diverse cells)
    val          the same, other episodes                           (epochs, operating points)
    comp, syst   held-out combinations / object classes             (test)
    style        training combinations in the held-out scene style  (test: a new robot cell)
    style_comp, style_syst   held-out combinations / classes in the held-out style (test)
    style_train  training combinations in the held-out style        (few-shot pool: a user's recordings)
    style_many   the same, 2400 other episodes                      (few-shot reference: plenty of labels)
    twin         training combinations, training style, a second fixture of the same class beside
                 the manipulated one, untouched (test: the right action on the wrong object)

No choice (recipe, epochs, thresholds) is made on a test split: the pixel floor's threshold comes
from `train`, the `none` operating point from `val`.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.dataset import PairSet
from .evaluation import classification_metrics, plot_confusion

PART_EPISODES = 300
TRUTH_TOPIC = "/sim/ground_truth"


@dataclass(frozen=True)
class SplitSpec:
    split: str  # sim.tasks.SPLITS
    style: str  # sim.styles.DOMAINS
    episodes: int
    seed: int
    # each part from one camera placement family, cycling (so that each bag is one viewpoint: the
    # recording environments the environment-invariance loss term aligns across)
    camera_per_part: bool = False
    # a second, untouched fixture of the same class beside the manipulated one (record-sim --twin)
    twin: bool = False


SUITE: dict[str, SplitSpec] = {
    "train": SplitSpec("train", "train", 2400, 0, camera_per_part=True),
    "val": SplitSpec("val", "train", 240, 1),
    "comp": SplitSpec("comp", "train", 240, 2),
    "syst": SplitSpec("syst", "train", 240, 3),
    "style": SplitSpec("val", "heldout", 240, 4),
    "style_comp": SplitSpec("comp", "heldout", 240, 5),
    "style_syst": SplitSpec("syst", "heldout", 240, 6),
    "style_train": SplitSpec("train", "heldout", 450, 7),
    "train_varied": SplitSpec("train", "varied", 2400, 8, camera_per_part=True),
    "twin": SplitSpec("val", "train", 240, 9, twin=True),
    "style_many": SplitSpec("train", "heldout", 2400, 77),
}
TEST_SPLITS = ("comp", "syst", "style", "style_comp", "style_syst", "twin")
SUITE_RATE_HZ = 5.0  # the suite's camera rate: half the recorder's default, half the rendering


def _parts(spec: SplitSpec, part_episodes: int) -> list[tuple[int, int]]:
    return [(first, min(part_episodes, spec.episodes - first)) for first in range(0, spec.episodes, part_episodes)]


def record_suite(data: Path, names: tuple[str, ...] = tuple(SUITE), workers: int = 2, scale: float = 1.0,
                 part_episodes: int = PART_EPISODES, log: Callable[[str], None] = print,
                 size: tuple[int, int] = (640, 480), episodes: dict[str, int] | None = None) -> None:
    """Record the suite's splits under `data` with `workers` recorder processes (one OpenGL thread
    each). Parts already recorded (a summary beside them) are kept; a part left unfinished by an
    interrupted run is recorded again. `scale` multiplies every split's episode count
    (`episodes` replaces it per split)."""
    from ..sim.styles import camera_names

    jobs = []
    for name in names:
        if name not in SUITE:
            raise ValueError(f"unknown suite split {name!r}; choose from {', '.join(SUITE)}")
        base = SUITE[name]
        count = (episodes or {}).get(name, max(1, int(round(base.episodes * scale))))
        spec = replace(base, episodes=count)
        for k, (first, n) in enumerate(_parts(spec, part_episodes)):
            out = data / name / f"part_{first:05d}"
            if (out.parent / f"{out.name}.json").is_file():
                continue
            if out.exists():
                import shutil

                shutil.rmtree(out)
            camera = camera_names(spec.style)[k % len(camera_names(spec.style))] if spec.camera_per_part else ""
            jobs.append((out, spec, first, n, camera))
    running: list[tuple[subprocess.Popen, Path]] = []
    env = {**os.environ, "LP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    done = 0
    while jobs or running:
        while jobs and len(running) < workers:
            out, spec, first, n, camera = jobs.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "cde_ros.cli", "record-sim", str(out), "--split", spec.split, "--style",
                   spec.style, "--episodes", str(n), "--first-episode", str(first), "--seed", str(spec.seed),
                   "--rate", str(SUITE_RATE_HZ), "--image", "compressed", "--width", str(size[0]), "--height",
                   str(size[1]), "--around-event-only", "--quiet"] + (["--camera", camera] if camera else []) + (
                   ["--twin"] if spec.twin else [])
            running.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
                            out))
        time.sleep(1.0)
        for proc, out in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, out))
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                for p, _ in running:
                    p.terminate()
                last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {proc.returncode}"
                # the child's own one-sentence error, without its "cde-ros: error: " prefix (ours adds one)
                last = last.removeprefix("cde-ros: error: ")
                raise RuntimeError(f"recording {out} failed ({last}); the finished parts are kept and a rerun "
                                   "records this one and the rest anew")
            (out.parent / f"{out.name}.json").write_text(stdout.strip().splitlines()[-1] + "\n")
            done += 1
            log(f"recorded {out} ({done} parts, {time.perf_counter() - t0:.0f} s)")


def bags_of(data: Path, name: str) -> list[Path]:
    """The recorded parts of a suite split (only complete ones)."""
    folder = data / name
    parts = sorted(p for p in folder.glob("part_*") if p.is_dir() and (folder / f"{p.name}.json").is_file())
    if not parts:
        raise FileNotFoundError(f"{folder} holds no recorded parts; record them with cde-ros record-sim --suite {data}")
    return parts


def read_split(data: Path, name: str, pre, pairing, cache_dir: Path | None = None,
               log: Callable[[str], None] = lambda m: None, skip_classes: list[str] | tuple = ()) -> PairSet:
    """The labelled pairs of a suite split, paired as the node pairs them, with the object class
    of each pair from the recording's ground truth; without the pairs of the object classes in
    `skip_classes` (a model trained without them)."""
    from ..data.bags import DEFAULT_EVENT_TOPIC, read_json_topic, read_pairs

    bags = bags_of(data, name)
    pairs, reports = read_pairs(bags, pre, pairing, "/camera/image_raw/compressed", DEFAULT_EVENT_TOPIC, None,
                                cache_dir, progress=False, log=log)
    if pairs is None:
        raise ValueError(f"no pairs could be made from {data / name}")
    truth = {t["event_id"]: t for bag in bags for t in read_json_topic(bag, TRUTH_TOPIC)}
    pairs.objects = [truth.get(e, {}).get("obj_class", "") for e in pairs.event_ids]
    if skip_classes:
        pairs = pairs.subset(np.flatnonzero(~np.isin(pairs.objects, sorted(skip_classes))))
    # the manipulated fixture's box in the after frame (recordings made before it was recorded: None)
    pairs.target_boxes = [truth.get(e, {}).get("target_box") for e in pairs.event_ids]
    # the twin's box there (splits recorded with a twin, else None)
    pairs.twin_boxes = [truth.get(e, {}).get("twin_box") for e in pairs.event_ids]
    sizes = {(s.get("width"), s.get("height")) for s in (json.loads((b.parent / f"{b.name}.json").read_text())
                                                         for b in bags)}
    pairs.camera_size = sizes.pop() if len(sizes) == 1 else None
    return pairs


def truth_rois(bags: list[Path], event_ids: list[str]) -> list[tuple[float, float, float, float] | None]:
    """The roi a planner that knows its target would send with each event of `record-sim`
    recordings: the manipulated fixture's recorded box (ground truth), as fractions of the camera
    frame (`PairSet.rois`); None for an event without one. ValueError when no bag holds ground
    truth (not made by record-sim)."""
    from ..data.bags import BagError, read_json_topic

    boxes: dict[str, tuple[float, float, float, float]] = {}
    seen = False
    for bag in map(Path, bags):
        try:
            truth = read_json_topic(bag, TRUTH_TOPIC)
        except BagError:  # no ground truth topic (its pairs were read: the bag itself is readable)
            continue
        if not truth:
            continue
        seen = True
        sidecar = bag.parent / f"{bag.name}.json"
        if not sidecar.is_file():
            raise ValueError(f"{bag} has ground truth but no {sidecar.name} beside it (the camera's size)")
        info = json.loads(sidecar.read_text())
        w, h = float(info["width"]), float(info["height"])
        for t in truth:
            box = t.get("target_box")
            if box:
                boxes[t["event_id"]] = (box[0] / w, box[1] / h, box[2] / w, box[3] / h)
    if not seen:
        raise ValueError(f"none of the recordings holds ground truth ({TRUTH_TOPIC}): they were not made by "
                         "cde-ros record-sim")
    return [boxes.get(e) for e in event_ids]


def localisation(predictor, preds: list, pairs: PairSet) -> dict[str, Any] | None:
    """Where the model put the change against the manipulated fixture's projected box, per true
    action (pairs that changed something): the share of the Top-K delta inside the box, the hit
    rate (at least half of it inside), the IoU of the Top-K patches' bounding box with the box,
    and chance (the share of the image the box covers: a change put anywhere at random)."""
    from ..model.where import ROI_MIN_SHARE, box_iou, decoy_box, share_inside, twin_decoy

    boxes = getattr(pairs, "target_boxes", None)
    size = getattr(pairs, "camera_size", None)
    if not boxes or size is None or not any(boxes):
        return None
    w, h = size
    per: dict[str, dict[str, list[float]]] = {}
    # spatial verification (an event's roi) on the pairs read as their true action: kept with the
    # fixture's own box as the roi; caught with a decoy roi (the right action on the wrong object):
    # the second object of the same kind where the split has one (`twin`), else a box of the same
    # size where one could stand
    twins = getattr(pairs, "twin_boxes", None) or [None] * len(boxes)
    with_twin = any(twins)
    kept: list[bool] = []
    caught: list[bool] = []
    for p, truth, box, twin in zip(preds, pairs.actions, boxes, twins):
        if truth == "none" or not box:
            continue
        region = predictor.change_region(p, w, h)
        if region is None:
            return None  # a global-head model says nothing about where
        inside = share_inside(region, box)
        decoy = twin_decoy(box, twin) if with_twin else decoy_box(box, w, h)
        if p.action == truth and decoy is not None:
            kept.append(inside >= ROI_MIN_SHARE)
            caught.append(share_inside(region, decoy) < ROI_MIN_SHARE)
        d = per.setdefault(truth, {"share_inside": [], "hit": [], "iou": [], "chance": []})
        d["share_inside"].append(inside)
        d["hit"].append(float(inside >= 0.5))
        d["iou"].append(box_iou(region["bbox"], box))
        d["chance"].append(box[2] * box[3] / (w * h))
    summary = {a: {"n": len(d["hit"]), **{k: float(np.mean(v)) for k, v in d.items()}} for a, d in sorted(per.items())}
    every = {k: float(np.mean([x for d in per.values() for x in d[k]])) for k in ("share_inside", "hit", "iou", "chance")}
    roi = {"pairs": len(kept), "kept_with_target_roi": float(np.mean(kept)) if kept else float("nan"),
           "caught_with_decoy_roi": float(np.mean(caught)) if caught else float("nan"),
           "decoy": "the recorded twin" if with_twin else "a box beside the target"}
    return {"per_action": summary, "all": {"n": sum(len(d["hit"]) for d in per.values()), **every}, "roi": roi}


# ------------------------------------------------------------------------------- the floor

# Bins of the manipulated fixture's projected box, as a share of the image: the terciles of the
# validation split's pairs that changed something (0.176 and 0.333), rounded. How small a change
# the model sees: a switch covers 8 % of the image, a cabinet 60 %.
TARGET_SIZE_BINS = ((0.0, 0.18, "small (< 18 % of the image)"), (0.18, 0.33, "medium (18-33 %)"),
                    (0.33, 1.01, "large (>= 33 %)"))


def by_target_size(pairs: PairSet, pred: list[str]) -> dict[str, dict[str, float]] | None:
    """Accuracy on the pairs that changed something, by the size of the manipulated fixture's
    box (`TARGET_SIZE_BINS`); None when the recording has no boxes."""
    boxes = getattr(pairs, "target_boxes", None)
    size = getattr(pairs, "camera_size", None)
    if not boxes or size is None or not any(boxes):
        return None
    w, h = size
    out = {}
    for lo, hi, name in TARGET_SIZE_BINS:
        hits = [p == t for p, t, b in zip(pred, pairs.actions, boxes)
                if t != "none" and b and lo <= b[2] * b[3] / (w * h) < hi]
        out[name] = {"n": len(hits), "accuracy": float(np.mean(hits)) if hits else None}
    return out


def pixel_change(pairs: PairSet, size: int = 64) -> np.ndarray:
    """Mean absolute grey-level change between the before and after frame of each pair (0..255),
    at `size` x `size`: the simplest failure detector."""
    import cv2

    out = np.empty(len(pairs))
    for i in range(len(pairs)):
        b = cv2.resize(cv2.cvtColor(pairs.before[i], cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)
        a = cv2.resize(cv2.cvtColor(pairs.after[i], cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)
        out[i] = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()
    return out


def choose_change_threshold(scores: np.ndarray, is_none: np.ndarray) -> float:
    """The threshold (`none` below it) with the best balanced accuracy on these pairs."""
    best, best_t = -1.0, float(np.median(scores))
    for t in np.unique(scores):
        pred_none = scores < t
        bal = 0.5 * (np.mean(pred_none[is_none]) + np.mean(~pred_none[~is_none]))
        if bal > best:
            best, best_t = bal, float(t)
    return best_t


def floor_rates(scores: np.ndarray, actions: list[str], threshold: float) -> dict[str, float]:
    is_none = np.array([a == "none" for a in actions])
    pred_none = scores < threshold
    return {"false_success_rate": float(np.mean(~pred_none[is_none])) if is_none.any() else float("nan"),
            "false_failure_rate": float(np.mean(pred_none[~is_none])) if (~is_none).any() else float("nan")}


# ------------------------------------------------------------------------------- evaluation

def _per_object(pairs: PairSet, pred: list[str]) -> dict[str, float]:
    hits: dict[str, list[bool]] = {}
    for o, t, p in zip(pairs.objects, pairs.actions, pred):
        hits.setdefault(o or "?", []).append(t == p)
    return {o: float(np.mean(h)) for o, h in sorted(hits.items())}


def evaluate_model_on_suite(model_dir: Path, data: Path, out: Path, splits: tuple[str, ...] = ("val",) + TEST_SPLITS,
                            cache_dir: Path | None = None, device: str = "auto",
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """A model on the suite's splits at its operating point, with the pixel-difference floor
    (threshold chosen on the `train` split) beside it. Writes `sim_model_<name>.md` and `.json`
    and confusion figures of the test splits into `out`."""
    from ..data.pairing import PairingConfig
    from ..model.inference import Predictor

    for split in ("train", *splits):
        bags_of(data, split)  # every split is there before any work is done
    predictor = Predictor(model_dir, device=device)
    meta = predictor.meta
    pairing = PairingConfig.of_model(meta)
    pre = predictor.preprocessing
    train_pairs = read_split(data, "train", pre, pairing, cache_dir, log)
    threshold = choose_change_threshold(pixel_change(train_pairs), np.array([a == "none" for a in train_pairs.actions]))
    del train_pairs
    name = Path(model_dir).name
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split in splits:
        pairs = read_split(data, split, pre, pairing, cache_dir, log)
        preds = predictor.classify_pairs(list(pairs.before), list(pairs.after))
        pred = [p.action for p in preds]
        m = classification_metrics(pairs.actions, pred, predictor.labels)
        m["per_object"] = _per_object(pairs, pred)
        m["floor"] = floor_rates(pixel_change(pairs), pairs.actions, threshold)
        where = localisation(predictor, preds, pairs)
        if where is not None:
            m["where"] = where
        sizes = by_target_size(pairs, pred)
        if sizes is not None:
            m["by_target_size"] = sizes
        rows[split] = m
        log(f"{split}: accuracy {m['accuracy']:.3f}, false success {m['false_success_rate']:.3f}, false failure "
            f"{m['false_failure_rate']:.3f} (n={m['n']}); pixel floor false success {m['floor']['false_success_rate']:.3f}, "
            f"false failure {m['floor']['false_failure_rate']:.3f}")
        if split != "val":
            plot_confusion(m, out / f"sim_confusion_{name}_{split}.png", f"{name} on {split}: accuracy {m['accuracy']:.2f}")
    result = {"model_dir": str(model_dir), "model_id": meta["model_id"], "data": str(data),
              "none_logit_bias": predictor.none_logit_bias, "pixel_floor_threshold": threshold, "splits": rows}
    (out / f"sim_model_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"sim_model_{name}.md").write_text(_markdown(result, name))
    return result


SPLIT_TEXT = {"val": "validation (training combinations; used for choices)", "comp": "held-out combinations",
              "syst": "held-out object classes", "style": "held-out scene style",
              "style_comp": "held-out style x held-out combinations", "style_syst": "held-out style x held-out classes",
              "twin": "a second object of the same kind beside the target"}


def _markdown(result: dict, name: str) -> str:
    lines = [f"# Model {result['model_id']} on the simulated suite", "",
             f"`{result['model_dir']}` on `{result['data']}` at its operating point (`none` logit bias "
             f"{result['none_logit_bias']:g}). False success: a failed manipulation (`none`) read as an action; false "
             "failure: an action read as `none`. Pixel floor: `none` when the mean grey-level change (64 px) is below "
             f"{result['pixel_floor_threshold']:.2f}, the threshold with the best balanced accuracy on the training split.",
             "", "| split | n | accuracy | false success | false failure | pixel floor: false success | false failure |",
             "|---|---|---|---|---|---|---|"]
    for split, m in result["splits"].items():
        f = m["floor"]
        lines.append(f"| {SPLIT_TEXT.get(split, split)} | {m['n']} | {m['accuracy']:.3f} | {m['false_success_rate']:.3f} "
                     f"({m['none_pairs']}) | {m['false_failure_rate']:.3f} ({m['action_pairs']}) | "
                     f"{f['false_success_rate']:.3f} | {f['false_failure_rate']:.3f} |")
    labels = next(iter(result["splits"].values()))["labels"]
    lines += ["", "Recall per action:", "", "| split | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for split, m in result["splits"].items():
        lines.append(f"| {split} | " + " | ".join(f"{m['per_class'][a]:.2f}" if a in m["per_class"] else "–"
                                                 for a in labels) + " |")
    lines += ["", "Accuracy per manipulated object class:", ""]
    for split, m in result["splits"].items():
        lines.append(f"- {split}: " + ", ".join(f"{o} {v:.2f}" for o, v in m["per_object"].items()))
    if any("by_target_size" in m for m in result["splits"].values()):
        bins = [name for _, _, name in TARGET_SIZE_BINS]
        lines += ["", "Accuracy on the pairs that changed something, by the size of the manipulated fixture's box "
                  "(pairs in brackets):", "", "| split | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
        for split, m in result["splits"].items():
            if "by_target_size" in m:
                cells = [(m["by_target_size"][b]["accuracy"], m["by_target_size"][b]["n"]) for b in bins]
                lines.append(f"| {split} | " + " | ".join("–" if a is None else f"{a:.2f} ({n})" for a, n in cells)
                             + " |")
    if any("where" in m for m in result["splits"].values()):
        lines += ["", "Where the change was put (pairs that changed something): share of the Top-K delta inside the "
                  "manipulated fixture's projected box / hit rate (at least half inside) / IoU of the Top-K bounding "
                  "box with it; chance: the share of the image the box covers.", "",
                  "| split | n | share inside | hit rate | IoU | chance |", "|---|---|---|---|---|---|"]
        for split, m in result["splits"].items():
            if "where" in m:
                a = m["where"]["all"]
                lines.append(f"| {split} | {a['n']} | {a['share_inside']:.2f} | {a['hit']:.2f} | {a['iou']:.2f} | "
                             f"{a['chance']:.2f} |")
        lines += ["", "Spatial verification (an event's `roi`, verified when at least half of the change lies inside "
                  "it), on the pairs read as their true action: kept with the fixture's own box as the roi; caught "
                  "(`change outside target region`) with a decoy roi: on the `twin` split the box of the second "
                  "object of the same kind standing beside the target (pairs where it is in view at a quarter of the "
                  "target's size or more and apart from it), elsewhere a box of the target's size beside it, where "
                  "such an object could stand.", "",
                  "| split | pairs | kept with the target's roi | caught with a decoy roi | decoy |",
                  "|---|---|---|---|---|"]
        for split, m in result["splits"].items():
            if "where" in m and "roi" in m["where"]:
                r = m["where"]["roi"]
                lines.append(f"| {split} | {r['pairs']} | {r['kept_with_target_roi']:.2f} | "
                             f"{r['caught_with_decoy_roi']:.2f} | {r.get('decoy', 'a box beside the target')} |")
        lines += ["", "Hit rate per action (chance in brackets):", ""]
        for split, m in result["splits"].items():
            if "where" in m:
                lines.append(f"- {split}: " + ", ".join(f"{a} {v['hit']:.2f} ({v['chance']:.2f})"
                                                         for a, v in m["where"]["per_action"].items()))
    return "\n".join(lines) + "\n"


def _epochs_for(n: int, batch_size: int, steps: int) -> int:
    return max(1, math.ceil(steps / max(1, math.ceil(n / batch_size))))


# ------------------------------------------------------------------------------- few-shot

FEW_SHOT_KS = (5, 10, 30)
FEW_SHOT_SEEDS = (0, 1, 2)
FEW_SHOT_STEPS = 200  # optimizer steps per run, whatever k (fixed beforehand, never tuned on test)
# how a run starts: from random weights; from the init model; from it with a replay of its own
# training data (REPLAY_PER_LABEL pairs per label of the suite's `train` split) mixed in; the same
# with the environment-invariance term (loss.alpha_env = ENV_WEIGHT) between the new cell's pairs
# and the replayed ones, so the term's effect is measured apart from the replay's
# `init+prototypes` trains nothing: the init model's classifier still says whether anything
# changed, the action is the nearest of the k shots' class prototypes (cde_ros.model.prototypes);
# `finetune+replay` is init+replay with the whole network learning (backbone learning rate x
# training.backbone_lr_scale, 0.1 from --init) whatever the config freezes; `+reverse`: with
# training.reverse_pairs (each pair also teaches the opposite action, played backwards)
FEW_SHOT_STARTS = ("scratch", "init", "init+replay", "init+replay+env", "init+replay+reverse", "init+prototypes",
                   "finetune+replay", "finetune+replay+reverse")
REPLAY_PER_LABEL = 30
FEW_SHOT_TARGETS = (0.90, 0.85)  # issue 19: from --init with 30 per action, held-out combinations / classes
# the reference run at the far end of the curve (`few_shot(many=True)`): a recording of the new
# cell with plenty of labels (the suite's `style_many`, 2400 episodes), fine-tuned for
# MANY_STEP_FACTOR x the steps of a few-shot run, one seed; how far the new cell's own labels take
# this model
MANY_SPLIT = "style_many"
MANY_STEP_FACTOR = 5
ENV_WEIGHT = 1.0
# `none` recall on the new cell's check pairs that its operating point is set to (as
# `cde-ros calibrate` does by default), for the calibrated columns of the trained starts
CHECK_NONE_RECALL = 0.98


def draw_episodes(pool: PairSet, k: int, seed: int) -> PairSet:
    """k pairs of every label of the pool (all of them where a label has fewer), drawn per seed."""
    return pool.subset(_draw(pool, k, seed))


def _draw(pool: PairSet, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, k, 17])
    acts = np.array(pool.actions)
    pick = []
    for a in sorted(set(pool.actions)):
        idx = np.flatnonzero(acts == a)
        pick += list(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(pick)


def few_shot(data: Path, init_dir: Path, out: Path, config=None, ks: tuple[int, ...] = FEW_SHOT_KS,
             seeds: tuple[int, ...] = FEW_SHOT_SEEDS, cache_dir: Path | None = None,
             log: Callable[[str], None] = print, starts: tuple[str, ...] = FEW_SHOT_STARTS,
             steps: int = 0, many: bool = False) -> list[dict]:
    """The data-efficiency benchmark: on the held-out scene style, train with k labelled episodes
    per action (seeds draw them) from scratch and from `init_dir` (as `cde-ros train --init`
    does), test on the held-out combinations and object classes of that style. With `many`, one
    more run at the far end of the curve: the `finetune+replay` start on every episode of the
    suite's `style_many` split (about 270 per action). Writes `fewshot.md`, `fewshot.json` and
    `fewshot.png` into `out`."""
    from ..core.actions import ACTIONS
    from ..core.preprocess import Preprocessing
    from ..data.pairing import PairingConfig
    from ..model.network import read_meta
    from .config import load_config

    cfg = config or load_config(None)
    steps = steps or FEW_SHOT_STEPS
    meta = read_meta(init_dir)
    pre = Preprocessing.from_json(meta["preprocessing"])
    pairing = PairingConfig.of_model(meta)
    unknown = sorted(set(starts) - set(FEW_SHOT_STARTS))
    if unknown:
        raise ValueError(f"unknown few-shot starts {unknown}; choose from {', '.join(FEW_SHOT_STARTS)}")
    if many and not (data / MANY_SPLIT).is_dir():
        raise FileNotFoundError(f"the reference run needs the suite's {MANY_SPLIT} split: record it with "
                                f"cde-ros record-sim {data} --suite --splits {MANY_SPLIT}")
    pool = read_split(data, "style_train", pre, pairing, cache_dir, log)
    pool.envs = ["new cell"] * len(pool)
    source = None
    if many or any("replay" in s for s in starts):
        source = read_split(data, "train", pre, pairing, cache_dir, log)
        source.envs = ["shipped model's cells"] * len(source)
        # the replay keeps to the new cell's label set, so every start learns the same labels
        source = source.subset(np.flatnonzero(np.isin(source.actions, sorted(set(pool.actions)))))
    tests = {name: read_split(data, name, pre, pairing, cache_dir, log) for name in ("style_comp", "style_syst")}
    labels = [a for a in ACTIONS if a in set(pool.actions)]
    # the init model's answers on the test pairs, once: the k = 0 reference and the prototype start
    prototype_start = _PrototypeStart(init_dir, tests)
    alone = prototype_start.alone()
    out.mkdir(parents=True, exist_ok=True)
    run = _FewShotRun(cfg, pre, init_dir, labels, source, tests, log)
    rows: list[dict] = []
    for k in ks:
        for seed in seeds:
            picked = _draw(pool, k, seed)
            shots = pool.subset(picked)
            # the new cell's validation pairs: its recorded episodes not drawn as shots (a user's
            # check recordings); the only pairs a choice between starts may be read from
            check = pool.subset(np.setdiff1d(np.arange(len(pool)), picked))
            for start in starts:
                if start == "init+prototypes":
                    rows.append(prototype_start.run(shots, check, k, seed, log))
                else:
                    rows.append(run(start, shots, check, k, seed, steps))
                _write_few_shot(rows, out, meta["model_id"], init_dir, alone)
    if many:
        # the far end of the curve: every labelled episode of another recording of the new cell
        # (about 270 per action), the finetune+replay start with MANY_STEP_FACTOR x the steps; the
        # whole pool is its new-cell val (none of it was trained on)
        big = read_split(data, MANY_SPLIT, pre, pairing, cache_dir, log)
        big = big.subset(np.flatnonzero(np.isin(big.actions, labels)))  # the labels every start learns
        big.envs = ["new cell"] * len(big)
        k = max(1, int(round(len(big) / len(labels))))
        rows.append({**run("finetune+replay", big, pool, k, 0, MANY_STEP_FACTOR * steps), "many": MANY_SPLIT})
        _write_few_shot(rows, out, meta["model_id"], init_dir, alone)
    return rows


class _FewShotRun:
    """One trained run of the benchmark: a start on its shots (plus the replay), evaluated on the
    new cell's check pairs and the test splits, plain and at the check pairs' `none` point."""

    def __init__(self, cfg, pre, init_dir: Path, labels: list[str], source: PairSet | None,
                 tests: dict[str, PairSet], log: Callable[[str], None]) -> None:
        self.cfg, self.pre, self.init_dir, self.labels = cfg, pre, init_dir, labels
        self.source, self.tests, self.log = source, tests, log

    def __call__(self, start: str, shots: PairSet, check: PairSet, k: int, seed: int, steps: int) -> dict:
        from dataclasses import replace

        from ..model import decision
        from ..model.network import init_from
        from .evaluation import evaluate_pairs
        from .trainer import train

        data_pairs = shots
        if "replay" in start:
            data_pairs = PairSet.concat([shots, draw_episodes(self.source, REPLAY_PER_LABEL, seed)])
        epochs = _epochs_for(len(data_pairs), self.cfg.training.batch_size, steps)
        # few labelled pairs: no validation pairs to spare, so no none operating point (bias 0)
        tc = replace(self.cfg.training, epochs=epochs, seed=seed, none_recall_target=0.0)
        if start == "scratch" or start.startswith("finetune"):  # the config's freezing is for the other init starts
            tc = replace(tc, freeze_backbone=0)
        if start.endswith("+env"):
            tc = replace(tc, loss=replace(tc.loss, alpha_env=ENV_WEIGHT))
        if start.endswith("+reverse"):
            tc = replace(tc, reverse_pairs=True)
        init = init_from(self.init_dir, self.labels)[0] if start != "scratch" else None
        res = train(data_pairs, None, self.labels, self.cfg.model, self.pre, tc, None, progress=False,
                    log=lambda m: None, init=init)
        row = {"k": k, "seed": seed, "start": start, "pairs": len(data_pairs), "shots": len(shots),
               "epochs": epochs, "steps": steps, "freeze_backbone": tc.freeze_backbone,
               "train_seconds": round(res.seconds, 1)}
        for name, pairs in {"new_cell_val": check, **self.tests}.items():
            m = evaluate_pairs(res.model, pairs)
            row[name] = {key: m[key] for key in ("accuracy", "false_success_rate", "false_failure_rate",
                                                 "per_class", "n")}
        # the operating point a user sets with `cde-ros calibrate` on the new cell's check
        # recordings (here: its episodes not drawn as shots), and the test splits at it
        try:
            d = decision.calibrate(res.model, check, CHECK_NONE_RECALL, source="the new cell's check pairs")
            row["check_none_logit_bias"] = d["none_logit_bias"]
            for name, pairs in self.tests.items():
                m = evaluate_pairs(res.model, pairs)
                row[f"{name}_calibrated"] = {key: m[key] for key in ("accuracy", "false_success_rate",
                                                                     "false_failure_rate", "n")}
        except ValueError as exc:  # too few `none` pairs left to calibrate on
            row["check_not_calibrated"] = str(exc)
        self.log(f"k={k} seed {seed} {start}: " + ", ".join(f"{n} {row[n]['accuracy']:.3f}" for n in self.tests) +
                 f" ({res.seconds:.0f} s)")
        return row


class _PrototypeStart:
    """The `init+prototypes` start: no training; every action's prototype from the k shots, the
    init model's classifier (at its operating point) for whether anything changed, the nearest
    prototype for which action. The init model and its outputs on the test pairs are the same for
    every k and seed: computed once."""

    def __init__(self, init_dir: Path, tests: dict[str, PairSet]) -> None:
        from ..model.network import CausalDeltaModel
        from ..model.prototypes import classifier_picks

        self.model, _ = CausalDeltaModel.load(init_dir)
        self.tests = {name: (pairs.actions, *classifier_picks(self.model, pairs)) for name, pairs in tests.items()}

    def alone(self) -> dict[str, dict]:
        """The reference every start is read against: the init model as it is (its own operating
        point, no episode of the new cell) on the test splits."""
        labels = list(self.model.labels)
        return {name: {key: m[key] for key in ("accuracy", "false_success_rate", "false_failure_rate", "n")}
                for name, m in ((name, classification_metrics(truth, picks, labels))
                                for name, (truth, picks, _) in self.tests.items())}

    def run(self, shots: PairSet, check: PairSet, k: int, seed: int, log: Callable[[str], None]) -> dict:
        from ..model.prototypes import classifier_picks, from_pairs

        t0 = time.perf_counter()
        _, deltas = classifier_picks(self.model, shots)
        protos = from_pairs(deltas, shots.actions, self.model.labels)
        protos.enrolled = list(protos.labels)  # every action competes, not only the classifier's pick
        seconds = time.perf_counter() - t0
        row = {"k": k, "seed": seed, "start": "init+prototypes", "pairs": len(shots), "shots": len(shots),
               "epochs": 0, "steps": 0, "freeze_backbone": "all", "train_seconds": round(seconds, 1)}
        for name, (truth, picks, test_deltas) in {"new_cell_val": (check.actions, *classifier_picks(self.model, check)),
                                                  **self.tests}.items():
            answers, _ = protos.decide(picks, test_deltas, None)
            m = classification_metrics(truth, answers, list(self.model.labels))
            row[name] = {key: m[key] for key in ("accuracy", "false_success_rate", "false_failure_rate", "per_class",
                                                 "n")}
        log(f"k={k} seed {seed} init+prototypes: " + ", ".join(f"{n} {row[n]['accuracy']:.3f}" for n in self.tests) +
            f" ({seconds:.0f} s)")
        return row


def _write_few_shot(rows: list[dict], out: Path, init_id: str, init_dir: Path, alone: dict | None = None) -> None:
    (out / "fewshot.json").write_text(json.dumps({"init_model_id": init_id, "init_dir": str(init_dir),
                                                  "init_alone": alone, "rows": rows},
                                                 indent=1) + "\n")

    def col(rs, split, key):
        v = np.array([r[split][key] if split in r else np.nan for r in rs], float)
        v = v[~np.isnan(v)]
        if not len(v):
            return "n/a"
        # one seed has no spread to show
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    many = [r for r in rows if r.get("many")]
    curve = [r for r in rows if not r.get("many")]  # the few-shot runs, drawn as lines over k
    frozen = {r.get("freeze_backbone", 0) for r in rows if r["start"] in ("init", "init+replay", "init+replay+env")}
    how = ("backbone frozen, its tokens computed once (`training.freeze_backbone: all`)" if frozen == {"all"}
           else "backbone learning rate x0.1")
    steps = rows[0].get("steps", FEW_SHOT_STEPS) if rows else FEW_SHOT_STEPS
    lines = ["# Few-shot: a new robot cell from k labelled episodes per action", "",
             f"Held-out scene style of the simulator. k episodes per label (the 8 actions and `none`) drawn from its "
             f"training-combination recordings per seed; tested on its held-out combinations and held-out object "
             f"classes. `init`: from model {init_id} (`cde-ros train --init`: {how}); "
             f"`scratch`: the same recipe from random weights; `+replay`: {REPLAY_PER_LABEL} pairs per label of the "
             f"init model's own training recordings mixed in; `+env`: with the environment-invariance term "
             f"(loss.alpha_env {ENV_WEIGHT:g}) between the new cell's pairs and the replayed ones; `finetune+replay`: "
             f"init+replay with the whole network learning (backbone learning rate x0.1); `init+prototypes`: no "
             f"training, the init model's classifier at its operating point says whether anything changed and the "
             f"nearest of the k shots' class prototypes which action (`cde_ros.model.prototypes`). {steps} "
             "optimizer steps per run (scratch: the whole network learns); plain argmax for the trained starts (too "
             "few pairs to choose a `none` operating point on). `+reverse`: with `training.reverse_pairs` (every pair "
             "also played backwards as the opposite action). k = 0: the init model alone, at its own operating point, "
             "with no episode of the new cell. Mean ± std over seeds. `new-cell val`: the style's "
             "recorded episodes not drawn as shots (the user's check recordings), the only column a choice is read "
             "from (n/a: rows recorded before it was measured)." + (
                 f" The row marked `every episode of {MANY_SPLIT}` is a reference, not a few-shot run: another "
                 f"recording of the new cell's training combinations, every one of its {many[0]['shots']} episodes "
                 f"labelled (about {many[0]['k']} per action), the same start with {many[0]['steps']} optimizer "
                 "steps, one seed; its new-cell val is the whole pool the shots are drawn from. It shows how far "
                 "the new cell's own labels take this model." if many else ""), "",
             "| k | start | seeds | new-cell val | held-out combinations | false success | false failure | "
             "held-out classes | false success | false failure | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if alone:
        lines.append("| 0 | the init model alone | – | – | " + " | ".join(
            f"{alone[split][key]:.3f}" for split in ("style_comp", "style_syst")
            for key in ("accuracy", "false_success_rate", "false_failure_rate")) + " | 0 |")
    for rs in _row_groups(rows):
        lines.append(f"| {_k_cell(rs)} | {rs[0]['start']} | {len(rs)} | {col(rs, 'new_cell_val', 'accuracy')} | "
                     f"{col(rs, 'style_comp', 'accuracy')} | "
                     f"{col(rs, 'style_comp', 'false_success_rate')} | {col(rs, 'style_comp', 'false_failure_rate')} | "
                     f"{col(rs, 'style_syst', 'accuracy')} | {col(rs, 'style_syst', 'false_success_rate')} | "
                     f"{col(rs, 'style_syst', 'false_failure_rate')} | {np.mean([r['train_seconds'] for r in rs]):.0f} |")
    cal = [r for r in rows if "style_comp_calibrated" in r]
    if cal:
        lines += ["", f"The trained starts with the `none` operating point set on the new cell's check pairs (none "
                  f"recall {CHECK_NONE_RECALL:g} there, as `cde-ros calibrate` does), the step a user takes before "
                  "launching; rows without enough check `none` pairs are left out:", "",
                  "| k | start | seeds | none bias | held-out combinations | false success | false failure | "
                  "held-out classes | false success | false failure |", "|---|---|---|---|---|---|---|---|---|---|"]
        for rs in _row_groups(cal):
            bias = np.mean([r["check_none_logit_bias"] for r in rs])
            cells = [col(rs, f"{split}_calibrated", key) for split in ("style_comp", "style_syst")
                     for key in ("accuracy", "false_success_rate", "false_failure_rate")]
            lines.append(f"| {_k_cell(rs)} | {rs[0]['start']} | {len(rs)} | {bias:.2f} | " + " | ".join(cells) + " |")
    (out / "fewshot.md").write_text("\n".join(lines) + "\n")
    from .evaluation import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 5), sharey=True)
    panels = zip(axes, ("style_comp", "style_syst"), ("held-out combinations", "held-out classes"), FEW_SHOT_TARGETS)
    for ax, split, title, target in panels:
        ax.axhline(target, color="black", ls="--", lw=1, label="target at k = 30")
        if alone:
            ax.axhline(alone[split]["accuracy"], color="black", ls=":", lw=1.2,
                       label="the init model alone (no episode)")
        for start, color in zip(FEW_SHOT_STARTS, ("tab:gray", "tab:blue", "tab:green", "tab:orange", "tab:olive",
                                                  "tab:purple", "tab:red", "tab:brown")):
            ks = sorted({r["k"] for r in curve if r["start"] == start})
            if not ks:
                continue
            acc = [[r[split]["accuracy"] for r in curve if r["k"] == k and r["start"] == start] for k in ks]
            name = (start.replace("finetune", "init (whole network)").replace("init", "from the init model")
                    .replace("scratch", "from scratch"))
            ax.errorbar(ks, [np.mean(a) for a in acc], yerr=[np.std(a) for a in acc], marker="o", color=color,
                        label=name, capsize=3)
        for r in many:
            ax.plot([r["k"]], [r[split]["accuracy"]], marker="*", markersize=12, color="tab:red", ls="none",
                    label=f"{r['start']}, every episode of {r['many']} ({r['steps']} steps)")
        _k_axis(ax, sorted({r["k"] for r in rows}), f"held-out style, {title}", "labelled episodes per action")
    _legend_below_and_save(fig, axes, out / "fewshot.png", ncol=3, fontsize=7, bottom=0.19)


def _row_groups(rows: list[dict]) -> list[list[dict]]:
    """The rows of one table line each (the seeds of one k and start; the reference run apart), by
    k, then in the order of FEW_SHOT_STARTS."""
    keys = sorted({(r["k"], FEW_SHOT_STARTS.index(r["start"]), r.get("many", "")) for r in rows})
    return [[r for r in rows if (r["k"], FEW_SHOT_STARTS.index(r["start"]), r.get("many", "")) == key] for key in keys]


def _k_cell(rows: list[dict]) -> str:
    """The k column of a table row: k, and for the reference run where its episodes came from."""
    return f"{rows[0]['k']} (every episode of {rows[0]['many']})" if rows[0].get("many") else str(rows[0]["k"])


def _k_axis(ax, ks: list[int], title: str, xlabel: str) -> None:
    """An accuracy panel over k on a log axis with only the k ticks."""
    from .evaluation import _pyplot

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(_pyplot().NullFormatter())
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def _legend_below_and_save(fig, axes, path: Path, ncol: int, fontsize: int, bottom: float) -> None:
    """One legend for the panels, below them (off the curves), and the figure written."""
    from .evaluation import _save

    axes[0].set_ylabel("accuracy")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=fontsize)
    _save(fig, path, rect=(0, bottom, 1, 1))


# ------------------------------------------------------------------------------- open set

OPEN_SET_TESTS = ("comp", "syst")  # held-out combinations and object classes, training scene style
ENROLL_KS = (1, 5, 10)


def _open_set_split(protos, picks: list[str], deltas: np.ndarray, truth: list[str], held_out: set[str],
                    msp: np.ndarray, roi_changes: list[float | None] | None = None,
                    backbone: np.ndarray | None = None) -> dict:
    """What the unknown_change rule does on one test split: AUROC of the novelty score
    (1 - the best cosine to a known action's prototype) for held-out against known actions (and,
    as the usual baseline, of 1 - the classifier's largest action probability, `msp`), and the
    answers at the model's threshold; with `roi_changes` (each event sent with the target's roi)
    and a model with a roi change threshold, the answers with the rois too ("with_roi")."""
    from ..model.prototypes import UNKNOWN, auroc

    known_actions = [i for i, a in enumerate(protos.labels) if a not in protos.enrolled]
    sims = protos.similarities(deltas)[:, known_actions]
    novelty = 1.0 - sims.max(1)
    truth_a = np.array(truth)
    new = np.isin(truth_a, sorted(held_out))
    known_change = ~new & (truth_a != "none")
    changed = np.array([p != "none" for p in picks])
    with_rule, _ = protos.decide(picks, deltas, backbone_deltas=backbone)
    without, _ = replace(protos, change_threshold=None).decide(picks, deltas, None)  # neither threshold
    known = ~new
    with_rule, without = np.array(with_rule), np.array(without)
    hits = lambda ans, m: _share(ans[m] == truth_a[m])  # noqa: E731

    def answers(ans: np.ndarray) -> dict:  # what the left-out, the known and the none pairs were answered
        # (failed manipulations answered unknown_change by a change threshold: not verified, no false success)
        return {"held_out_answers": {"unknown_change": _share(ans[new] == UNKNOWN), "none": _share(ans[new] == "none"),
                                     "known_action": _share(~np.isin(ans[new], [UNKNOWN, "none"]))},
                "known_accuracy": {"without": hits(without, known), "with": hits(ans, known)},
                "known_read_as_unknown": _share(ans[known] == UNKNOWN),
                "none_read_as_unknown": _share(ans[truth_a == "none"] == UNKNOWN)}

    roi = None
    if roi_changes is not None and protos.roi_change_threshold is not None:
        roi = answers(np.array(protos.decide(picks, deltas, roi_changes=roi_changes, backbone_deltas=backbone)[0]))
    return {
        "n": len(truth), "held_out_pairs": int(new.sum()), "known_action_pairs": int(known_change.sum()),
        "auroc": auroc(novelty[new], novelty[known_change]),
        "auroc_read_as_change": auroc(novelty[new & changed], novelty[known_change & changed]),
        "auroc_max_probability": auroc(1.0 - msp[new], 1.0 - msp[known_change]),
        **answers(with_rule),
        **({"with_roi": roi} if roi is not None else {}),
    }


def _share(flags: np.ndarray) -> float:
    """The share of true values (NaN for none at all)."""
    return float(np.mean(flags)) if len(flags) else float("nan")


def open_set(data: Path, model_dir: Path, out: Path, ks: tuple[int, ...] = ENROLL_KS,
             seeds: tuple[int, ...] = FEW_SHOT_SEEDS, cache_dir: Path | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Changes the model does not know, and new actions from a few examples: `model_dir` was
    trained with some actions left out (`cde-ros train --skip-actions`, recorded in model.json)
    and given prototypes and its unknown_change threshold on validation pairs (`cde-ros calibrate
    --unknown`). On the held-out combinations and object classes: how the rule separates the
    left-out actions from the known ones; then each left-out action is enrolled from k of its
    events of the `train` split (which the training left out; seeds draw them) and both kinds of
    action are scored, with the failed manipulations answered an enrolled action and (each
    left-out action enrolled alone) the other left-out actions' pairs answered with it. Writes `open_set_<model dir name>.md`, `.json` and `.png` into `out`."""
    from types import SimpleNamespace

    from ..data.pairing import PairingConfig
    from ..model.network import CausalDeltaModel
    from ..model.prototypes import classifier_outputs, enroll, roi_changes_of

    model, meta = CausalDeltaModel.load(model_dir)
    held_out = set(meta.get("skipped_actions") or [])
    if not held_out:
        raise ValueError(f"{model_dir} was trained on every action: train one with --skip-actions for this benchmark")
    if model.prototypes is None:
        raise ValueError(f"{model_dir} has no prototypes: cde-ros calibrate {model_dir} VALIDATION_BAGS --unknown")
    pairing = PairingConfig.of_model(meta)
    pre = model.preprocessing
    # object classes the model was trained without (benchmarks/open_set_class_shift.py): their pairs
    # would make a held-out combination a held-out class, so they are left out of every split here
    skipped_classes = sorted(meta.get("skipped_classes") or [])
    t0 = time.perf_counter()
    tests = {}
    for name in OPEN_SET_TESTS:
        pairs = read_split(data, name, pre, pairing, cache_dir, log, skipped_classes)
        picks, deltas, probs, backbone = classifier_outputs(model, pairs)
        actions = [i for i, a in enumerate(model.labels) if a != "none"]
        # each event sent with the manipulated fixture's box as its roi (what a planner knows)
        rois = None
        if getattr(pairs, "camera_size", None) and any(pairs.target_boxes):
            rois = roi_changes_of(pre, pairs.before, pairs.after, pairs.target_boxes, pairs.camera_size)
        tests[name] = (pairs.actions, picks, deltas, probs[:, actions].max(1), rois, backbone)
    pool = read_split(data, "train", pre, pairing, cache_dir, log, skipped_classes)
    pool = pool.subset(np.flatnonzero(np.isin(pool.actions, sorted(held_out))))
    pool_backbone = classifier_outputs(model, pool)[3]
    result: dict[str, Any] = {"model_dir": str(model_dir), "model_id": meta["model_id"], "data": str(data),
                              "held_out_actions": sorted(held_out), "labels": list(model.labels),
                              **({"skipped_classes": skipped_classes} if skipped_classes else {}),
                              # the suite splits it was trained on: the folders of its training bags
                              "trained_on": sorted({Path(b).parent.name for b in meta.get("data", {}).get("bags", [])}),
                              # its loss terms that are not the defaults (the recipe it differs by)
                              "loss_changed": _loss_changed(meta),
                              "unknown_threshold": model.prototypes.threshold,
                              "change_threshold": model.prototypes.change_threshold,
                              "roi_change_threshold": model.prototypes.roi_change_threshold,
                              "calibration": model.prototypes.info, "splits": {}, "enroll": []}
    for name, (truth, picks, deltas, msp, rois, backbone) in tests.items():
        result["splits"][name] = m = _open_set_split(model.prototypes, picks, deltas, truth, held_out, msp, rois,
                                                     backbone)
        for how, r in (("", m), (" (events with the target's roi)", m.get("with_roi"))):
            if r is None:
                continue
            h = r["held_out_answers"]
            log(f"{name}{how}: AUROC {m['auroc']:.3f}; held-out actions -> unknown_change {h['unknown_change']:.2f}, "
                f"none {h['none']:.2f}, a known action {h['known_action']:.2f}; known accuracy "
                f"{r['known_accuracy']['without']:.3f} -> {r['known_accuracy']['with']:.3f}")
    held = sorted(held_out)
    for k in ks:
        for seed in seeds:
            picked = {}
            for action in held:
                idx = np.flatnonzero(np.asarray(pool.actions) == action)
                picked[action] = np.random.default_rng([seed, k, 23]).choice(idx, size=min(k, len(idx)), replace=False)

            def enrolled_with(actions: list[str]):
                m = SimpleNamespace(labels=model.labels, prototypes=model.prototypes)  # enroll replaces them
                for action in actions:
                    enroll(m, pool_backbone[picked[action]], action,
                           source=f"{len(picked[action])} train-split events, seed {seed}")
                return m.prototypes

            every = enrolled_with(held)
            # each held-out action enrolled alone: the other one's pairs should stay unknown_change
            alone = {a: enrolled_with([a]) for a in held}
            row = {"k": k, "seed": seed}
            for name, (truth, picks, deltas, _, rois, backbone) in tests.items():
                truth_a = np.asarray(truth)
                new = np.isin(truth_a, held)

                def scores(roi_changes) -> dict[str, float]:
                    ans = np.array(every.decide(picks, deltas, roi_changes=roi_changes, backbone_deltas=backbone)[0])
                    right = ans == truth_a
                    # a pair of the left-out action that was not enrolled, answered the enrolled one
                    others = [np.asarray(alone[a].decide(picks, deltas, roi_changes=roi_changes,
                                                         backbone_deltas=backbone)[0])[np.isin(truth_a, held) &
                                                                                       (truth_a != a)] == a
                              for a in held]
                    return {"held_out_accuracy": _share(right[new]), "known_accuracy": _share(right[~new]),
                            "accuracy": _share(right),
                            # failed manipulations answered an enrolled action: a false success if commanded
                            "none_as_enrolled": _share(np.isin(ans[truth_a == "none"], held)),
                            "other_as_enrolled": _share(np.concatenate(others)) if len(held) > 1 else float("nan")}

                row[name] = scores(None)
                if rois is not None and every.roi_change_threshold is not None:
                    row[name]["with_roi"] = scores(rois)
            result["enroll"].append(row)
            log(f"enroll k={k} seed {seed}: " + ", ".join(
                f"{n} held-out {row[n]['held_out_accuracy']:.3f} known {row[n]['known_accuracy']:.3f}" for n in tests))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(model_dir).name
    (out / f"open_set_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"open_set_{name}.md").write_text(_open_set_markdown(result))
    _open_set_plot(result, out / f"open_set_{name}.png")
    return result


def _loss_changed(meta: dict) -> dict[str, Any]:
    """The loss settings in a model.json's training config that differ from the defaults."""
    from dataclasses import asdict

    from ..model.losses import LossWeights

    saved = meta.get("training", {}).get("config", {}).get("loss", {})
    return {k: v for k, v in saved.items() if asdict(LossWeights()).get(k, v) != v}


def _splits(names: list[str] | None) -> str:
    if not names:
        return "pairs its model.json names no recordings of"
    return "the suite's " + " and ".join(f"`{n}`" for n in names) + (" splits" if len(names) > 1 else " split")


def _open_set_markdown(r: dict) -> str:
    v = r["calibration"]["validation"]
    lines = [f"# Unknown changes and enrolled actions: model {r['model_id']}", "",
             f"`{r['model_dir']}` was trained on {_splits(r.get('trained_on'))} without the actions "
             f"{', '.join(r['held_out_actions'])} (`cde-ros train --skip-actions`"
             + (f"; and without the object classes {', '.join(r['skipped_classes'])}, whose pairs are left out of "
                "the splits below" if r.get("skipped_classes") else "")
             + "".join(f", `loss.{k}: {v}`" for k, v in r.get("loss_changed", {}).items())
             + "), its `none` operating point and its "
             f"prototypes and unknown_change threshold (cosine {r['unknown_threshold']:.3f}"
             + (f"; change threshold: a delta length of {r['change_threshold']:.3f}" if r.get("change_threshold")
                is not None else "; no change threshold")
             + (f"; roi change threshold: {r['roi_change_threshold']:.2f} of 255 inside an event's roi"
                if r.get("roi_change_threshold") is not None else "") + ") chosen on the `val` "
             f"split's pairs of the known labels (`cde-ros calibrate --unknown`: validation accuracy "
             f"{v['accuracy']['without']:.3f} -> {v['accuracy']['with']:.3f}). Tested on the held-out combinations "
             "(comp) and object classes (syst) of the training scene style; no choice looked at them."
             + (f" The unknown_change cosine threshold was then chosen again: {r['calibration']['threshold_from']}."
                if r["calibration"].get("threshold_from") else ""), "",
             "AUROC: the novelty score (1 - the best cosine similarity to a known action's prototype) telling the "
             "held-out actions' pairs from the known actions' (all pairs / those the classifier reads as a change); "
             "baseline: 1 - the classifier's largest action probability. Answers of the held-out actions' pairs at "
             "the thresholds, the known labels' accuracy without and with the rule, and the share of the failed "
             "manipulations (`none` pairs) answered unknown_change (not verified: no false success)."
             + (" Rows \"events with the target's roi\": every event sent with the manipulated fixture's recorded "
                "box as its roi, so a pair read as none that changed inside it is a change too." if any("with_roi" in m for m in r["splits"].values()) else ""),
             "", "| split | held-out pairs | known-action pairs | AUROC | AUROC (read as change) | AUROC baseline | "
             "held-out -> unknown_change | -> none | -> a known action | known accuracy without -> with the rule | "
             "ratio | none -> unknown_change |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["splits"].items():
        for label, a in ((name, m), (f"{name}, events with the target's roi", m.get("with_roi"))):
            if a is None:
                continue
            h, ka = a["held_out_answers"], a["known_accuracy"]
            lines.append(f"| {label} | {m['held_out_pairs']} | {m['known_action_pairs']} | {m['auroc']:.3f} | "
                         f"{m['auroc_read_as_change']:.3f} | {m['auroc_max_probability']:.3f} | "
                         f"{h['unknown_change']:.2f} | {h['none']:.2f} | {h['known_action']:.2f} | "
                         f"{ka['without']:.3f} -> {ka['with']:.3f} | "
                         f"{ka['with'] / ka['without'] if ka['without'] else float('nan'):.3f} | "
                         f"{a.get('none_read_as_unknown', float('nan')):.2f} |")
    with_roi = any("with_roi" in e.get(n, {}) for e in r["enroll"] for n in OPEN_SET_TESTS)
    lines += ["", f"Enrolled (`cde-ros enroll`): each held-out action from k of its `train`-split events (never "
              f"trained on), {len({e['seed'] for e in r['enroll']})} draws, as a prototype in the backbone's delta "
              "space that names unknown changes; accuracy on the held-out actions' pairs and on the known labels' "
              "pairs, the share of the failed manipulations (`none` pairs) answered an enrolled action (a false "
              "success where it was commanded) and, with each held-out action enrolled alone, the share of the other "
              "held-out action's pairs answered with it (mean ± std over draws)"
              + ("; rows \"roi\": events sent with the target's roi." if with_roi else "."), "",
              "| k | comp: held-out | comp: known | comp: none -> enrolled | comp: other -> enrolled | syst: held-out | "
              "syst: known | syst: none -> enrolled | syst: other -> enrolled |", "|---|---|---|---|---|---|---|---|---|"]
    for k in sorted({e["k"] for e in r["enroll"]}):
        rows = [e for e in r["enroll"] if e["k"] == k]
        for roi in (False, True) if with_roi else (False,):
            def cell(split: str, key: str) -> str:
                v = [(e[split]["with_roi"] if roi else e[split]).get(key, float("nan")) for e in rows]
                return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

            keys = ("held_out_accuracy", "known_accuracy", "none_as_enrolled", "other_as_enrolled")
            lines.append(f"| {k}{', roi' if roi else ''} | "
                         + " | ".join(cell(split, key) for split in ("comp", "syst") for key in keys) + " |")
    return "\n".join(lines) + "\n"


def _open_set_plot(r: dict, path: Path) -> None:
    from .evaluation import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), sharey=True)
    ks = sorted({e["k"] for e in r["enroll"]})
    for ax, split, title in zip(axes, OPEN_SET_TESTS, ("held-out combinations", "held-out classes")):
        for key, color, name in (("held_out_accuracy", "tab:orange", "enrolled actions"),
                                 ("known_accuracy", "tab:blue", "known labels"),
                                 ("none_as_enrolled", "tab:red", "failed manipulations answered an enrolled action")):
            if not all(key in e[split] for e in r["enroll"]):
                continue
            vals = [[e[split][key] for e in r["enroll"] if e["k"] == k] for k in ks]
            ax.errorbar(ks, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o", color=color,
                        label=name, capsize=3)
            if all("with_roi" in e[split] for e in r["enroll"]):
                vals = [[e[split]["with_roi"][key] for e in r["enroll"] if e["k"] == k] for k in ks]
                ax.errorbar(ks, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="s", color=color,
                            ls="--", label=f"{name}, events with the target's roi", capsize=3)
        ax.axhline(r["splits"][split]["known_accuracy"]["without"], color="tab:blue", ls=":", lw=1,
                   label="known labels, nothing enrolled, no unknown rule")
        _k_axis(ax, ks, f"{split}: {title}", "enrolled examples per action")
    _legend_below_and_save(fig, axes, path, ncol=2, fontsize=8, bottom=0.2)
