"""Metrics and plots: accuracy, per-class accuracy and recall, confusion matrix, the rate of
errors that predict the opposite action, and the geometry of the delta embeddings (cosine between
class means; opposing actions should come out anti-parallel)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.actions import OPPOSITE
from ..core.dataset import PairSet
from ..model.inference import predict_pairs
from ..model.prototypes import UNKNOWN


def classification_metrics(true: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy (= recall), confusion matrix (rows: true, cols: predicted),
    and the share of errors whose prediction is the true action's opposite."""
    idx = {a: i for i, a in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred):
        if t in idx and p in idx:
            conf[idx[t], idx[p]] += 1
    n = len(true)
    correct = sum(t == p for t, p in zip(true, pred))
    per_class = {}
    for a in labels:
        k = sum(t == a for t in true)
        if k:
            per_class[a] = sum(t == a and p == a for t, p in zip(true, pred)) / k
    errors = [(t, p) for t, p in zip(true, pred) if t != p]
    opposite = sum(OPPOSITE.get(t) == p for t, p in errors)
    return {
        "n": n,
        "accuracy": correct / n if n else float("nan"),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "labels": list(labels),
        "errors": len(errors),
        "opposite_error_rate": opposite / len(errors) if errors else 0.0,
        "opposite_errors": opposite,
        **success_failure_rates(true, pred),
    }


def success_failure_rates(true: list[str], pred: list[str], none: str = "none") -> dict[str, Any]:
    """What a planner verifying its actions pays for: the false-success rate (a failed
    manipulation, `none`, read as some action: the planner moves on although nothing happened)
    and the false-failure rate (a real action read as `none`: a needless retry), with the
    number of pairs each is taken over. NaN where there are no such pairs. `unknown_change` (a
    model with prototypes) is no success: a planner checks it."""
    nones = [p for t, p in zip(true, pred) if t == none]
    acts = [p for t, p in zip(true, pred) if t != none]
    not_success = (none, UNKNOWN)
    return {"false_success_rate": float(np.mean([p not in not_success for p in nones])) if nones else float("nan"),
            "false_failure_rate": float(np.mean([p == none for p in acts])) if acts else float("nan"),
            "none_pairs": len(nones), "action_pairs": len(acts)}


def class_mean_cosines(deltas: np.ndarray, actions: list[str], labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Cosine similarity matrix between the mean delta of each present class."""
    present = [a for a in labels if a in set(actions)]
    acts = np.asarray(actions)
    means = np.stack([deltas[acts == a].mean(0) for a in present]) if present else np.zeros((0, deltas.shape[1]))
    norm = means / (np.linalg.norm(means, axis=1, keepdims=True) + 1e-12)
    return norm @ norm.T, present


def opposite_cosine(deltas: np.ndarray, actions: list[str], labels: list[str]) -> float:
    """Mean cosine between the class means of opposing actions (-1 = anti-parallel)."""
    cos, present = class_mean_cosines(deltas, actions, labels)
    pos = {a: i for i, a in enumerate(present)}
    vals = [cos[pos[a], pos[b]] for a, b in OPPOSITE.items() if a < b and a in pos and b in pos]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_pairs(model, pairs: PairSet, device: torch.device | str = "cpu", batch_size: int = 256,
                   keep_deltas: bool = False) -> dict[str, Any]:
    """`classification_metrics` of the model's predictions (at its `none` operating point) and the
    opposite-action cosine. With `keep_deltas` also "deltas", "predictions" and the raw "logits"."""
    labels = list(model.labels)
    logits, deltas = predict_pairs(model, pairs, device, batch_size)
    pred = [labels[i] for i in model.decide(torch.from_numpy(logits)).argmax(1).numpy()]
    out = classification_metrics(pairs.actions, pred, labels)
    out["opposite_cosine"] = opposite_cosine(deltas, pairs.actions, labels)
    if keep_deltas:
        out.update(deltas=deltas, predictions=pred, logits=logits)
    return out


# ------------------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out (within `rect` of the figure, e.g. to leave room for a legend below) and write."""
    fig.tight_layout(rect=rect)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _matrix_plot(matrix: np.ndarray, labels: list[str], cmap: str, vmin: float, vmax: float, cell_text):
    """A labelled square heat map; `cell_text(i, j)` returns (text, colour) or None."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 0.8 + 0.55 * len(labels)))
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            cell = cell_text(i, j)
            if cell is not None:
                ax.text(j, i, cell[0], ha="center", va="center", fontsize=6, color=cell[1])
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig, ax


def plot_confusion(metrics: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true, columns: predicted) with the counts."""
    labels = metrics["labels"]
    conf = np.asarray(metrics["confusion"], dtype=float)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    fig, ax = _matrix_plot(norm, labels, "Blues", 0, 1, lambda i, j: (
        (str(int(conf[i, j])), "white" if norm[i, j] > 0.5 else "black") if conf[i, j] else None))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.3f} (n={metrics['n']})")
    return _save(fig, path)


def plot_delta_projection(deltas: np.ndarray, actions: list[str], path: str | Path, title: str = "") -> Path:
    """2-D PCA of the delta embeddings, coloured by true action."""
    plt = _pyplot()
    x = deltas - deltas.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6.5, 5))
    acts = np.asarray(actions)
    cmap = plt.get_cmap("tab10")
    for i, a in enumerate(sorted(set(actions))):
        m = acts == a
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.6, color=cmap(i % 10), label=a)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title or "delta embeddings (PCA)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return _save(fig, path)


def plot_cosine_matrix(deltas: np.ndarray, actions: list[str], labels: list[str], path: str | Path,
                       title: str = "") -> Path:
    """Cosine between the class-mean deltas; opposing actions should be near -1."""
    cos, present = class_mean_cosines(deltas, actions, labels)
    fig, ax = _matrix_plot(cos, present, "RdBu_r", -1, 1, lambda i, j: (f"{cos[i, j]:.1f}", "black"))
    ax.set_title(title or "cosine between class-mean deltas")
    return _save(fig, path)
