"""ament_python package `cosmos3_robot` (Python module `cosmos3_robot_ros`).

The node logic lives in the pip-installed library (`cosmos3_robot.runtime.node_core`);
install it into the same Python first: `pip install 'cosmos3-robot[serve]'` (or `-e` the
repository), then `colcon build --packages-select cosmos3_robot`.
"""

from glob import glob

from setuptools import setup

PACKAGE = "cosmos3_robot"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=["cosmos3_robot_ros"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="cosmos3-robot maintainers",
    maintainer_email="maintainers@cosmos3-robot.dev",
    description="cosmos3-robot policy node",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": ["policy_node = cosmos3_robot_ros.policy_node:main"]},
)
