"""Shared by the benchmark scripts: LeRobot's ACT and Diffusion Policy as peers, built one
way for all (random weights, no pretrained backbone: nothing is downloaded), and the
table + peak-memory footer every script prints.
"""

from __future__ import annotations

import resource
import sys

import torch


def make_peers(image_size: int, chunk: int, device: str, dim: int = 8, diffusion_steps: int = 10) -> dict:
    """``{"LeRobot ACT": policy, "LeRobot Diffusion": policy}``, or ``{}`` without lerobot:
    one front camera of ``image_size`` px, ``dim``-D state and action, ``chunk``-step chunks."""
    try:
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    except Exception as e:  # not installed, or installed against other library versions
        print(f"LeRobot peers unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        return {}
    feats_in = {"observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, image_size, image_size)),
                "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(dim,))}
    feats_out = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(dim,))}
    torch.manual_seed(0)
    act = ACTPolicy(ACTConfig(input_features=feats_in, output_features=feats_out, chunk_size=chunk,
                              n_action_steps=chunk, pretrained_backbone_weights=None, device=device))
    diff = DiffusionPolicy(DiffusionConfig(input_features=feats_in, output_features=feats_out, horizon=chunk,
                                           n_action_steps=8, n_obs_steps=2, crop_shape=None,
                                           pretrained_backbone_weights=None, num_inference_steps=diffusion_steps,
                                           device=device))
    return {"LeRobot ACT": act.to(device), "LeRobot Diffusion": diff.to(device)}


def print_results(table, device: str, have_peers: bool, width: int = 120) -> None:
    """Print a rich ``table``, then peak RSS (and peak CUDA memory on a GPU)."""
    from rich.console import Console

    console = Console(width=max(Console().width, width))
    console.print(table)
    mem = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    if device.startswith("cuda"):
        mem += f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    console.print(mem)
    if not have_peers:
        console.print("(lerobot not installed: no ACT / Diffusion Policy comparison)")
