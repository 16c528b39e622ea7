"""A regressed video prior: the future frames a forward-dynamics request starts from.

The action prior (``Cosmos3Config.action_prior``) gives the action flow a starting chunk
that already reads the camera; this is the same idea for forward dynamics. A small conv
net reads the current frame, the action chunk and the proprioception and predicts each
future frame in pixels by moving the current one: a displacement field warps it (what
moved keeps its appearance and stays sharp), and a per-pixel gate blends in a predicted
colour where something appears that the frame did not show (the compositing of action-
conditioned video predictors such as CDNA, Finn et al. 2016). Both start at zero and
shut: an untrained prior copies the current frame exactly.

``generate("forward_dynamics", ..., steps=0)`` returns these frames themselves; with
steps the video flow starts from their latents (``prior + prior_noise * noise``, a
data-dependent prior as in PriorGrad, Lee et al. 2022). The prior regresses frames, so it
is cheap to train: the towers never run and it learns alongside the action prior.

Why pixels and not latents (docs/experiments/2026-12-01-world-model.md): an earlier
version regressed the autoencoder's future latents; after 4 CPU minutes its decoded
frames were 0.5 dB *below* copying the last frame, because decoding loses detail even
where nothing moves. This one reached 3.9 dB above it in 3 minutes on the same windows.

Written as a few conv layers rather than a library model: no package ships an
action-conditioned frame predictor of this shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# The chunk relative to the current state, scaled up: "hold still" (the chunk equals the
# state) must be easy to read, since a static frame is copied exactly only if the gate
# shuts everywhere (in the prototype this lifted the first future frame by 1.6 dB).
RELATIVE_SCALE = 10.0
GATE_INIT_BIAS = -4.0  # sigmoid(-4) = 0.018: an untrained prior (nearly) copies the current frame
FLOW_SCALE = 0.25  # displacement per unit of output, in [-1, 1] image coordinates


class VideoPrior(nn.Module):
    """Current frame + action chunk + state -> future frames.

    ``forward(frame, actions, state, domain, n_frames)``:

    - ``frame`` ``(B, 3, H, W)`` in [-1, 1]: "now", the last context frame (``H``, ``W``
      divisible by 4);
    - ``actions`` ``(B, T, W_a)`` normalised pseudo-actions padded to ``W_a =
      max_action_width`` (``T <= max_actions``; zero-padded to ``max_actions`` here), the
      chunk whose first steps move the scene during the future frames;
    - ``state`` ``(B, W_a)`` normalised proprioception padded the same way (zeros without);
    - ``domain`` ``(B,)`` long: the embodiment's action domain (a chunk means different
      motions on different robots);
    - ``n_frames``: future raw frames to predict.

    Returns ``(B, n_frames, 3, H, W)`` in [-1, 1].
    """

    def __init__(self, max_actions: int, max_action_width: int, n_domains: int, width: int = 64):
        super().__init__()
        self.max_actions, self.max_action_width, self.width = max_actions, max_action_width, width
        chunk = max_actions * max_action_width
        self.down = nn.Sequential(nn.Conv2d(3 + 2, width, 4, 2, 1), nn.SiLU(),
                                  nn.Conv2d(width, width, 4, 2, 1), nn.SiLU())  # H/4 x W/4
        self.action_in = nn.Sequential(nn.Linear(chunk + max_action_width, width), nn.SiLU(),
                                       nn.Linear(width, width))
        self.relative_in = nn.Sequential(nn.Linear(chunk, width), nn.SiLU(), nn.Linear(width, width))
        self.domain_in = nn.Embedding(n_domains, width)
        self.film = nn.Linear(width, 2 * width)
        self.body = nn.Sequential(*[m for _ in range(3) for m in
                                    (nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU())])
        self.frame_in = nn.Linear(16, width)  # sinusoidal features of the frame index
        self.out = nn.Conv2d(width, 6, 3, 1, 1)  # displacement (2), gate (1), colour (3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default fan-in initialisation (the model's own ``std=0.02`` init is for
        transformer widths); the output at zero displacement with the gate shut."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
                m.reset_parameters()
        nn.init.normal_(self.domain_in.weight, std=0.02)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.out.bias[2] = GATE_INIT_BIAS

    def forward(self, frame: torch.Tensor, actions: torch.Tensor, state: torch.Tensor, domain: torch.Tensor,
                n_frames: int) -> torch.Tensor:
        B, C, H, W = frame.shape
        T, Wa = actions.shape[1:]
        if C != 3 or H % 4 or W % 4:
            raise ValueError(f"video prior: expected frame (B, 3, H, W) with H, W divisible by 4, "
                             f"got {tuple(frame.shape)}")
        if T > self.max_actions or Wa != self.max_action_width:
            raise ValueError(f"video prior: expected actions (B, T<={self.max_actions}, {self.max_action_width}), "
                             f"got {tuple(actions.shape)}")
        if tuple(state.shape) != (B, Wa):
            raise ValueError(f"video prior: expected state ({B}, {Wa}), got {tuple(state.shape)}")
        if n_frames < 1:
            raise ValueError(f"video prior: n_frames must be >= 1, got {n_frames}")
        dt, dev = frame.dtype, frame.device
        chunk = torch.zeros(B, self.max_actions, Wa, device=dev, dtype=dt)
        chunk[:, :T] = actions.to(dt)
        state = state.to(dt)
        rel = (chunk - state[:, None]) * RELATIVE_SCALE
        rel[:, T:] = 0
        cond = (self.action_in(torch.cat([chunk.flatten(1), state], 1)) + self.relative_in(rel.flatten(1))
                + self.domain_in(domain))
        ys = torch.linspace(-1.0, 1.0, H, device=dev, dtype=dt)
        xs = torch.linspace(-1.0, 1.0, W, device=dev, dtype=dt)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        h = self.down(torch.cat([frame, torch.stack([gy, gx])[None].expand(B, -1, -1, -1)], 1))
        scale, shift = self.film(cond).chunk(2, 1)
        h = self.body(h * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        # one output pass for all frames: (B * n_frames, width, h, w), each with its index's features
        t = torch.arange(n_frames, device=dev, dtype=dt)
        freqs = torch.exp(-math.log(100.0) * torch.arange(8, device=dev, dtype=dt) / 8)
        tfeat = self.frame_in(torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1))
        x = F.silu(h[:, None] + tfeat[None, :, :, None, None]).flatten(0, 1)
        o = F.interpolate(self.out(x), size=(H, W), mode="bilinear", align_corners=False)
        flow, gate, colour = o[:, :2], torch.sigmoid(o[:, 2:3]), torch.tanh(o[:, 3:])
        # grid_sample reads (x, y); align_corners=True puts -1 and 1 on the edge pixels'
        # centres, so zero displacement samples every pixel exactly where it is
        base = torch.stack([gx, gy], -1)[None]
        src = frame[:, None].expand(-1, n_frames, -1, -1, -1).flatten(0, 1)
        warped = F.grid_sample(src, base + FLOW_SCALE * flow.permute(0, 2, 3, 1), mode="bilinear",
                               padding_mode="border", align_corners=True)
        return (warped + gate * (colour - warped)).reshape(B, n_frames, 3, H, W)


def frame_log_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The video prior's loss (scalar): mean over frames of ``10 log10(MSE + 1e-5)``, the
    negative PSNR of each ``(B, F, 3, H, W)`` frame in [-1, 1] units (up to a constant).
    Forward dynamics is scored by PSNR averaged over frames in dB, which rewards exactness
    where little moves; a plain MSE barely distinguishes a near-copy from an exact one."""
    mse = ((pred - target) ** 2).mean((2, 3, 4))
    return 10.0 * torch.log10(mse + 1e-5).mean()
