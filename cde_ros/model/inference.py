"""Inference API: two RGB images (or a batch of pairs) in, action probabilities and deltas out.

The before frame can be encoded ahead of time (`encode`) and passed to `classify` later, so at
the end of an event only the after frame is left to encode. Scores are the softmax of the logits
at the model's `none` operating point (`model.decision`), so the action is their argmax. Runs
under `torch.inference_mode`, on CUDA with fp16/bf16 autocast when available, else on CPU in fp32.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ..core.dataset import PairSet
from .decision import NONE, check_bias
from .network import WEIGHTS_FILE, CausalDeltaModel, Encoding, model_id_for
from .prototypes import UNKNOWN, roi_changes_of
from .where import roi_change

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine (use auto or cpu)")
    return torch.device(device)


@torch.inference_mode()
def predict_pairs(model, pairs: PairSet, device: torch.device | str = "cpu", batch_size: int = 256,
                  backbone: bool = False) -> tuple[np.ndarray, ...]:
    """(raw logits N x C, aggregated delta N x D) for a PairSet; `model.decide` turns the logits
    into the model's predictions. `backbone`: also the backbone's global-token deltas (N x B),
    the space of enrolled actions' prototypes."""
    model.eval()
    pre = model.preprocessing
    device = torch.device(device)
    logits, deltas, bb = [], [], []
    for i in range(0, len(pairs), batch_size):
        b, a = pre.prepare_pairs(pairs.before[i:i + batch_size], pairs.after[i:i + batch_size])
        b, a = b.to(device), a.to(device)
        out = model(b, a)
        logits.append(out.logits.float().cpu().numpy())
        deltas.append(out.delta.float().cpu().numpy())
        if backbone:
            bb.append(out.backbone_delta.float().cpu().numpy())
    if backbone:
        return np.concatenate(logits), np.concatenate(deltas), np.concatenate(bb)
    return np.concatenate(logits), np.concatenate(deltas)


@dataclass
class EncodedFrame:
    """The projected tokens of one frame (on the model's device), the resized frame they came
    from (an after frame is registered to it) and how long encoding took."""

    encoding: Encoding
    ms: float
    image: np.ndarray | None = None


@dataclass
class Prediction:
    action: str
    confidence: float
    scores: dict[str, float]
    delta: np.ndarray  # D, aggregated delta
    topk_delta: np.ndarray | None  # K x D (patch head)
    topk_index: np.ndarray | None  # K patch indices (patch head)
    timings_ms: dict[str, float]
    # cosine similarity of the delta to each class prototype (models with prototypes, else None)
    similarity: dict[str, float] | None = None


Image = Union[np.ndarray, EncodedFrame]


