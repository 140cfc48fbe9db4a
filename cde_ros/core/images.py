"""Camera images to numpy RGB, shared by the node (rclpy messages) and the bag reader (rosbags
messages). Works on any object with the fields of `sensor_msgs/Image` (height, width, encoding,
step, is_bigendian, data) or `sensor_msgs/CompressedImage` (format, data): no cv_bridge needed.

Every failure raises `ImageError` whose message says what is wrong with the image.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np


class ImageError(ValueError):
    """An image that cannot be turned into RGB (bad size, unknown encoding, corrupt data)."""


# encoding -> (channels, numpy dtype, conversion to RGB or None for identity)
_ENCODINGS: dict[str, tuple[int, str, int | None]] = {
    "rgb8": (3, "u1", None),
    "bgr8": (3, "u1", cv2.COLOR_BGR2RGB),
    "rgba8": (4, "u1", cv2.COLOR_RGBA2RGB),
    "bgra8": (4, "u1", cv2.COLOR_BGRA2RGB),
    "mono8": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8uc1": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8uc3": (3, "u1", cv2.COLOR_BGR2RGB),  # OpenCV's convention for untyped 3-channel images
    "rgb16": (3, "u2", None),
    "bgr16": (3, "u2", cv2.COLOR_BGR2RGB),
}

SUPPORTED_ENCODINGS = tuple(sorted(_ENCODINGS))


def _as_bytes(data: Any) -> memoryview:
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


# single-channel 16/32-bit images are depth (or IR) streams, not what the models were trained on
DEPTH_ENCODINGS = ("16uc1", "mono16", "32fc1", "16sc1", "32sc1", "64fc1")


def raw_to_rgb(height: int, width: int, encoding: str, step: int, data: Any, is_bigendian: int = 0) -> np.ndarray:
    """Decode the fields of a `sensor_msgs/Image` to an HxWx3 uint8 RGB array (a copy). 16-bit
    colour (`rgb16`, `bgr16`) keeps its 8 most significant bits; depth and other single-channel
    16/32-bit images are refused."""
    enc = (encoding or "").lower()
    if enc in DEPTH_ENCODINGS:
        raise ImageError(f"{encoding} images are depth (or 16/32-bit single-channel) images, which this model does "
                         "not take: give it the camera's colour stream")
    if enc not in _ENCODINGS:
        raise ImageError(f"unknown image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, kind, conversion = _ENCODINGS[enc]
    itemsize = 1 if kind == "u1" else 2
    if height <= 0 or width <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    buf = _as_bytes(data)
    need = step * (height - 1) + row_bytes
    if len(buf) < need:
        raise ImageError(f"image data holds {len(buf)} bytes, {width}x{height} {encoding} with step {step} needs {need}")
    rows = np.frombuffer(buf, dtype=np.uint8, count=step * height if len(buf) >= step * height else need)
    if rows.size < step * height:  # last row may be unpadded
        rows = np.concatenate([rows, np.zeros(step * height - rows.size, np.uint8)])
    pixels = rows.reshape(height, step)[:, :row_bytes]
    dtype = np.dtype(("<" if not is_bigendian else ">") + kind) if itemsize == 2 else np.dtype(np.uint8)
    img = np.ascontiguousarray(pixels).view(dtype).reshape(height, width, channels)
    if itemsize == 2:
        img = (img.astype(np.uint16) >> 8).astype(np.uint8)
    if conversion is None:
        return np.array(img, copy=True)
    return cv2.cvtColor(img if channels > 1 else img[:, :, 0], conversion)


def compressed_to_rgb(fmt: str, data: Any) -> np.ndarray:
    """Decode a JPEG/PNG `sensor_msgs/CompressedImage` payload to HxWx3 uint8 RGB."""
    buf = np.frombuffer(_as_bytes(data), dtype=np.uint8)
    if buf.size == 0:
        raise ImageError(f"compressed image ({fmt or 'no format'}) has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"compressed image ({fmt or 'no format'}, {buf.size} bytes) could not be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any) -> np.ndarray:
    """Either image message type (rclpy or rosbags) -> HxWx3 uint8 RGB."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg.format, msg.data)
    return raw_to_rgb(int(msg.height), int(msg.width), msg.encoding, int(msg.step), msg.data, int(msg.is_bigendian))


def rgb_to_raw(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[int, int, str, int, bytes]:
    """HxWx3 uint8 RGB -> (height, width, encoding, step, data) for a `sensor_msgs/Image`."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                   "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}
    if encoding not in conversions:
        raise ImageError(f"cannot encode to {encoding!r} (choose from {', '.join(conversions)})")
    out = rgb if conversions[encoding] is None else cv2.cvtColor(rgb, conversions[encoding])
    out = np.ascontiguousarray(out)
    h, w = out.shape[:2]
    return h, w, encoding, out.strides[0], out.tobytes()


def rgb_to_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()
