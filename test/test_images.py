import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore

from cde_ros.core import images
from cde_ros.core.images import ImageError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(encoding):
    h, w, enc, step, data = images.rgb_to_raw(RGB, encoding)
    assert (h, w, enc) == (7, 5, encoding)
    np.testing.assert_array_equal(images.raw_to_rgb(h, w, enc, step, data), RGB)


def test_mono8_becomes_grey_rgb():
    h, w, enc, step, data = images.rgb_to_raw(RGB, "mono8")
    out = images.raw_to_rgb(h, w, enc, step, data)
    assert out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_padded_rows_are_respected():
    step = 5 * 3 + 9
    buf = np.zeros((7, step), np.uint8)
    buf[:, :15] = RGB.reshape(7, 15)
    np.testing.assert_array_equal(images.raw_to_rgb(7, 5, "rgb8", step, buf.tobytes()), RGB)


def test_agrees_with_rosbags_image_on_bag_messages():
    ts = get_typestore(Stores.ROS2_KILTED)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    for enc in ("rgb8", "bgr8", "mono8", "bgra8"):
        h, w, e, step, data = images.rgb_to_raw(RGB, enc)
        msg = Image(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="c"), height=h, width=w, encoding=e,
                    is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
        ours = images.message_to_rgb(msg)
        theirs = message_to_cvimage(msg, "rgb8")
        np.testing.assert_array_equal(ours, theirs)


def test_jpeg_decodes_close_to_original():
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    out = images.compressed_to_rgb("jpeg", images.rgb_to_jpeg(smooth, 95))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("args, words", [
    ((4, 4, "yuv422_yuy2", 8, bytes(32)), "unknown image encoding"),
    ((4, 4, "rgb8", 6, bytes(48)), "step 6 is smaller"),
    ((4, 4, "rgb8", 12, bytes(20)), "needs 48"),
    ((0, 4, "rgb8", 12, b""), "no pixels"),
])
def test_bad_raw_images_say_why(args, words):
    with pytest.raises(ImageError, match=words):
        images.raw_to_rgb(*args)


def test_corrupt_jpeg_says_why():
    good = images.rgb_to_jpeg(RGB)
    with pytest.raises(ImageError, match="could not be decoded"):
        images.compressed_to_rgb("jpeg", good[: len(good) // 3] + b"garbage")
    with pytest.raises(ImageError, match="no data"):
        images.compressed_to_rgb("jpeg", b"")


@pytest.mark.parametrize("encoding,channels,dtype", [("16UC1", 1, np.uint16), ("mono16", 1, np.uint16),
                                                     ("32FC1", 1, np.float32)])
def test_depth_images_are_refused_not_shifted_into_grey(encoding, channels, dtype):
    depth = np.full((4, 6), 1200, dtype)
    with pytest.raises(images.ImageError, match="depth"):
        images.raw_to_rgb(4, 6, encoding, 6 * depth.itemsize, depth.tobytes())
