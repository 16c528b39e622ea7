"""3D multimodal RoPE (t, h, w) with frame-rate modulation.

Temporal positions advance by ``delta_t = TPS_base / TPS`` per token, with ``TPS_base = 6``
(24 fps after 4x temporal compression), so one second of real time spans 6 position units
in every modality at any frame rate (REFERENCE.md section 1):

- video latents: ``TPS = fps / temporal_compression``; latent frame ``j`` sits at
  ``t0 + j * delta_t`` (the time of raw frame ``j * temporal_compression``);
- actions: ``TPS = control_hz``; action step ``k`` (the transition that ends at control
  step ``k + 1``) sits at ``t_now + (k + 1) * 6 / control_hz``: step 0 lines up with the
  frame after the current one (video frame 1 for a clip starting at the current frame);
- audio: ``TPS = 48000 / 1920 = 25``;
- text and other 1D streams use the same index on all three axes.

Video tokens carry their latent grid row/column on the h/w axes.
"""

from __future__ import annotations

import torch

TPS_BASE = 6.0
AUDIO_TPS = 48000 / 1920  # 25 tokens per second


def temporal_step(tps: float, base: float = TPS_BASE) -> float:
    """Position units per token for a stream of ``tps`` tokens per second."""
    if not tps > 0:
        raise ValueError(f"tokens per second must be > 0, got {tps}")
    return base / tps


def text_positions(n: int, start: float = 0.0) -> torch.Tensor:
    """``(n, 3)`` positions for 1D tokens: the same index on t, h and w."""
    idx = torch.arange(n, dtype=torch.float64) + start
    return idx[:, None].expand(n, 3).clone()


def video_positions(n_frames: int, grid_h: int, grid_w: int, fps: float, temporal_compression: int,
                    t0: float = 0.0, first_frame: int = 0, base: float = TPS_BASE) -> torch.Tensor:
    """``(n_frames * grid_h * grid_w, 3)`` positions of latent video tokens, frame-major.

    ``first_frame`` is the latent index of the first frame given (e.g. future frames after
    ``c`` context frames start at ``c``).
    """
    dt = temporal_step(fps / temporal_compression, base)
    t = t0 + (torch.arange(n_frames, dtype=torch.float64) + first_frame) * dt
    h = torch.arange(grid_h, dtype=torch.float64)
    w = torch.arange(grid_w, dtype=torch.float64)
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    return torch.stack([tt, hh, ww], -1).reshape(-1, 3)


def action_positions(n: int, control_hz: float, t_now: float = 0.0, base: float = TPS_BASE) -> torch.Tensor:
    """``(n, 3)`` positions of action tokens; step ``k`` at ``t_now + (k + 1) * 6 / control_hz``."""
    t = t_now + (torch.arange(n, dtype=torch.float64) + 1) * temporal_step(control_hz, base)
    return t[:, None].expand(n, 3).clone()


def audio_positions(n: int, t0: float = 0.0, base: float = TPS_BASE) -> torch.Tensor:
    """``(n, 3)`` positions of audio tokens at 25 tokens per second."""
    t = t0 + torch.arange(n, dtype=torch.float64) * temporal_step(AUDIO_TPS, base)
    return t[:, None].expand(n, 3).clone()


class MRoPE(torch.nn.Module):
    """Rotary embedding whose head-dim pairs are split into (t, h, w) sections."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, sections: tuple[int, int, int], theta: float = 10000.0):
        super().__init__()
        if sum(sections) != head_dim // 2:
            raise ValueError(f"mRoPE sections {sections} must sum to head_dim // 2 = {head_dim // 2}")
        self.sections = tuple(sections)
        freqs = [theta ** (-torch.arange(s, dtype=torch.float64) / max(s, 1)) for s in sections]
        self.register_buffer("inv_freq", torch.cat(freqs), persistent=False)

    def angles(self, pos: torch.Tensor) -> torch.Tensor:
        """``(..., N, 3)`` positions -> ``(..., N, head_dim // 2)`` rotation angles (float64)."""
        axis = torch.repeat_interleave(torch.arange(3, device=pos.device),
                                       torch.tensor(self.sections, device=pos.device))
        return pos.to(torch.float64)[..., axis] * self.inv_freq.to(pos.device)

    def cos_sin(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.angles(pos)
        return a.cos().to(dtype), a.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(..., D)`` by angles given as ``cos``/``sin`` ``(..., D/2)`` that
    broadcast against it (e.g. ``x`` ``(B, N, 2, H, D)`` with ``(B, N, 1, 1, D/2)``).
    Pair ``i`` is ``(x[i], x[i + D/2])``."""
    half = cos.shape[-1]
    x1, x2 = x.split([half, half], -1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
