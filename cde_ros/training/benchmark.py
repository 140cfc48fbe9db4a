"""The out-of-distribution benchmark: baseline vs delta-embedding variants on synthetic scenes.

For each scene type (single, cluttered), seed and variant: train on the `iid` split, validate on
`val` (other samples of the training combinations; reported, never used to pick an epoch), then
evaluate the last epoch's model on fresh `iid` pairs, on `comp` (held-out object-action
combinations) and on `syst` (held-out object classes). Writes `ood_results.json`, `ood_table.md`
and figures into the output directory.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.actions import ACTIONS
from ..core.preprocess import Preprocessing
from ..model.losses import LossWeights
from ..model.network import ModelConfig
from ..synthetic.scenes import TRAIN_RANDOM_COLOR_P, TRAIN_RANDOM_SHAPE_P, SceneConfig, generate_pairs
from .evaluation import (classification_metrics, evaluate_pairs, plot_confusion, plot_cosine_matrix,
                         plot_delta_projection)
from .trainer import TrainConfig, resize_pairs, train

# name -> (head, alpha_contrast, alpha_sparsity)
VARIANTS: dict[str, tuple[str, float, float]] = {
    "baseline": ("baseline", 0.0, 0.0),
    "delta_ce": ("global", 0.0, 0.0),
    "delta_supcon": ("global", 2.0, 0.0),
    "delta_supcon_l1": ("global", 2.0, 1.0),
    "patch_full": ("patch", 2.0, 1.0),
}


@dataclass(frozen=True)
class BenchmarkConfig:
    variants: tuple[str, ...] = tuple(VARIANTS)
    scenes: tuple[str, ...] = ("single", "cluttered")
    seeds: tuple[int, ...] = (0, 1, 2)
    # sized for 30 runs in under an hour on 2 CPU cores; raise both on a GPU
    train_pairs: int = 1200
    val_pairs: int = 200
    test_pairs: int = 500
    epochs: int = 6
    none_fraction: float = 0.25  # share of `none` (failed action) pairs in training
    # training pairs only: share of objects painted a random colour (SceneConfig.random_color_p);
    # validation and test pairs keep the class colours. Default: the shipped model's recipe
    random_color_p: float = TRAIN_RANDOM_COLOR_P
    random_shape_p: float = TRAIN_RANDOM_SHAPE_P  # the same for a random body outline (SceneConfig.random_shape_p)
    # the table's small budget: the default backbone at 64 px input with 8 px patches (the same 64
    # tokens as the shipped model's 128 px / 16 px, with a quarter of the pixels in the stem)
    input_size: int = 64
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        backbone_kwargs={**ModelConfig().backbone_kwargs, "patch_size": 8}))
    batch_size: int = 64
    lr: float = TrainConfig.lr

    @classmethod
    def quick(cls) -> "BenchmarkConfig":
        """Minutes on a laptop; numbers are meaningless, the plumbing is exercised."""
        return cls(seeds=(0,), train_pairs=96, val_pairs=32, test_pairs=48, epochs=1, input_size=32,
                   model=ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                                     embed_dim=32, projector_hidden=32, top_k=4))


def _mean_std(values: list[float]) -> str:
    v = np.asarray([x for x in values if x == x], dtype=float)
    if not v.size:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


def _split_columns(split: str, m: dict) -> dict:
    """The table's columns for one test split, from `evaluate_pairs` metrics."""
    return {f"{split}_accuracy": m["accuracy"], f"{split}_none_recall": m["per_class"].get("none", float("nan")),
            f"{split}_opposite_error_rate": m["opposite_error_rate"], f"{split}_opposite_cosine": m["opposite_cosine"]}


