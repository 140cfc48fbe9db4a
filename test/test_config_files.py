"""The shipped configuration files agree with the code that reads them."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_perception_yaml_lists_every_parameter_with_its_default():
    from cde_ros.ros.perception_node import PARAMS

    params = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMS)
    for name, p in PARAMS.items():
        assert params[name] == p.default, name
    text = (ROOT / "config" / "perception.yaml").read_text()
    assert text.count("    # ") >= len(PARAMS)  # each parameter is commented


def test_perception_yaml_loads_into_the_node():
    import rclpy
    from rclpy.parameter import Parameter

    from cde_ros.ros.perception_node import PerceptionNode

    params = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())["/**"]["ros__parameters"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = PerceptionNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        assert node._validate() == []
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_launch_file_uses_the_ros2_launch_api_and_declares_its_arguments():
    tree = ast.parse((ROOT / "launch" / "perception.launch.py").read_text())
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"launch", "launch.actions", "launch_ros.actions"} <= imports
    declared = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "DeclareLaunchArgument"}
    assert {"namespace", "params_file", "image_topic", "model_dir", "device", "use_sim_time"} <= declared
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_setup_installs_launch_config_models_and_the_index_marker():
    text = (ROOT / "setup.py").read_text()
    for needle in ("share/ament_index/resource_index/packages", "launch/*.launch.py", "config/*.yaml",
                   "models/default/*", "perception_node = cde_ros.ros.perception_node:main", "cde-ros = cde_ros.cli:main"):
        assert needle in text
    assert (ROOT / "resource" / "cde_ros").is_file()
    pkg = (ROOT / "package.xml").read_text()
    assert 'format="3"' in pkg and "<build_type>ament_python</build_type>" in pkg
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs"):
        assert f"<exec_depend>{dep}</exec_depend>" in pkg


def test_benchmark_patch_pool_choices_are_the_models():
    from cde_ros.cli import build_parser
    from cde_ros.model.network import PATCH_POOLS

    args = build_parser().parse_args(["benchmark", "--patch-pool", "scored"])
    assert args.patch_pool == "scored"
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices["benchmark"]._actions
               if a.dest == "patch_pool")
    assert tuple(sub.choices) == PATCH_POOLS
