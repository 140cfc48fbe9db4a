"""Launch the cde_ros perception node (a lifecycle node that configures and activates itself
unless `autostart:=false`, in which case a lifecycle manager drives it).

    ros2 launch cde_ros perception.launch.py image_topic:=/my_camera/color/image_raw device:=cuda
    ros2 launch cde_ros perception.launch.py namespace:=robot1   # every topic but /diagnostics moves

Topic names are relative (`camera/image_raw`, `cde/event`, `cde/action`, `cde/delta`), so a
namespace moves them. `image_topic`, `model_dir` and `device`, when given, are parameters that
win over the params file (they come after it); left empty, the file's values stand.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _node(context, *args, **kwargs):
    overrides = {
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
        "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
    }
    for name in ("image_topic", "model_dir", "device"):  # given on the command line: over the file
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [LifecycleNode(
        package="cde_ros",
        executable="perception_node",
        name="cde_perception",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
    )]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("cde_ros"), "config", "perception.yaml"]),
            description="Parameter file (see config/perception.yaml for every parameter)"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="Camera topic (sensor_msgs/Image; <image_topic>/compressed for the compressed "
                                          "transport); empty: the params file's"),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="Model directory; empty: the params file's (there: the shipped model)"),
        DeclareLaunchArgument("device", default_value="", description="auto, cuda, cuda:N or cpu; empty: the file's"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bags, simulators)"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure and activate on start-up"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
