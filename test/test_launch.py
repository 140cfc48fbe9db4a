"""launch_testing test of launch/perception.launch.py. Runs where launch_testing is importable (a
ROS 2 install with this package built by colcon); skipped elsewhere, e.g. with the PyPI wheels."""
import json
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip("launch_testing")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "perception.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"namespace": "lt", "image_topic": "/lt_camera/image", "device": "cpu"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestPerceptionLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("cde_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_remapped_camera_and_events_produce_an_action(self):
        """image_topic:= is absolute (it wins over the params file); the node's own topics are
        relative and moved into the launch namespace."""
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        results = []
        self.node.create_subscription(String, "/lt/cde/action", lambda m: results.append(json.loads(m.data)), reliable)
        pub_img = self.node.create_publisher(Image, "/lt_camera/image", 10)
        pub_ev = self.node.create_publisher(String, "/lt/cde/event", reliable)
        deadline = time.monotonic() + 30
        while pub_img.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertGreater(pub_img.get_subscription_count(), 0, "the launched node never subscribed")
        for i in range(40):
            msg = Image(height=48, width=64, encoding="rgb8", step=192)
            msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + i // 10, (i % 10) * 100_000_000
            msg.header.frame_id = "cam"
            msg.data = np.full(48 * 64 * 3, i * 5, np.uint8).tobytes()
            pub_img.publish(msg)
            if i == 12:
                pub_ev.publish(String(data=json.dumps({"phase": "start", "event_id": "lt-1", "action": "open",
                                                       "stamp": {"sec": 101, "nanosec": 0}})))
            if i == 20:
                pub_ev.publish(String(data=json.dumps({"phase": "end", "event_id": "lt-1",
                                                       "stamp": {"sec": 102, "nanosec": 0}})))
            rclpy.spin_once(self.node, timeout_sec=0.05)
        deadline = time.monotonic() + 30
        while not results and time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(results, "no /cde/action from the launched node")
        self.assertEqual(results[0]["event_id"], "lt-1")
        self.assertEqual(results[0]["status"], "ok")
        self.assertEqual(results[0]["expected_action"], "open")


@launch_testing.post_shutdown_test()
class TestPerceptionShutdown(unittest.TestCase):
    def test_the_node_exits_cleanly(self, proc_info):
        """Launch's SIGINT at the end (a repeat included) ends the node with status 0."""
        launch_testing.asserts.assertExitCodes(proc_info)
