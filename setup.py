"""ament_python package `cde_ros`; also installable with pip on a machine without ROS."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "cde_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models/default", glob("models/default/*")),
    ],
    python_requires=">=3.10",
    # Python dependencies live in requirements.txt (pip) and package.xml (rosdep);
    # they are not repeated here so that colcon never tries to pip-install torch.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="cde_ros maintainers",
    maintainer_email="maintainers@cde-ros.invalid",
    description="Causal delta embeddings: recognise what a manipulation actually did.",
    license="Apache-2.0",
    extras_require={"test": ["pytest>=8.0,<9"]},
    entry_points={
        "console_scripts": [
            "perception_node = cde_ros.ros.perception_node:main",
            "example_planner = cde_ros.ros.planner:main",
            "cde-ros = cde_ros.cli:main",
        ],
    },
)
