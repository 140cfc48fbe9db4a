"""The one preprocessing path from RGB frames to model input tensors. The trainer, the
evaluator, the benchmark and the node all go through `Preprocessing` (`resize`, `register`,
`normalise_pair`), so they cannot drift apart."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes a model input. Stored in the model's JSON.

    The whole frame is resized (no crop: the manipulated object may be anywhere) to
    `input_size` x `input_size` with area interpolation, scaled to [0, 1] and normalised.

    With `register_max_shift` > 0 the resized after frame of a pair is first registered to the
    resized before frame: the camera translation between them is estimated by phase correlation
    (whole frame, Hann window) and undone, unless it is larger than `register_max_shift` times
    the input size on either axis (then the estimate is taken to be wrong, e.g. locked onto a
    pushed object, and the frame is left as it is). A shaking arm-mounted camera then no longer
    looks like every object moved a little."""

    input_size: int = 128
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    register_max_shift: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.register_max_shift <= 0.5:
            raise ValueError(f"register_max_shift is a fraction of the input size in [0, 0.5], "
                             f"got {self.register_max_shift}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessing":
        """Model files written before registration existed have no `register_max_shift`: 0."""
        return cls(input_size=int(data["input_size"]), mean=tuple(data["mean"]), std=tuple(data["std"]),
                   register_max_shift=float(data.get("register_max_shift", 0.0)))

    def describe_registration(self) -> str:
        """For logs: `off`, or the bound as a fraction and in pixels."""
        if not self.register_max_shift:
            return "off"
        return (f"camera shifts up to {self.register_max_shift:g} of the frame "
                f"({self.register_max_shift * self.input_size:.1f} px at {self.input_size} px) undone")

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> SxSx3 uint8 (what the trainer caches)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
        s = self.input_size
        if rgb.shape[0] == s and rgb.shape[1] == s:
            return np.ascontiguousarray(rgb, dtype=np.uint8)
        interp = cv2.INTER_AREA if min(rgb.shape[:2]) >= s else cv2.INTER_LINEAR
        return cv2.resize(rgb, (s, s), interpolation=interp)

    def normalise(self, batch_uint8):
        """Nx S x S x 3 uint8 (numpy or torch) -> N x 3 x S x S float tensor."""
        import torch

        x = torch.as_tensor(batch_uint8)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def register(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """The resized `after` frame moved onto the resized `before` frame (see the class
        docstring); `after` itself when registration is off or the shift is out of bounds."""
        if not self.register_max_shift:
            return after
        dx, dy = estimate_shift(before, after)
        limit = self.register_max_shift * self.input_size
        if not (np.isfinite(dx) and np.isfinite(dy)) or max(abs(dx), abs(dy)) > limit:
            return after
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        return cv2.warpAffine(after, m, (after.shape[1], after.shape[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def register_batch(self, before, after):
        """N x S x S x 3 uint8 batches (numpy or torch): the after frames registered pair by pair."""
        if not self.register_max_shift:
            return after
        b, a = np.asarray(before), np.asarray(after)
        return np.stack([self.register(b[i], a[i]) for i in range(len(a))])

    def normalise_pair(self, before, after):
        """Resized N x S x S x 3 uint8 before/after batches -> the two normalised tensors, the
        after frames registered to the before frames. Training, evaluation and inference use it."""
        return self.normalise(before), self.normalise(self.register_batch(before, after))

    def prepare_pairs(self, befores: list[np.ndarray], afters: list[np.ndarray]):
        """Before and after RGB frames of any size -> the two normalised tensors."""
        return self.normalise_pair(np.stack([self.resize(im) for im in befores]),
                                   np.stack([self.resize(im) for im in afters]))


@lru_cache(maxsize=8)
def _hann(width: int, height: int) -> np.ndarray:
    return cv2.createHanningWindow((width, height), cv2.CV_32F)


def estimate_shift(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """(dx, dy) in pixels such that `after` is `before` moved by (dx, dy): phase correlation of
    the grey frames under a Hann window (sub-pixel; robust to a global gain change)."""
    if before.shape != after.shape:
        raise ValueError(f"cannot register frames of different shapes {before.shape} and {after.shape}")
    gb = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY).astype(np.float32)
    ga = cv2.cvtColor(after, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(gb, ga, _hann(gb.shape[1], gb.shape[0]))
    return float(dx), float(dy)
