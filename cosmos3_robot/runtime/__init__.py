"""Running trained models: the policy object shared by evaluation, the server and the ROS 2 node."""

from cosmos3_robot.runtime.policy import Cosmos3Policy, InferenceConfig, resolve_checkpoint

__all__ = ["Cosmos3Policy", "InferenceConfig", "resolve_checkpoint"]
