"""rclpy messages <-> the ROS-free core (stamps, frames, images, result JSON, delta image)."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ..core import images, stamps
from ..data.snapshot import Frame

try:  # a real ROS 2 install has cv_bridge; the PyPI wheels do not
    from cv_bridge import CvBridge  # type: ignore

    _BRIDGE: Any = CvBridge()
except Exception:  # noqa: BLE001  (ImportError, or a cv_bridge broken against this numpy)
    _BRIDGE = None

IMAGE_DECODER = "cv_bridge" if _BRIDGE is not None else "cde_ros.core.images"


def stamp_ns(t: Time) -> int:
    return stamps.to_ns(t.sec, t.nanosec)


def to_time(ns: int) -> Time:
    sec, nanosec = stamps.from_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


def frame_from_msg(msg: Image | CompressedImage) -> Frame:
    """Keep the message as received (no decode); the buffer is keyed by header.stamp."""
    return Frame(stamp_ns(msg.header.stamp), msg, msg.header.frame_id, len(msg.data))


def decode(msg: Image | CompressedImage) -> np.ndarray:
    """An image message -> HxWx3 uint8 RGB. Raises images.ImageError with the reason."""
    if _BRIDGE is not None and isinstance(msg, Image) and msg.encoding.lower() in images.SUPPORTED_ENCODINGS:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as exc:  # noqa: BLE001  cv_bridge raises its own error types
            raise images.ImageError(str(exc)) from None
    return images.message_to_rgb(msg)


def rgb_to_image_msg(rgb: np.ndarray, stamp: int, frame_id: str, encoding: str = "rgb8") -> Image:
    h, w, enc, step, data = images.rgb_to_raw(rgb, encoding)
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = h, w, enc, step, 0
    msg.data = data
    return msg


def delta_image_msg(delta: np.ndarray, topk: np.ndarray | None, stamp: int, frame_id: str) -> Image:
    """32FC1 image: row 0 the aggregated delta, rows 1..K the Top-K patch deltas."""
    rows = delta[None, :] if topk is None else np.concatenate([delta[None, :], topk], 0)
    rows = np.ascontiguousarray(rows, dtype="<f4")
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = rows.shape
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = rows.shape[1] * 4
    msg.data = rows.tobytes()
    return msg


def delta_from_image_msg(msg: Image) -> np.ndarray:
    if msg.encoding != "32FC1":
        raise ValueError(f"expected a 32FC1 delta image, got {msg.encoding}")
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)


def json_string(payload: dict[str, Any]) -> String:
    return String(data=json.dumps(payload))
