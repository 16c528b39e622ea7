"""Video encoders for DM tokens: raw pixels, a compact conv autoencoder, an external VAE.

Every encoder maps clips ``(B, F, 3, H, W)`` in [-1, 1] to latents
``(B, F', C, H / s, W / s)`` and back, with ``F = 1 + k * tc`` raw frames giving
``F' = 1 + k`` latent frames (the first frame alone, then groups of ``tc``; the causal
layout of video VAEs such as Cosmos/Wan with ``tc = 4``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def check_frames(n_frames: int, tc: int, what: str = "video") -> int:
    """Latent frame count for ``n_frames`` raw frames; ``ValueError`` unless ``1 + k * tc``."""
    if n_frames < 1 or (n_frames - 1) % tc != 0:
        raise ValueError(
            f"{what}: {n_frames} frames do not fit the temporal compression {tc}; "
            f"expected 1 + k * {tc} frames (e.g. {1}, {1 + tc}, {1 + 2 * tc})"
        )
    return 1 + (n_frames - 1) // tc


class VideoEncoder(nn.Module):
    temporal_compression: int = 1
    spatial_compression: int = 1
    latent_channels: int = 3

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> pixels. ``anchor`` ``(B, 3, H, W)``: the clip's real first frame when
        it is known (encoders that code frames relative to it use it; others ignore it)."""
        raise NotImplementedError


class RawPatchify(VideoEncoder):
    """No compression: the latents are the pixels (the default for the tiny preset)."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latents: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        return latents


def _conv_stack(c_in: int, c_out: int, n_down: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.SiLU()]
    for _ in range(n_down):
        layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
    layers += [nn.Conv2d(width, c_out, 3, padding=1)]
    return nn.Sequential(*layers)


def _deconv_stack(c_in: int, c_out: int, n_up: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.SiLU()]
    for _ in range(n_up):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
    layers += [nn.Conv2d(width, c_out, 3, padding=1)]
    return nn.Sequential(*layers)


class ConvVideoAE(VideoEncoder):
    """A compact, trainable convolutional video autoencoder.

    Spatial compression ``s`` (a power of two) by strided convolutions; temporal
    compression ``tc`` by encoding each group of ``tc`` frames stacked on channels, the
    first frame on its own (so a single image is a valid clip). Train it with
    :meth:`reconstruction_loss`.

    ``anchored``: each later group is coded as its difference from the clip's first frame
    and decoded back onto that frame (the real one when known, else the decoded one). A
    robot scene changes little between frames, so the differences are sparse and small: an
    untrained group latent decodes to "nothing moved" (copying the first frame) rather than
    to noise, and the reconstruction of the static scene is as sharp as the first frame.

    ``gated`` (with ``anchored``): the decoder also outputs a per-pixel gate in (0, 1) for
    each later frame and adds ``gate * difference`` to the anchor, the compositing mask of
    video predictors such as CDNA. A decoder cannot output exactly zero differences over a
    static background, so without the gate its small errors cover the whole frame; a
    sigmoid gate saturates shut there (initialised nearly shut: an untrained decoder copies
    the anchor) and opens where something moved.
    """

    GATE_INIT_BIAS = -4.0  # sigmoid(-4) = 0.018: an untrained gated decoder copies the anchor

    def __init__(self, latent_channels: int = 8, spatial_compression: int = 8,
                 temporal_compression: int = 4, width: int = 64, anchored: bool = False, gated: bool = False):
        super().__init__()
        if gated and not anchored:
            raise ValueError("ConvVideoAE: gated needs anchored (the gate blends differences onto the anchor)")
        self.anchored, self.gated = anchored, gated
        n = spatial_compression.bit_length() - 1
        if 2 ** n != spatial_compression:
            raise ValueError(f"spatial_compression must be a power of two, got {spatial_compression}")
        self.latent_channels = latent_channels
        self.spatial_compression = spatial_compression
        self.temporal_compression = tc = temporal_compression
        self.enc_first = _conv_stack(3, latent_channels, n, width)
        self.enc_group = _conv_stack(3 * tc, latent_channels, n, width)
        self.dec_first = _deconv_stack(latent_channels, 3, n, width)
        self.dec_group = _deconv_stack(latent_channels, (4 if gated else 3) * tc, n, width)
        if gated:
            with torch.no_grad():
                self.dec_group[-1].weight[3 * tc:] = 0  # the same opening everywhere until trained
                self.dec_group[-1].bias[3 * tc:] = self.GATE_INIT_BIAS

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        B, F_, C, H, W = video.shape
        tc = self.temporal_compression
        k = check_frames(F_, tc) - 1
        first = self.enc_first(video[:, 0])[:, None]
        if k == 0:
            return first
        later = video[:, 1:] - video[:, :1] if self.anchored else video[:, 1:]
        rest = self.enc_group(later.reshape(B * k, tc * C, H, W))
        return torch.cat([first, rest.reshape(B, k, *rest.shape[1:])], 1)

    def decode(self, latents: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, F', C, h, w)`` -> ``(B, 1 + (F' - 1) * tc, 3, H, W)`` in [-1, 1]. With
        ``anchored``, later frames are ``anchor`` (else the decoded first frame) plus the
        decoded differences."""
        B, Fl, C, h, w = latents.shape
        tc = self.temporal_compression
        first = torch.tanh(self.dec_first(latents[:, 0]))[:, None]
        if Fl == 1:
            return first
        rest = self.dec_group(latents[:, 1:].reshape(B * (Fl - 1), C, h, w))
        H, W = rest.shape[-2:]
        gate = None
        if self.gated:
            rest, gate = rest.split([3 * tc, tc], 1)
            gate = torch.sigmoid(gate.reshape(B, (Fl - 1) * tc, 1, H, W))
        rest = rest.reshape(B, (Fl - 1) * tc, 3, H, W)
        if not self.anchored:
            return torch.cat([first, torch.tanh(rest)], 1)
        base = first if anchor is None else anchor[:, None].to(rest.dtype)
        # Differences of [-1, 1] frames lie in [-2, 2]; the sum is clipped to the pixel range.
        diff = 2 * torch.tanh(rest / 2)
        return torch.cat([first, (base + (diff if gate is None else gate * diff)).clamp(-1, 1)], 1)

    def reconstruction_loss(self, video: torch.Tensor) -> torch.Tensor:
        """MSE of the round trip, later frames decoded onto the real first frame (as they
        are at inference when the context frame is real)."""
        return F.mse_loss(self.decode(self.encode(video), anchor=video[:, 0]), video)


