"""ros2 launch cosmos3_robot policy.launch.py checkpoint:=/path/to/run [camera_topics:="['/cam']" ...]"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = {
    "checkpoint": ("", "run or checkpoint folder of a trained model"),
    "embodiment": ("", "expected embodiment (empty: the checkpoint's)"),
    "camera_topics": ("['/camera/image_raw']", "camera topics, the model's camera first"),
    "state_topic": ("/joint_states", "robot state topic"),
    "state_type": ("joint_state", "joint_state or pose"),
    "command_topic": ("/cosmos3/command", "where commands are published"),
    "output_type": ("joint_trajectory", "joint_trajectory or pose"),
    "control_rate": ("10.0", "command rate in Hz"),
    "device": ("cpu", "torch device, e.g. cuda"),
    "steps": ("4", "denoising steps per chunk"),
    "backend": ("torch", "torch, or onnxruntime on a CPU"),
    "int8": ("false", "int8 weights with onnxruntime"),
}


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("cosmos3_robot"), "config", "policy.yaml")
    args = [DeclareLaunchArgument(name, default_value=default, description=doc)
            for name, (default, doc) in ARGUMENTS.items()]
    args.append(DeclareLaunchArgument("params_file", default_value=default_params,
                                      description="parameter YAML (config/policy.yaml)"))
    overrides = {
        "checkpoint": LaunchConfiguration("checkpoint"),
        "embodiment": LaunchConfiguration("embodiment"),
        "camera_topics": ParameterValue(LaunchConfiguration("camera_topics"), value_type=list),
        "state_topic": LaunchConfiguration("state_topic"),
        "state_type": LaunchConfiguration("state_type"),
        "command_topic": LaunchConfiguration("command_topic"),
        "output_type": LaunchConfiguration("output_type"),
        "control_rate": ParameterValue(LaunchConfiguration("control_rate"), value_type=float),
        "device": LaunchConfiguration("device"),
        "steps": ParameterValue(LaunchConfiguration("steps"), value_type=int),
        "backend": LaunchConfiguration("backend"),
        "int8": ParameterValue(LaunchConfiguration("int8"), value_type=bool),
    }
    node = Node(package="cosmos3_robot", executable="policy_node", name="cosmos3_policy", output="screen",
                parameters=[LaunchConfiguration("params_file"), overrides])
    return LaunchDescription([*args, node])
