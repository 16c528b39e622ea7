"""``cosmos3_sim``: cosmos3-robot's built-in MuJoCo tasks as a LeRobot env plugin.

LeRobot imports this distribution at start-up (the ``lerobot_env_`` prefix), so
``lerobot-eval --env.type=cosmos3_sim --env.task=reach --policy.path=...`` runs any LeRobot
policy (ACT, Diffusion, cosmos3, ...) on our tasks, and ``lerobot-train --env.type=cosmos3_sim``
evaluates on them during training; the env itself lives in :mod:`cosmos3_robot.sim.lerobot_env`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE


@EnvConfig.register_subclass("cosmos3_sim")
@dataclass
class Cosmos3SimEnv(EnvConfig):
    """A built-in task (``reach``, ``push``, ``pick_place``, ``stack``) with the front camera
    at ``image_size`` px, the 8D state (tcp position, quaternion wxyz, gripper) and 8D
    absolute targets as actions, at 10 Hz."""

    task: str | None = "reach"
    fps: int = 10
    image_size: int = 64
    episode_length: int | None = None
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=lambda: {
        ACTION: ACTION, "agent_pos": OBS_STATE, "pixels/front": f"{OBS_IMAGES}.front"})

    def __post_init__(self) -> None:
        self.features = {
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(8,)),
            "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(8,)),
            "pixels/front": PolicyFeature(type=FeatureType.VISUAL, shape=(self.image_size, self.image_size, 3)),
        }

    @property
    def package_name(self) -> str:
        return "cosmos3_robot.sim.lerobot_env"

    @property
    def gym_id(self) -> str:
        return f"cosmos3_lerobot/{self.task}"

    @property
    def gym_kwargs(self) -> dict:
        return {"image_size": self.image_size, "max_episode_steps": self.episode_length}
