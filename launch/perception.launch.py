"""Launch the cde_ros perception node (a lifecycle node that configures and activates itself
unless `autostart:=false`, in which case a lifecycle manager drives it).

    ros2 launch cde_ros perception.launch.py image_topic:=/my_camera/color/image_raw device:=cuda
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    image_topic = LaunchConfiguration("image_topic")
    model_dir = LaunchConfiguration("model_dir")
    device = LaunchConfiguration("device")
    use_sim_time = LaunchConfiguration("use_sim_time")
    autostart = LaunchConfiguration("autostart")

    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("cde_ros"), "config", "perception.yaml"]),
            description="Parameter file (see config/perception.yaml for every parameter)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Camera topic, remapped onto the node's /camera/image_raw "
                                          "(and <image_topic>/compressed for the compressed transport)"),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="Model directory; empty: the shipped model in share/cde_ros/models"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cuda, cuda:N or cpu"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bags, simulators)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate on start-up"),
    ]

    node = LifecycleNode(
        package="cde_ros",
        executable="perception_node",
        name="cde_perception",
        namespace=namespace,
        output="screen",
        parameters=[
            params_file,
            {
                "model_dir": model_dir,
                "device": device,
                "use_sim_time": ParameterValue(use_sim_time, value_type=bool),
                "autostart": ParameterValue(autostart, value_type=bool),
            },
        ],
        remappings=[
            ("/camera/image_raw", image_topic),
            ("/camera/image_raw/compressed", [image_topic, "/compressed"]),
        ],
    )
    return LaunchDescription([*arguments, node])