def run_benchmark(cfg: BenchmarkConfig, out: Path, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    unknown = sorted(set(cfg.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    pre = Preprocessing(cfg.input_size)
    rows: list[dict] = []
    t_start = time.perf_counter()
    total = len(cfg.scenes) * len(cfg.seeds) * len(cfg.variants)
    k = 0
    for scenes in cfg.scenes:
        sc = SceneConfig(clutter=scenes == "cluttered")
        train_sc = replace(sc, random_color_p=cfg.random_color_p,  # training pairs only
                           random_shape_p=cfg.random_shape_p)
        for seed in cfg.seeds:
            data = {
                "train": resize_pairs(generate_pairs("iid", cfg.train_pairs, train_sc, seed=seed,
                                                     none_fraction=cfg.none_fraction), pre),
                "val": resize_pairs(generate_pairs("val", cfg.val_pairs, sc, seed=seed), pre),
                # fresh samples for the IID test: another seed stream than training
                "iid": resize_pairs(generate_pairs("iid", cfg.test_pairs, sc, seed=seed + 1000), pre),
                "comp": resize_pairs(generate_pairs("comp", cfg.test_pairs, sc, seed=seed), pre),
                "syst": resize_pairs(generate_pairs("syst", cfg.test_pairs, sc, seed=seed), pre),
            }
            for variant in cfg.variants:
                k += 1
                head, a_con, a_sp = VARIANTS[variant]
                mc = replace(cfg.model, head=head)
                # none_recall_target 0: the variants are compared at the plain argmax, what their
                # representations give; the none operating point is a deployment step on top
                tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                                 loss=LossWeights(alpha_contrast=a_con, alpha_sparsity=a_sp), none_recall_target=0.0)
                log(f"[{k}/{total}] {scenes} seed {seed} {variant}")
                res = train(data["train"], data["val"], list(ACTIONS), mc, pre, tc, None, progress=progress,
                            log=lambda m: None)
                row = {"scenes": scenes, "seed": seed, "variant": variant, "train_seconds": round(res.seconds, 1),
                       "val_accuracy": res.history[-1].get("val_accuracy")}
                for split in ("iid", "comp", "syst"):
                    m = evaluate_pairs(res.model, data[split], keep_deltas=True)
                    row.update(_split_columns(split, m))
                    row[f"{split}_per_class"] = m["per_class"]
                    if seed == cfg.seeds[0] and split == "comp" and variant in ("patch_full", "baseline"):
                        _plot_split(m, data[split], list(ACTIONS), out, f"{scenes}_{variant}_{split}",
                                    f"{variant}, {scenes}, {split}")
                log("    " + ", ".join(f"{s} {row[f'{s}_accuracy']:.3f}" for s in ("iid", "comp", "syst")) +
                    f", none recall (comp) {row['comp_none_recall']:.3f}, {res.seconds:.0f} s")
                rows.append(row)
                _write(cfg, rows, out, time.perf_counter() - t_start)
    return {"rows": rows}


def _per_object_accuracy(pairs, predictions: list[str]) -> dict[str, float]:
    """Share of correct predictions per manipulated object class (`none` pairs included)."""
    hits: dict[str, list[bool]] = {}
    for obj, true, pred in zip(pairs.objects, pairs.actions, predictions):
        hits.setdefault(obj or "?", []).append(true == pred)
    return {o: float(np.mean(h)) for o, h in sorted(hits.items())}


def _plot_split(m: dict, pairs, labels: list[str], out: Path, tag: str, what: str) -> None:
    """The three figures of one evaluated split (`m` from `evaluate_pairs(..., keep_deltas=True)`):
    `confusion_<tag>.png`, `delta_pca_<tag>.png`, `cosine_<tag>.png`."""
    plot_confusion(m, out / f"confusion_{tag}.png", f"{what}: accuracy {m['accuracy']:.2f}")
    plot_delta_projection(m["deltas"], pairs.actions, out / f"delta_pca_{tag}.png", f"delta embeddings, {what} (PCA)")
    plot_cosine_matrix(m["deltas"], pairs.actions, labels, out / f"cosine_{tag}.png",
                       f"cosine of class-mean deltas, {what}")


def evaluate_model(model_dir: Path, cfg: BenchmarkConfig, out: Path, log: Callable[[str], None] = print) -> list[dict]:
    """Evaluate an already trained model (e.g. the shipped one) on the benchmark's test splits
    (same seeds and sizes as the trained variants), at its `none` operating point and, when that is
    not the plain argmax, at the plain argmax too (row keys `argmax_*`). Writes `ood_model_<name>.md`
    (accuracy, recall per action and per held-out object class), `ood_model_<name>.json` (every
    row) and the first seed's figures of the comp and syst splits; <name> is the model directory's
    name."""
    from ..model.network import CausalDeltaModel

    model, meta = CausalDeltaModel.load(model_dir)
    pre = model.preprocessing
    labels = list(model.labels)
    bias = model.none_logit_bias
    name = Path(model_dir).name
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for scenes in cfg.scenes:
        sc = SceneConfig(clutter=scenes == "cluttered")
        for seed in cfg.seeds:
            row = {"scenes": scenes, "seed": seed, "variant": f"model {meta['model_id']}"}
            for split, split_seed in (("iid", seed + 1000), ("comp", seed), ("syst", seed)):
                pairs = resize_pairs(generate_pairs(split, cfg.test_pairs, sc, seed=split_seed), pre)
                m = evaluate_pairs(model, pairs, keep_deltas=True)
                row.update(_split_columns(split, m))
                row[f"{split}_per_class"] = m["per_class"]
                row[f"{split}_per_object"] = _per_object_accuracy(pairs, m["predictions"])
                if bias:  # the same logits read at the plain argmax
                    m0 = classification_metrics(pairs.actions, [labels[i] for i in m["logits"].argmax(1)], labels)
                    m0["opposite_cosine"] = m["opposite_cosine"]  # the deltas do not depend on it
                    row.update({f"argmax_{k}": v for k, v in _split_columns(split, m0).items()})
                    row[f"argmax_{split}_per_class"] = m0["per_class"]
                if seed == cfg.seeds[0] and split in ("comp", "syst"):
                    _plot_split(m, pairs, labels, out, f"model_{name}_{scenes}_{split}",
                                f"model {meta['model_id'][:8]}, {scenes}, {split}")
            log(f"{scenes} seed {seed}: " + ", ".join(f"{s} {row[f'{s}_accuracy']:.3f}" for s in ("iid", "comp", "syst")))
            rows.append(row)
    training = meta.get("training", {})
    lines = [f"# Model {meta['model_id']} on the benchmark's test splits", "",
             f"`{model_dir}`: {meta['head']} head, trained on {training.get('pairs', '?')} pairs for "
             f"{len(training.get('history', []))} epochs ({training.get('seconds', '?')} s). Same test pairs as "
             f"`ood_table.md` (seeds {list(cfg.seeds)}, {cfg.test_pairs} per split).", "",
             "| scenes | operating point | IID | compositional | systematic | `none` recall (comp / syst) | opp. err | "
             "opp. cos |", "|---|---|---|---|---|---|---|---|"]
    points = [("", f"`none` bias {bias:g} (model.json)" if bias else "plain argmax")]
    if bias:
        points.append(("argmax_", "plain argmax (bias 0)"))
    for scenes in cfg.scenes:
        rs = [r for r in rows if r["scenes"] == scenes]
        for prefix, point in points:
            col = lambda key: _mean_std([r[prefix + key] for r in rs])  # noqa: E731
            lines.append(f"| {scenes} | {point} | {col('iid_accuracy')} | {col('comp_accuracy')} | "
                         f"{col('syst_accuracy')} | {col('comp_none_recall')} / {col('syst_none_recall')} | "
                         f"{col('comp_opposite_error_rate')} | {col('comp_opposite_cosine')} |")
    if bias:
        d = meta["decision"]
        lines += ["", f"Operating point: `none` logit bias {bias:g}, chosen by the rule \"{d.get('rule')}\" (target "
                  f"{d.get('none_recall_target')}) on {d.get('validation', {}).get('source', 'validation pairs')}; "
                  "the per-action tables below are at this operating point."]
    lines += ["", "Recall per action (mean over seeds; – where the split has no pair of that action):", "",
              "| scenes | split | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for scenes in cfg.scenes:
        rs = [r for r in rows if r["scenes"] == scenes]
        for split in ("iid", "comp", "syst"):
            cells = []
            for a in labels:
                v = [r[f"{split}_per_class"].get(a, float("nan")) for r in rs]
                v = [x for x in v if x == x]
                cells.append(f"{np.mean(v):.2f}" if v else "–")
            lines.append(f"| {scenes} | {split} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy per manipulated object class on the systematic split (classes never seen in training; "
              "mean over seeds):", ""]
    for scenes in cfg.scenes:
        per_obj: dict[str, list[float]] = {}
        for r in (r for r in rows if r["scenes"] == scenes):
            for o, acc in r["syst_per_object"].items():
                per_obj.setdefault(o, []).append(acc)
        lines.append(f"- {scenes}: " + ", ".join(f"{o} {np.mean(v):.2f}" for o, v in sorted(per_obj.items())))
    lines += ["", f"Figures (first seed): `confusion_`, `delta_pca_`, `cosine_model_{name}_<scenes>_<comp|syst>.png`.",
              ""]
    (out / f"ood_model_{name}.md").write_text("\n".join(lines))
    (out / f"ood_model_{name}.json").write_text(json.dumps({"model_id": meta["model_id"], "model_dir": str(model_dir),
                                                             "seeds": list(cfg.seeds), "test_pairs": cfg.test_pairs,
                                                             "rows": rows}, indent=1) + "\n")
    return rows


def _write(cfg: BenchmarkConfig, rows: list[dict], out: Path, seconds: float) -> None:
    meta = {"config": asdict(cfg), "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "seconds": round(seconds, 1)}
    (out / "ood_results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1, default=str) + "\n")
    lines = [
        "# OOD benchmark (synthetic intervention scenes)",
        "",
        f"Train {cfg.train_pairs} pairs (`iid` split, {cfg.none_fraction:.0%} `none`, {cfg.random_color_p:.0%} of objects "
        f"in random colours, {cfg.random_shape_p:.0%} with random outlines), {cfg.epochs} epochs, last epoch reported; test "
        f"{cfg.test_pairs} pairs per split; seeds {list(cfg.seeds)}; input {cfg.input_size} px; backbone "
        f"`{cfg.model.backbone}` {cfg.model.backbone_kwargs} from scratch, patch stem `{cfg.model.patch_stem}`, "
        f"Top-K {cfg.model.top_k} ({cfg.model.patch_pool} pooling); batch {cfg.batch_size}, lr {cfg.lr}. Mean ± std over seeds.",
        "`opp. err` = share of errors that predict the opposite action; `opp. cos` = mean cosine between "
        "class-mean deltas of opposing actions (−1 = anti-parallel), both on the compositional split.",
        "",
        "| scenes | variant | IID | compositional | systematic | `none` recall (comp / syst) | opp. err | opp. cos | val |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenes in cfg.scenes:
        for variant in cfg.variants:
            rs = [r for r in rows if r["scenes"] == scenes and r["variant"] == variant]
            if not rs:
                continue
            col = lambda key: _mean_std([r[key] for r in rs])  # noqa: E731
            lines.append(f"| {scenes} | {variant} | {col('iid_accuracy')} | {col('comp_accuracy')} | "
                         f"{col('syst_accuracy')} | {col('comp_none_recall')} / {col('syst_none_recall')} | "
                         f"{col('comp_opposite_error_rate')} | {col('comp_opposite_cosine')} | {col('val_accuracy')} |")
    lines += ["", f"{len(rows)} runs, {seconds / 60:.1f} min on {meta['machine']['platform']}.", ""]
    (out / "ood_table.md").write_text("\n".join(lines))
