"""The demo as separate processes: a recording player, the perception node and the example
planner (cde_ros/ros/planner.py), as they would run beside a robot.

    cde-ros demo --events 12                       # makes (and caches) the simulated recording once
    ros2 launch cde_ros demo.launch.py bag:=$HOME/.cache/cde_ros/demo/<key>/bag

`bag` is any recording with the camera as CompressedImage (`record-sim --image compressed`) and
`/cde/event`; the planner logs each manipulation's verdict.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, TimerAction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description() -> LaunchDescription:
    bag = LaunchConfiguration("bag")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="Recording to play (camera as CompressedImage + /cde/event)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback speed"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cuda, cuda:N or cpu"),
        LifecycleNode(package="cde_ros", executable="perception_node", name="cde_perception", namespace="",
                      output="screen",
                      parameters=[{"device": LaunchConfiguration("device"), "image_transport": "compressed",
                                   "image_qos_reliability": "reliable", "image_qos_depth": 1000}]),
        Node(package="cde_ros", executable="example_planner", name="cde_example_planner", output="screen"),
        # the player starts once the node has had time to load its model and subscribe
        TimerAction(period=5.0, actions=[ExecuteProcess(
            cmd=["cde-ros", "play", bag, "--rate", LaunchConfiguration("rate"), "--topics",
                 "/camera/image_raw/compressed", "/cde/event", "--wait-for", "/camera/image_raw/compressed"],
            output="screen")]),
    ])
