"""rclpy messages <-> the ROS-free core (stamps, frames, images, result JSON, delta image)."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SerializedImage:
    """An image message as it came off the wire (CDR bytes, a raw subscription): only its header
    is read on arrival; it is deserialized when an event picks it."""

    data: bytes
    msg_type: type

    def deserialize(self) -> Image | CompressedImage:
        from rclpy.serialization import deserialize_message

        return deserialize_message(self.data, self.msg_type)


def header_of_cdr(data: bytes) -> tuple[int, str]:
    """(header.stamp in ns, header.frame_id) of a serialized message whose first field is a
    std_msgs/Header (Image, CompressedImage), read from the CDR bytes without deserializing.
    Raises ValueError when the bytes cannot hold such a header."""
    if len(data) < 16 or data[0] != 0:
        raise ValueError(f"not a CDR-serialized message ({len(data)} bytes)")
    order = "<" if data[1] & 1 else ">"  # encapsulation: 0x0001 little endian, 0x0000 big endian
    sec, nanosec, n = struct.unpack_from(order + "iII", data, 4)
    if nanosec >= stamps.NS_PER_S or n > 4096 or 16 + n > len(data):
        raise ValueError("the message does not start with a valid std_msgs/Header")
    frame_id = bytes(data[16:16 + n]).rstrip(b"\x00").decode("utf-8", "replace")
    return stamps.to_ns(sec, nanosec), frame_id


def frame_from_serialized(data: bytes, msg_type: type) -> Frame:
    """A frame from a raw subscription: stamp and frame id read from the bytes, nothing decoded."""
    stamp, frame_id = header_of_cdr(data)
    return Frame(stamp, SerializedImage(data, msg_type), frame_id, len(data))


def decode(msg: Image | CompressedImage | SerializedImage) -> np.ndarray:
    """An image message -> HxWx3 uint8 RGB. Raises images.ImageError with the reason."""
    if isinstance(msg, SerializedImage):
        try:
            msg = msg.deserialize()
        except Exception as exc:  # noqa: BLE001  damaged bytes on the wire
            raise images.ImageError(f"the image message could not be deserialized: {exc}") from None
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


def float_image_msg(values: np.ndarray, stamp: int, frame_id: str) -> Image:
    """A 2D float array as a 32FC1 image (little endian)."""
    values = np.ascontiguousarray(values, dtype="<f4")
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = values.shape
    msg.encoding, msg.is_bigendian, msg.step = "32FC1", 0, values.shape[1] * 4
    msg.data = values.tobytes()
    return msg


def heat_map_msg(heat: np.ndarray, stamp: int, frame_id: str) -> Image:
    """32FC1 image of a float heat map (where the change happened)."""
    return float_image_msg(heat, stamp, frame_id)


def delta_image_msg(delta: np.ndarray, topk: np.ndarray | None, stamp: int, frame_id: str) -> Image:
    """32FC1 image: row 0 the aggregated delta, rows 1..K the Top-K patch deltas."""
    rows = delta[None, :] if topk is None else np.concatenate([delta[None, :], topk], 0)
    return float_image_msg(rows, stamp, frame_id)


def delta_from_image_msg(msg: Image) -> np.ndarray:
    if msg.encoding != "32FC1":
        raise ValueError(f"expected a 32FC1 delta image, got {msg.encoding}")
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)


def json_string(payload: dict[str, Any]) -> String:
    return String(data=json.dumps(payload))