class Predictor:
    def __init__(self, model_dir: str | Path, device: str = "auto", precision: str = "auto",
                 none_logit_bias: float | None = None) -> None:
        """Load a model directory. `none_logit_bias` replaces the model's `none` operating point
        (model.decision; None: the one in model.json); `model_id` then names the replacement."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = pick_device(device)
        self.model, self.meta = CausalDeltaModel.load(model_dir)
        self.model.to(self.device).eval()
        self.model_dir = Path(model_dir)
        self.model_id: str = self.meta["model_id"]
        if none_logit_bias is not None:
            bias = check_bias(none_logit_bias, "Predictor")
            self.model.decision = {"none_logit_bias": bias,
                                   "replaced": f"model.json has {self.model.none_logit_bias:g}"}
            protos = self.model.prototypes
            self.model_id = model_id_for(self.model_dir / WEIGHTS_FILE, bias, self.preprocessing.register_max_shift,
                                         protos.digest() if protos is not None else "")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if self.device.type == "cuda" else "fp32"
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision} needs a CUDA device; this one is {self.device}")
        self.precision = precision
        self._amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def answer_labels(self) -> list[str]:
        """Every action a prediction can name: the classifier's labels, then (a model with
        prototypes) its enrolled actions and `unknown_change` when it has a threshold."""
        protos = self.model.prototypes
        if protos is None:
            return self.labels
        return self.labels + list(protos.enrolled) + ([UNKNOWN] if protos.threshold is not None else [])

    @property
    def none_logit_bias(self) -> float:
        return self.model.none_logit_bias

    @property
    def _uses_rois(self) -> bool:
        """Whether an event's roi can change the answer (a roi change threshold in the prototypes)."""
        protos = self.model.prototypes
        return protos is not None and protos.roi_change_threshold is not None

    @property
    def preprocessing(self):
        return self.model.preprocessing

    @property
    def num_patches(self) -> int:
        return self.model.backbone.num_patches

    def change_region(self, pred: Prediction, width: int, height: int) -> dict | None:
        """Where the change happened, in the pixels of a width x height camera frame
        (`cde_ros.model.where.change_region`); None for a global-head model."""
        from .where import change_region

        return change_region(pred.topk_index, pred.topk_delta, self.num_patches, width, height)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self._amp_dtype, enabled=self._amp_dtype is not None)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray, reference: EncodedFrame | None = None) -> EncodedFrame:
        """Encode one HxWx3 uint8 RGB frame (any size: it is resized like in training). An after
        frame is registered to its `reference` (the encoded before frame) first when the model's
        preprocessing registers pairs."""
        t0 = time.perf_counter()
        pre = self.preprocessing
        image = pre.resize(rgb)
        if reference is not None:
            image = pre.register(reference.image, image)
        x = pre.normalise(image).to(self.device)
        with self._autocast():
            enc = self.model.encode(x)
        self._sync()
        return EncodedFrame(enc, (time.perf_counter() - t0) * 1e3, image)

    @torch.inference_mode()
    def classify(self, before: Image, after: Image, roi: Sequence[int] | None = None,
                 camera_size: tuple[float, float] | None = None) -> Prediction:
        """One pair. `before` may be an RGB array or an `EncodedFrame` from `encode` (the node
        encodes it when the event starts); `after` too, unless the model registers pairs (the
        after frame must then be registered to the before frame before it is encoded). `roi`: the
        event's target region [x, y, w, h] in the pixels of the camera frames (`camera_size`
        (width, height); by default the after frame's size), for the prototype rule's roi change
        (`cde_ros.model.prototypes`)."""
        t0 = time.perf_counter()
        if roi is not None and camera_size is None:
            if isinstance(after, EncodedFrame):
                raise ValueError("with a roi and an encoded after frame, give the camera frames' size")
            camera_size = (after.shape[1], after.shape[0])
        eb = before if isinstance(before, EncodedFrame) else self.encode(before)
        if isinstance(after, EncodedFrame):
            if self.preprocessing.register_max_shift:
                raise ValueError("this model registers the after frame to the before frame "
                                 "(preprocessing.register_max_shift); pass the after frame as an image")
            ea = after
        else:
            ea = self.encode(after, reference=eb)
        t1 = time.perf_counter()
        with self._autocast():
            out = self.model.head(eb.encoding, ea.encoding)
        probs = self.model.decide(out.logits.float()).softmax(-1)[0].cpu().numpy()
        change = None
        if roi is not None and self._uses_rois and eb.image is not None and ea.image is not None:
            change = roi_change(eb.image, ea.image, roi, *camera_size)
        t2 = time.perf_counter()
        return self._prediction(probs, out, 0, {
            "encode_before_ms": eb.ms, "encode_after_ms": ea.ms, "head_ms": (t2 - t1) * 1e3,
            "call_ms": (t2 - t0) * 1e3}, change)

    @torch.inference_mode()
    def classify_pairs(self, befores: Sequence[np.ndarray], afters: Sequence[np.ndarray],
                       batch_size: int = 64, rois: Sequence | None = None,
                       camera_size: tuple[float, float] | None = None) -> list[Prediction]:
        """Many pairs in batches; `rois` (one per pair or None) in the pixels of `camera_size`
        (width, height) frames, as in `classify`."""
        if len(befores) != len(afters):
            raise ValueError(f"{len(befores)} before frames but {len(afters)} after frames")
        if rois is not None and len(rois) != len(befores):
            raise ValueError(f"{len(rois)} rois for {len(befores)} pairs")
        changes = None
        if rois is not None and self._uses_rois:
            changes = roi_changes_of(self.preprocessing, befores, afters, list(rois), camera_size)
        out_list: list[Prediction] = []
        pre = self.preprocessing
        for i in range(0, len(befores), batch_size):
            t0 = time.perf_counter()
            b, a = pre.prepare_pairs(list(befores[i:i + batch_size]), list(afters[i:i + batch_size]))
            b, a = b.to(self.device), a.to(self.device)
            with self._autocast():
                out = self.model(b, a)
            probs = self.model.decide(out.logits.float()).softmax(-1).cpu().numpy()
            ms = (time.perf_counter() - t0) * 1e3 / len(b)
            out_list += [self._prediction(probs[j], out, j, {"per_pair_ms": ms},
                                          changes[i + j] if changes is not None else None) for j in range(len(b))]
        return out_list

    def _prediction(self, probs: np.ndarray, out, j: int, timings: dict[str, float],
                    change_in_roi: float | None = None) -> Prediction:
        k = int(probs.argmax())
        action, confidence = self.labels[k], float(probs[k])
        delta = out.delta[j].float().cpu().numpy()
        similarity = None
        protos = self.model.prototypes
        if protos is not None:
            # the prototype rule (cde_ros.model.prototypes): an enrolled action or unknown_change
            # may replace the classifier's action; its confidence is then the classifier's
            # probability that something changed (1 - p(none))
            bd = None if out.backbone_delta is None else out.backbone_delta[j].float().cpu().numpy()[None]
            answers, sims = protos.decide([action], delta[None], roi_changes=[change_in_roi], backbone_deltas=bd)
            similarity = {a: float(v) for a, v in zip(protos.labels, sims[0])}
            if protos.enrolled and bd is not None:  # the enrolled actions': in the backbone's delta space
                similarity.update(zip(protos.enrolled, map(float, protos.enrolled_similarities(bd)[0])))
            if answers[0] != action:
                action = answers[0]
                confidence = 1.0 - float(probs[self.labels.index(NONE)]) if NONE in self.labels else 1.0
        return Prediction(
            action=action, confidence=confidence,
            scores={a: float(p) for a, p in zip(self.labels, probs)},
            similarity=similarity,
            delta=delta,
            topk_delta=None if out.topk_delta is None else out.topk_delta[j].float().cpu().numpy(),
            topk_index=None if out.topk_index is None else out.topk_index[j].cpu().numpy(),
            timings_ms=timings)

    def warmup(self, iterations: int = 2) -> float:
        """Run a few dummy pairs (allocations, cuDNN autotune). Returns the last call's ms."""
        s = self.preprocessing.input_size
        img = np.zeros((s, s, 3), np.uint8)
        ms = 0.0
        for _ in range(iterations):
            ms = self.classify(img, img).timings_ms["call_ms"]
        return ms

    def release(self) -> None:
        """Free device memory (the node calls this on deactivate / cleanup)."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def to_device(self) -> None:
        self.model.to(self.device)
