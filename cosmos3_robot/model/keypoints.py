"""A spatial-softmax keypoint stem: the current camera frame as a vector on the action side.

The Generator's action tokens see the camera only through attention to the context video
tokens, and rotary positions put *where* a patch is into the attention weights, never into
what is read from it: an action token can find the target's patch but learns its image
coordinates only indirectly. Visuomotor policies (Levine et al. 2016, robomimic, Diffusion
Policy) read positions through a spatial softmax: each feature channel becomes the expected
``(x, y)`` of its activation, a coordinate a linear layer can turn into a motion. This stem
does that on the last context frame and adds the result to every action token, the same
way the proprioception enters (the output layer starts at zero, so a model starts as if it
had no such input and learns how much to read).
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """``(B, K, h, w)`` feature maps -> ``(B, K, 2)`` expected ``(x, y)`` in [-1, 1] under
    each channel's softmax over the ``h * w`` positions (learned temperature).

    Written out (a few tensor ops) because neither torch nor torchvision ships one."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, K, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        p = torch.softmax(x.reshape(B, K, h * w) / self.log_temperature.exp(), -1)
        return torch.stack([p @ grid_x.reshape(-1), p @ grid_y.reshape(-1)], -1)


class KeypointStem(nn.Module):
    """Images ``(B, 3, H, W)`` in [-1, 1] -> features ``(B, 3K)`` (a 4x-downsampling conv
    stack, ``K = n_keypoints`` spatial-softmax keypoints' ``(x, y)``, then each channel's mean
    activation) and their zero-initialised projection to the model width ``(B, dim)``."""

    def __init__(self, n_keypoints: int, dim: int, width: int = 32):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, n_keypoints, 1),
        )
        self.softmax = SpatialSoftmax()
        self.out = nn.Linear(3 * n_keypoints, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.convs(images)
        feats = torch.cat([self.softmax(maps).flatten(1), maps.mean((2, 3))], 1)
        return feats, self.out(feats)
