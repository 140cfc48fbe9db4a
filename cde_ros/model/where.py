"""Where the change happened: a patch-wise model's Top-K patches in camera pixels.

The patch head keeps the K patches whose delta is largest (`Prediction.topk_index`, indices
into the backbone's square patch grid, row-major). Frames are resized to the model's input
without cropping, so a patch (r, c) of a g x g grid covers the camera pixels
x in [c W/g, (c+1) W/g), y in [r H/g, (r+1) H/g). With registration the after frame was shifted
onto the before frame first: the boxes are in the before frame's pixels (the shift is at most
`register_max_shift` of the frame). Each patch's share is its delta's L2 norm over the sum of the
K norms.

An event's roi is checked two ways: `share_inside` (how much of the model's change lies inside it:
spatial verification) and `roi_change` (how much the frames changed inside it: a pair the
classifier reads as `none` may still be a change there, `cde_ros.model.prototypes`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def change_region(topk_index: np.ndarray | None, topk_delta: np.ndarray | None, num_patches: int,
                  width: int, height: int) -> dict[str, Any] | None:
    """{"patches": [{"box": [x, y, w, h], "share": s}, ...] (largest share first), "bbox":
    [x, y, w, h] around them, "grid": [g, g]} in camera pixels; None for a global-head model."""
    if topk_index is None or topk_delta is None or len(topk_index) == 0:
        return None
    g = int(round(math.sqrt(num_patches)))
    if g * g != num_patches:
        raise ValueError(f"the patch grid is not square ({num_patches} patches)")
    norms = np.linalg.norm(np.asarray(topk_delta, np.float64).reshape(len(topk_index), -1), axis=1)
    shares = norms / norms.sum() if norms.sum() > 0 else np.full(len(norms), 1.0 / len(norms))
    patches = []
    for idx, share in sorted(zip(np.asarray(topk_index).tolist(), shares.tolist()), key=lambda x: -x[1]):
        r, c = divmod(int(idx), g)
        x0, x1 = round(c * width / g), round((c + 1) * width / g)
        y0, y1 = round(r * height / g), round((r + 1) * height / g)
        patches.append({"box": [x0, y0, x1 - x0, y1 - y0], "share": round(float(share), 4)})
    x0 = min(p["box"][0] for p in patches)
    y0 = min(p["box"][1] for p in patches)
    x1 = max(p["box"][0] + p["box"][2] for p in patches)
    y1 = max(p["box"][1] + p["box"][3] for p in patches)
    return {"patches": patches, "bbox": [x0, y0, x1 - x0, y1 - y0], "grid": [g, g]}


def heat_map(region: dict[str, Any] | None, width: int, height: int, scale: float = 1.0) -> np.ndarray:
    """A float32 height x width map: each Top-K patch's share over its box (0 elsewhere); the
    region's pixel boxes are multiplied by `scale` (0.25: a map at a quarter of the camera's
    resolution)."""
    out = np.zeros((height, width), np.float32)
    for p in (region or {}).get("patches", []):
        x, y, w, h = (int(round(v * scale)) for v in p["box"])
        out[y:y + max(1, h), x:x + max(1, w)] += p["share"]
    return out


def box_iou(a: list[int], b: list[int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(a[0], b[0])), max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def share_inside(region: dict[str, Any] | None, box: list[int]) -> float:
    """The share of the change whose patch centres lie inside `box` (0..1)."""
    total = 0.0
    for p in (region or {}).get("patches", []):
        x, y, w, h = p["box"]
        cx, cy = x + w / 2, y + h / 2
        if box[0] <= cx < box[0] + box[2] and box[1] <= cy < box[1] + box[3]:
            total += p["share"]
    return total


# the share of the change that must lie inside an event's roi for `verified` (the node's rule)
ROI_MIN_SHARE = 0.5


def decoy_box(box: list[int], width: int, height: int) -> list[int] | None:
    """A box of the same size as `box` where a second object of the same kind could stand, next
    to it (a drawer beside a drawer): right of it, else left, below, above — the first that fits
    in the frame; None when none fits (a box wider and taller than half the frame)."""
    x, y, w, h = box
    for cx, cy in ((x + w, y), (x - w, y), (x, y + h), (x, y - h)):
        if 0 <= cx and cx + w <= width and 0 <= cy and cy + h <= height:
            return [cx, cy, w, h]
    return None


def twin_decoy(box: list[int], twin: list[int] | None) -> list[int] | None:
    """A recorded second object of the same kind (its box) as the decoy roi for `box`, when it is
    a fair one: in view at a quarter of the target's area or more, and overlapping the target by
    at most a quarter of its own area (an opened door swung over it is no other place). Else None."""
    if not twin or twin[2] * twin[3] < 0.25 * box[2] * box[3]:
        return None
    ix = max(0, min(box[0] + box[2], twin[0] + twin[2]) - max(box[0], twin[0]))
    iy = max(0, min(box[1] + box[3], twin[1] + twin[3]) - max(box[1], twin[1]))
    return None if ix * iy > 0.25 * twin[2] * twin[3] else list(twin)


# ----------------------------------------------------------------- change inside an event's roi

# How much the frames changed inside an event's roi (`roi_change`): blocks of ROI_CHANGE_BLOCK x
# ROI_CHANGE_BLOCK pixels of the resized frames, the mean of the largest ones inside the roi that
# together cover ROI_CHANGE_SHARE of the frame (64 blocks of a 128 px frame). Chosen on the suite's
# `val` split only, by how well it told the pairs of actions a model was trained without that it
# read as `none` from the true `none` pairs it read as `none` (blocks of 4 and 8 pixels, the 16 to
# all of the largest blocks: AUROC 0.88-0.96; this one 0.96 and the most of them caught at the
# 90th-97.5th percentile of the `none` pairs).
ROI_CHANGE_BLOCK = 4
ROI_CHANGE_SHARE = 1 / 16


def roi_blocks(roi, width: float, height: float, grid: int) -> tuple[int, int, int, int]:
    """The cells (x0, x1, y0, y1; end exclusive) of a grid x grid division of a width x height
    camera frame that a roi [x, y, w, h] in its pixels touches, clipped to the frame (width =
    height = 1: a roi as fractions of the frame)."""
    x, y, w, h = roi
    x0, x1 = math.floor(x / width * grid), math.ceil((x + w) / width * grid)
    y0, y1 = math.floor(y / height * grid), math.ceil((y + h) / height * grid)
    return max(0, x0), min(grid, x1), max(0, y0), min(grid, y1)


def roi_change(before: np.ndarray, after: np.ndarray, roi: list[int] | tuple[int, ...] | None, width: float,
               height: float, block: int = ROI_CHANGE_BLOCK, share: float = ROI_CHANGE_SHARE) -> float | None:
    """How much a pair's frames changed inside the event's `roi` (camera pixels of a width x height
    frame): `before` and `after` are the model's resized S x S uint8 RGB frames (the after frame
    registered when the model registers pairs), as the model saw them. The mean absolute change
    (0..255, averaged over the colour channels) of each block x block pixel block, then the mean of
    the largest blocks the roi touches that together cover `share` of the frame (all of them when
    it touches fewer). None without a roi or when it lies outside the frame."""
    if roi is None:
        return None
    if before.shape != after.shape or before.ndim != 3:
        raise ValueError(f"roi_change needs two H x W x 3 frames of one size, got {before.shape} and {after.shape}")
    s = before.shape[0]
    grid = max(1, s // block)
    x0, x1, y0, y1 = roi_blocks(roi, width, height, grid)
    if x0 >= x1 or y0 >= y1:
        return None
    d = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean(-1)
    cells = d[:grid * block, :grid * block].reshape(grid, block, grid, block).mean((1, 3))
    inside = np.sort(cells[y0:y1, x0:x1].ravel())
    top = max(1, round(share * grid * grid))
    return float(inside[-top:].mean())
