"""A regressed video prior: the future latents a forward-dynamics request starts from.

The action prior (``Cosmos3Config.action_prior``) gives the action flow a starting chunk
that already reads the camera; this is the same idea for forward dynamics. A small conv
net on the latent grid reads the context latents and the (clean) action chunk and regresses
each future latent group; the video flow then carries ``prior + prior_noise * noise`` to
the data instead of unit noise (a data-dependent prior as in PriorGrad, Lee et al. 2022).
A regression to the conditional mean is what PSNR rewards, and it is cheap to train: the
towers never run, so it learns from every training batch's (already encoded) latents and
alongside the encoder's pretraining. A flow that has learned little then moves a forward-
dynamics sample little from the prior's prediction, instead of decoding "nothing moved".

Written as a few conv layers rather than a library model: no package ships a conditional
latent predictor of this shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VideoPrior(nn.Module):
    """Context latents + action chunk -> future latents.

    ``forward(context, actions, domain, n_future)``:

    - ``context`` ``(B, N, C, h, w)``: the context latents (``N >= 1``; the first and the
      last are read: anchored encoders code later groups relative to the clip's first
      frame, and the last is "now");
    - ``actions`` ``(B, T, W)`` normalised pseudo-actions padded to ``W = max_action_width``
      (``T <= max_actions``; zero-padded to ``max_actions`` here), the chunk whose first
      steps move the scene during the future frames;
    - ``domain`` ``(B,)`` long: the embodiment's action domain (a chunk means different
      motions on different robots);
    - ``n_future``: future latent groups to predict.

    Returns ``(B, n_future, C, h, w)``. The output layer starts at zero (the prior predicts
    zero latents until trained).
    """

    def __init__(self, latent_channels: int, max_actions: int, max_action_width: int, n_domains: int,
                 width: int = 128):
        super().__init__()
        self.max_actions, self.max_action_width = max_actions, max_action_width
        self.width = width
        self.inp = nn.Conv2d(2 * latent_channels + 2, width, 3, padding=1)
        self.action_in = nn.Linear(max_actions * max_action_width, width)
        self.domain_in = nn.Embedding(n_domains, width)
        self.group_in = nn.Linear(16, width)  # sinusoidal features of the group index
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(width, latent_channels, 3, padding=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default fan-in initialisation (the model's own ``std=0.02`` init is for
        transformer widths), the output layer at zero."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        nn.init.normal_(self.domain_in.weight, std=0.02)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, context: torch.Tensor, actions: torch.Tensor, domain: torch.Tensor,
                n_future: int) -> torch.Tensor:
        B, N, C, h, w = context.shape
        T, W = actions.shape[1:]
        if T > self.max_actions or W != self.max_action_width:
            raise ValueError(f"video prior: expected actions (B, T<={self.max_actions}, {self.max_action_width}), "
                             f"got {tuple(actions.shape)}")
        if n_future < 1:
            raise ValueError(f"video prior: n_future must be >= 1, got {n_future}")
        dt = context.dtype
        ys = torch.linspace(-1.0, 1.0, h, device=context.device, dtype=dt)
        xs = torch.linspace(-1.0, 1.0, w, device=context.device, dtype=dt)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(B, -1, -1, -1)
        x = self.inp(torch.cat([context[:, 0], context[:, -1], grid], 1))
        chunk = torch.zeros(B, self.max_actions, W, device=actions.device, dtype=dt)
        chunk[:, :T] = actions.to(dt)
        x = x + (self.action_in(chunk.flatten(1)) + self.domain_in(domain))[:, :, None, None]
        # one pass for all groups: (B * n_future, width, h, w), each with its index's features
        g = torch.arange(n_future, device=context.device, dtype=dt)
        freqs = torch.exp(-math.log(100.0) * torch.arange(8, device=context.device, dtype=dt) / 8)
        gfeat = self.group_in(torch.cat([torch.sin(g[:, None] * freqs), torch.cos(g[:, None] * freqs)], 1))
        x = (x[:, None] + gfeat[None, :, :, None, None]).reshape(B * n_future, self.width, h, w)
        return self.body(x).reshape(B, n_future, C, h, w)