class ExternalVAE(VideoEncoder):
    """Adapter for a user's pretrained video VAE (e.g. a diffusers ``AutoencoderKL*``).

    ``vae.encode(x)`` takes ``(B, 3, F, H, W)`` and returns latents ``(B, C, F', h, w)``, or an
    object with ``.latent_dist`` (its mean is used) or ``.latents``; ``vae.decode(z)`` returns
    pixels or an object with ``.sample``. Latents are normalised as ``(z - shift) * scale``.
    The VAE is frozen.
    """

    def __init__(self, vae: nn.Module, latent_channels: int, spatial_compression: int,
                 temporal_compression: int, scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = latent_channels
        self.spatial_compression = spatial_compression
        self.temporal_compression = temporal_compression
        self.scaling_factor, self.shift_factor = scaling_factor, shift_factor

    @staticmethod
    def _unwrap(out: Any, *names: str) -> torch.Tensor:
        for n in names:
            if hasattr(out, n):
                out = getattr(out, n)
                if n == "latent_dist":
                    out = out.mean
                return out
        return out

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        check_frames(video.shape[1], self.temporal_compression)
        z = self._unwrap(self.vae.encode(video.transpose(1, 2)), "latent_dist", "latents")
        return ((z - self.shift_factor) * self.scaling_factor).transpose(1, 2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        z = latents.transpose(1, 2) / self.scaling_factor + self.shift_factor
        return self._unwrap(self.vae.decode(z), "sample").transpose(1, 2)
