"""Policies the closed-loop evaluator can run on the built-in tasks.

Every policy answers ``act(obs, instruction) -> (n, 8)``: a chunk of env actions (see
:mod:`.tasks` for the layout), of which the evaluator executes up to ``replan`` before
asking again. ``make_policy`` builds one from a spec string: ``scripted`` (the task's
expert), ``random`` (uniform targets inside the workspace), ``lerobot:<folder>`` (a policy
saved by LeRobot), or a checkpoint / run folder.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cosmos3_robot.sim.experts import expert_for
from cosmos3_robot.sim.tasks import DOWN, WORKSPACE_HIGH, WORKSPACE_LOW, TableTopEnv


class SimPolicy(Protocol):
    """``cameras`` (optional attribute): the cameras the policy reads; ``()`` for none, so the
    evaluator renders nothing for it."""

    def reset(self, env: TableTopEnv, seed: int) -> None: ...

    def act(self, obs: dict[str, np.ndarray], instruction: str) -> np.ndarray: ...


class ScriptedPolicy:
    """The task's scripted expert (privileged state), one action per call."""

    cameras: tuple[str, ...] = ()  # reads the simulator's state, no image

    def __init__(self, noise: float = 0.0):
        self.noise = noise
        self.expert = None

    def reset(self, env, seed):
        self.expert = expert_for(env.unwrapped.task, noise=self.noise, seed=seed)
        self.expert.reset(env)

    def act(self, obs, instruction):
        return self.expert.act(obs)[None]


class RandomPolicy:
    """Random actions: for the 8D target layout, tcp targets uniform in the built-in
    workspace (built-in tasks) or within 10 cm of the current tcp (robosuite), with
    random gripper closure; otherwise uniform in the env's ``action_space``."""

    cameras: tuple[str, ...] = ()  # reads no image

    def __init__(self, chunk: int = 8):
        self.chunk = chunk
        self.rng = np.random.default_rng(0)
        self.env = None

    def reset(self, env, seed):
        self.rng = np.random.default_rng(seed)
        self.env = env.unwrapped

    def act(self, obs, instruction):
        n = self.chunk
        space = getattr(self.env, "action_space", None)
        if space is not None and space.shape != (8,):
            return self.rng.uniform(space.low, space.high, (n, *space.shape)).astype(np.float32)
        if isinstance(self.env, TableTopEnv):
            pos = self.rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH, (n, 3))
        else:
            pos = np.asarray(obs["state"][:3]) + self.rng.uniform(-0.1, 0.1, (n, 3))
        grip = self.rng.uniform(0, 1, (n, 1))
        return np.concatenate([pos, np.tile(DOWN, (n, 1)), grip], 1).astype(np.float32)


class CheckpointPolicy:
    """A trained model through :class:`cosmos3_robot.runtime.Cosmos3Policy`.

    The cameras are the ones the model was trained on (the run's window settings: the
    video camera and every camera of ``views``); the
    request seed is derived from the episode seed and the call index, so a rerun with the
    same seeds reproduces the same actions.
    """

    def __init__(self, path: str, steps: int = 4, guidance: float = 1.0, device: str = "cpu",
                 sampler: str = "euler", temperature: float = 1.0):
        from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

        self.policy = Cosmos3Policy.from_checkpoint(path, InferenceConfig(
            steps=steps, guidance=guidance, device=device, sampler=sampler, temperature=temperature))
        self.camera = self.policy.window.get("camera", "front")
        # embodiments whose codec integrates from a state read it from the env's ``state``;
        # command-only layouts (LIBERO's deltas) need none. The output key is the one raw key.
        self.needs_state = bool(self.policy.embodiment.codec.state_blocks)
        self.seed, self.calls = 0, 0

    def reset(self, env, seed):
        for cam in self.policy.cameras:
            if cam not in env.unwrapped.cameras:
                raise ValueError(f"policy camera {cam!r} is not rendered by the env ({env.unwrapped.cameras})")
        self.seed, self.calls = seed, 0

    def act(self, obs, instruction):
        out = self.policy.infer(obs[self.camera], {"state": obs["state"]} if self.needs_state else {}, instruction,
                                seed=self.seed * 1009 + self.calls, views={c: obs[c] for c in self.policy.views})
        self.calls += 1
        if len(out) != 1:
            raise ValueError(f"policy output has keys {sorted(out)}; an env takes one action array")
        return next(iter(out.values())).astype(np.float32)


class LeRobotPolicy:
    """A LeRobot policy saved with ``save_pretrained`` (ACT, Diffusion Policy, the cosmos3
    plugin, ...) with its saved processors, one action per call through its own
    ``select_action`` (which keeps its action queue and observation history).

    Observations go in as LeRobot's env processing makes them: ``observation.images.<camera>``
    (3, H, W) float in [0, 1] for each camera the policy was trained on, resized to the
    ``(3, H, W)`` its config declares (an env rendering at LIBERO's 256 px for a policy
    trained on 64 px frames; area averaging, as our processor resizes), ``observation.state``
    and the instruction as ``task``.
    """

    def __init__(self, path: str, device: str = "cpu"):
        import torch
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        from lerobot.utils.import_utils import register_third_party_plugins

        register_third_party_plugins()  # a cosmos3 plugin checkpoint needs its policy type
        cfg = PreTrainedConfig.from_pretrained(path)
        cfg.device = device
        self.policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg).eval()
        self.pre, self.post = make_pre_post_processors(cfg, pretrained_path=path,
                                                       preprocessor_overrides={"device_processor": {"device": device}})
        # camera -> (H, W) it was trained on
        self.sizes = {k.rsplit(".", 1)[-1]: tuple(f.shape[-2:]) for k, f in cfg.image_features.items()}
        self.cameras = list(self.sizes)
        self.torch = torch

    def reset(self, env, seed):
        missing = [c for c in self.cameras if c not in env.unwrapped.cameras]
        if missing:
            raise ValueError(f"policy cameras {missing} are not rendered by the env ({env.unwrapped.cameras})")
        self.policy.reset()
        self.torch.manual_seed(seed)  # Diffusion Policy samples with the global generator

    def act(self, obs, instruction):
        from cosmos3_robot.processor import resize_pixels

        torch = self.torch
        batch: dict[str, Any] = {}
        for c in self.cameras:
            img = torch.from_numpy(np.ascontiguousarray(obs[c])).permute(2, 0, 1).float() / 255
            batch[f"observation.images.{c}"] = resize_pixels(img[None], self.sizes[c])[0]
        batch["observation.state"] = torch.from_numpy(np.asarray(obs["state"], np.float32))
        batch["task"] = instruction
        with torch.inference_mode():
            action = self.post(self.policy.select_action(self.pre(batch)))
        return action.cpu().numpy().reshape(1, -1).astype(np.float32)


def make_policy(spec: str, **kwargs: Any) -> SimPolicy:
    """``"scripted"``, ``"random"``, ``"lerobot:<pretrained folder>"`` or a checkpoint/run folder path."""
    if spec == "scripted":
        return ScriptedPolicy(noise=kwargs.get("noise", 0.0))
    if spec == "random":
        return RandomPolicy()
    if spec.startswith("lerobot:"):
        return LeRobotPolicy(spec[len("lerobot:"):], device=kwargs.get("device", "cpu"))
    return CheckpointPolicy(spec, steps=kwargs.get("steps", 4), guidance=kwargs.get("guidance", 1.0),
                            device=kwargs.get("device", "cpu"), sampler=kwargs.get("sampler", "euler"),
                            temperature=kwargs.get("temperature", 1.0))
