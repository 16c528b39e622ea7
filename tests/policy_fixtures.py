"""A fresh tiny policy for the runtime, server and node tests (no training, no download)."""

from __future__ import annotations

import numpy as np
import torch


def sim_state(x: float = 0.5) -> np.ndarray:
    """A ``sim_arm`` state: tcp at (x, 0, 0.6) m, identity orientation, gripper open."""
    return np.array([x, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)


def tiny_sim_policy(views: tuple[str, ...] = ()):
    """A tiny model with the statistics of plausible ``sim_arm`` motions, chunk 8 at 10 Hz;
    with ``views``, an observation stem on those cameras and an action prior (its head
    perturbed so the cameras move the chunk)."""
    from cosmos3_robot import embodiments
    from cosmos3_robot.model import Cosmos3, preset
    from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

    torch.manual_seed(0)
    emb = embodiments.get("sim_arm")
    rng = np.random.default_rng(0)
    T = 200
    pos = np.cumsum(rng.normal(0, 0.01, (T, 3)), 0) + [0.5, 0, 0.6]
    state = np.c_[pos, np.tile([1.0, 0, 0, 0], (T, 1)), (rng.random(T) > 0.5).astype(float)]
    norm = emb.normalizer(emb.encode_raw({"state": state}))
    window = {"embodiment": "sim_arm", "camera": "front", "fps": 10, "n_context": 1, "chunk": 8, "image_size": 32}
    if not views:
        return Cosmos3Policy(Cosmos3(preset("tiny")), "sim_arm", norm, window)
    model = Cosmos3(preset("tiny", visual_keypoints=4, n_views=len(views), action_prior=True))
    with torch.no_grad():
        model.prior_head[-1].weight.normal_(std=0.3)
    return Cosmos3Policy(model, "sim_arm", norm, {**window, "views": list(views)}, InferenceConfig(steps=0, temperature=0.0))
