"""The one preprocessing path from an RGB frame to a model input tensor. The trainer, the
evaluator, the benchmark and the node all call `prepare`, so they cannot drift apart."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes a model input. Stored in the model's JSON.

    The whole frame is resized (no crop: the manipulated object may be anywhere) to
    `input_size` x `input_size` with area interpolation, scaled to [0, 1] and normalised."""

    input_size: int = 128
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessing":
        return cls(input_size=int(data["input_size"]), mean=tuple(data["mean"]), std=tuple(data["std"]))

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

    def prepare(self, images: list[np.ndarray]):
        """List of RGB frames of any size -> normalised N x 3 x S x S tensor."""
        return self.normalise(np.stack([self.resize(im) for im in images]))
