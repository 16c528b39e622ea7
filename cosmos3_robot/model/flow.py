"""Flow matching: noise path, timestep sampling and shift, samplers.

Convention (GR00T / REFERENCE.md section 2): ``x_t = (1 - t) * noise + t * x``, ``t = 1``
is clean data, the network predicts the velocity ``x - noise``. Sampling integrates
``dx/dt = v`` from ``t = 0`` (pure noise) to ``t = 1``.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from cosmos3_robot.model.config import FlowConfig


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift on the noise level ``n = 1 - t``: ``n' = s n / (1 + (s - 1) n)``.

    ``shift > 1`` moves time towards the noisy end (higher resolutions want more of it).
    """
    if shift == 1.0:
        return t
    n = 1 - t
    return 1 - shift * n / (1 + (shift - 1) * n)


def sample_time(shape: tuple[int, ...], cfg: FlowConfig, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times in (0, 1) by ``cfg.timestep_sampling``, then shifted by ``cfg.shift``."""
    if cfg.timestep_sampling == "logit_normal":
        z = torch.randn(shape, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
        t = torch.sigmoid(z)
    elif cfg.timestep_sampling == "uniform":
        t = torch.rand(shape, generator=generator, device=device)
    elif cfg.timestep_sampling == "beta":
        # GR00T: (0.999 - Beta(1.5, 1)) / 0.999 as a noise level -> our t = 1 - that
        u = torch.rand(shape, generator=generator, device=device)
        beta = u ** (1 / 1.5)  # inverse CDF of Beta(1.5, 1)
        t = 1 - (0.999 - beta) / 0.999
    else:
        raise ValueError(f"timestep_sampling: unknown {cfg.timestep_sampling!r}")
    return shift_time(t.clamp(1e-5, 1 - 1e-5), cfg.shift)


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - t) * noise + t * x`` with ``t`` broadcast over trailing dims."""
    while t.dim() < x.dim():
        t = t[..., None]
    return (1 - t) * noise + t * x


def check_temperature(temperature: float) -> None:
    """``ValueError`` unless the sampler's starting-noise scale lies in [0, 1] (NaN fails)."""
    if not 0.0 <= float(temperature) <= 1.0:
        raise ValueError(f"temperature: expected a number in [0, 1], got {temperature!r}")


def time_grid(steps: int, shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``steps + 1`` times from 0 to 1 (uniform, then shifted)."""
    if not 1 <= steps <= 1000:
        raise ValueError(f"sampling steps: expected 1..1000, got {steps}")
    return shift_time(torch.linspace(0, 1, steps + 1, device=device, dtype=torch.float64), shift).float()


SAMPLERS = ("euler", "heun")
"""The ODE integrators :func:`integrate` offers."""

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``v(x, t)`` with ``x`` the current noisy state and ``t`` a scalar tensor time."""


def integrate(v: VelocityFn, x0: torch.Tensor, steps: int, shift: float = 1.0,
              method: Literal["euler", "heun"] = "euler") -> torch.Tensor:
    """Integrate from noise ``x0`` at t=0 to t=1 with Euler or Heun (2nd order) steps.

    Heun uses two velocity evaluations per step except the last (which would evaluate at
    t = 1, where the clean sample needs no correction), as in EDM.
    """
    if method not in SAMPLERS:
        raise ValueError(f"sampler: expected {' or '.join(map(repr, SAMPLERS))}, got {method!r}")
    ts = time_grid(steps, shift, x0.device)
    x = x0
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        d = v(x, t)
        x_next = x + (t_next - t) * d
        if method == "heun" and i < steps - 1:
            x_next = x + (t_next - t) * 0.5 * (d + v(x_next, t_next))
        x = x_next
    return x


def masked_mean(err: torch.Tensor, dims: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``err`` ``(B, T, W)`` over the valid action dimensions ``dims`` ``(B, W)`` and,
    when given, the real chunk steps ``steps`` ``(B, T)``; 0 (still differentiable) when
    nothing is valid, e.g. a batch of padding only."""
    m = dims[:, None, :].expand_as(err)
    if steps is not None:
        m = m & steps[:, :, None]
    if not bool(m.any()):
        return err.sum() * 0.0
    return err[m].mean()
