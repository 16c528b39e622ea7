"""The observation stem: every camera's current frame and the instruction as a vector on the action side.

The Generator's action tokens see the camera only through attention to the context video
tokens, and rotary positions put *where* a patch is into the attention weights, never into
what is read from it: an action token can find the target's patch but learns its image
coordinates only indirectly. Visuomotor policies (Levine et al. 2016, robomimic, Diffusion
Policy) read positions through a spatial softmax: each feature channel becomes the expected
``(x, y)`` of its activation, a coordinate a linear layer can turn into a motion.

The built-in tasks name one of several objects by colour ("put the red cube on the blue
pad"), so *which* blob a keypoint follows depends on the instruction. The stem therefore
conditions each camera's conv stack on the instruction (FiLM, Perez et al. 2018, as RT-1
and BC-Z do): the channels that become keypoints are modulated by what the instruction
names. It reads its own small byte-level text encoder rather than the Reasoner's hidden
states, so the action prior trains without running the towers (``train.prior_steps``).

Measured on the built-in tasks (``docs/experiments/2026-12-01-visuomotor-prior.md``): with
the instruction only beside the keypoints (no FiLM) and one camera, the prior could not
tell which target was named; with FiLM on front and wrist cameras it reaches the named
target and pushes to the named zone (picking the named cube is not yet reliable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cosmos3_robot.model.tokenizers import ByteTokenizer


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


class TextFeatures(nn.Module):
    """Instructions -> ``(B, dim)``: UTF-8 bytes, two 1D convolutions (5 bytes wide) and a
    max over the valid positions (a colour word anywhere in the sentence sets its channels)."""

    def __init__(self, max_len: int, dim: int = 64, embed: int = 32):
        super().__init__()
        self.tokenizer = ByteTokenizer(max_len)
        self.embed = nn.Embedding(ByteTokenizer.vocab_size, embed)
        self.conv1 = nn.Conv1d(embed, dim, 5, padding=2)
        self.conv2 = nn.Conv1d(dim, dim, 5, padding=2)
        self.dim = dim

    def forward(self, text: list[str], device: torch.device) -> torch.Tensor:
        tokens, valid = self.tokenizer.encode(text, add_eos=False)
        tokens, valid = tokens.to(device), valid.to(device)
        x = self.embed(tokens).transpose(1, 2)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return x.masked_fill(~valid[:, None], -1e4).amax(-1)


class CameraStem(nn.Module):
    """``(B, 3, H, W)`` in [-1, 1] and a FiLM vector ``(B, t)`` -> ``(B, 2K)`` keypoints: a
    4x-downsampling conv stack whose third layer (and, with ``film_layers`` 2, its second)
    is scaled and shifted by the instruction.

    With the third layer alone, the instruction reached the camera mostly as the task's
    second goal (the pad's colour; the cube's was the weaker, 13/16 held-out instructions
    against 16/16) and pick_place picked the wrong cube as often as the right one; FiLM on
    the second layer too took pick_place 4/20 -> 13/20 and stack 13/20 -> 16/20 on the
    development seeds (docs/experiments/2026-12-01-pick-failures.md)."""

    def __init__(self, n_keypoints: int, text_dim: int, width: int = 32, film_layers: int = 1):
        super().__init__()
        if film_layers not in (1, 2):
            raise ValueError(f"film_layers: expected 1 (the third conv layer) or 2 (second and third), got {film_layers}")
        self.conv1 = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.norm1 = nn.GroupNorm(8, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(8, width)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.norm3 = nn.GroupNorm(8, width)
        self.film = nn.Linear(text_dim, 2 * width)
        self.film2 = nn.Linear(text_dim, 2 * width) if film_layers == 2 else None
        self.points = nn.Conv2d(width, n_keypoints, 1)
        self.softmax = SpatialSoftmax()

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(images)))
        x = self.norm2(self.conv2(x))
        if self.film2 is not None:
            s2, b2 = self.film2(text).chunk(2, -1)
            x = x * (1 + s2[..., None, None]) + b2[..., None, None]
        x = F.relu(x)
        scale, shift = self.film(text).chunk(2, -1)
        x = F.relu(self.norm3(self.conv3(x)) * (1 + scale[..., None, None]) + shift[..., None, None])
        return self.softmax(self.points(x)).flatten(1)


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ / Diffusion Policy augmentation: each image ``(B, 3, H, W)`` padded by ``pad``
    edge pixels and cropped back at a random offset (one per image)."""
    if pad <= 0:
        return images
    B, _, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (B,)).tolist()
    oy = torch.randint(0, 2 * pad + 1, (B,)).tolist()
    return torch.stack([padded[i, :, y: y + H, x: x + W] for i, (x, y) in enumerate(zip(ox, oy))])


class KeypointStem(nn.Module):
    """Every camera's current frame + the instruction -> observation features.

    Input ``views`` ``(B, N, 3, H, W)`` in [-1, 1] (``N = n_views``, one conv stack per camera
    slot) and one instruction per sample. Output ``(features, side)``: ``features``
    ``(B, text_dim + 2 K N)`` = the text vector then each camera's ``K`` keypoints ``(x, y)``
    in [-1, 1], and their zero-initialised projection ``side`` ``(B, dim)`` to the model
    width (added to every action token). While training, each image is randomly shifted
    by ``H / 16`` pixels (DrQ)."""

    def __init__(self, n_keypoints: int, dim: int, n_views: int = 1, max_text_len: int = 64,
                 text_dim: int = 64, width: int = 32, film_layers: int = 1):
        super().__init__()
        self.n_views = n_views
        self.text = TextFeatures(max_text_len, text_dim)
        self.cameras = nn.ModuleList([CameraStem(n_keypoints, text_dim, width, film_layers) for _ in range(n_views)])
        self.features = text_dim + 2 * n_keypoints * n_views
        self.out = nn.Linear(self.features, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, views: torch.Tensor, text: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if views.dim() != 5 or views.shape[1] != self.n_views:
            raise ValueError(f"views: expected (B, {self.n_views}, 3, H, W) current camera frames, "
                             f"got {tuple(views.shape)}")
        t = self.text(list(text), views.device)
        pad = views.shape[-1] // 16 if self.training else 0
        feats = [t] + [stem(random_shift(views[:, i], pad), t) for i, stem in enumerate(self.cameras)]
        feats = torch.cat(feats, 1)
        return feats, self.out(feats)
