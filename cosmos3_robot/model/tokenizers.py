"""Token makers: byte-level text, ViT patches (AR), latent patches and actions (DM).

The text tokenizer is byte-level UTF-8 (no vocabulary file, nothing to download): ids
0-255 are bytes, then PAD, BOS, EOS (end of the AR prefix) and BOG (begin generation).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ByteTokenizer:
    PAD, BOS, EOS, BOG = 256, 257, 258, 259
    vocab_size = 260

    def __init__(self, max_len: int):
        self.max_len = max_len

    def encode(self, texts: Sequence[str], add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``[str]`` -> ``tokens (B, max_len)`` long and ``valid (B, max_len)`` bool.

        Each text is ``BOS, bytes..., EOS`` (without EOS for a prompt to be continued).
        """
        if isinstance(texts, str):
            raise ValueError("text: expected a list of strings (one per sample), got a single str")
        tokens = torch.full((len(texts), self.max_len), self.PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text[{i}]: expected str, got {type(t).__name__}")
            ids = [self.BOS] + list(t.encode("utf-8")) + ([self.EOS] if add_eos else [])
            if len(ids) > self.max_len:
                raise ValueError(
                    f"text[{i}]: {len(ids)} tokens (BOS + {len(t.encode('utf-8'))} UTF-8 bytes"
                    f"{' + EOS' if add_eos else ''}) exceed the "
                    f"text context of {self.max_len}; shorten it or raise max_text_len"
                )
            tokens[i, : len(ids)] = torch.tensor(ids)
        return tokens, tokens != self.PAD

    def decode(self, tokens: torch.Tensor) -> list[str]:
        out = []
        for row in tokens.tolist():
            out.append(bytes(t for t in row if t < 256).decode("utf-8", errors="replace"))
        return out


class ViTPatchEmbed(nn.Module):
    """Images ``(B, N, 3, H, W)`` in [-1, 1] -> AR tokens ``(B, N * (H/(p*m))^2, dim)``.

    ``p x p`` patches, then ``m x m`` neighbouring patches merged into one token (2x2 in
    the reference ViT).
    """

    def __init__(self, dim: int, patch: int, merge: int):
        super().__init__()
        self.patch, self.merge = patch, merge
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.merge_proj = nn.Linear(dim * merge * merge, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, N, C, H, W = images.shape
        x = self.proj(images.reshape(B * N, C, H, W))  # (BN, dim, h, w)
        m = self.merge
        d, h, w = x.shape[1:]
        x = x.reshape(B * N, d, h // m, m, w // m, m).permute(0, 2, 4, 3, 5, 1)
        x = self.merge_proj(x.reshape(B * N, (h // m) * (w // m), m * m * d))
        return x.reshape(B, -1, x.shape[-1])


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, F, C, h, w)`` -> ``(B, F * (h/p) * (w/p), C * p * p)``, frame-major, row-major."""
    B, F_, C, h, w = latents.shape
    x = latents.reshape(B, F_, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(B, F_ * (h // p) * (w // p), C * p * p)


def unpatchify(tokens: torch.Tensor, n_frames: int, channels: int, h: int, w: int, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    B = tokens.shape[0]
    x = tokens.reshape(B, n_frames, h // p, w // p, channels, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, n_frames, channels, h, w)


class ActionProjections(nn.Module):
    """Per-embodiment-domain linear maps between padded actions (width W) and tokens.

    One ``(W, dim)`` input matrix and one ``(dim, W)`` output matrix per domain. Padded
    dimensions are zero on input and ignored (masked) in the loss.
    """

    def __init__(self, n_domains: int, width: int, dim: int):
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(n_domains, width, dim) * width ** -0.5)
        self.b_in = nn.Parameter(torch.zeros(n_domains, dim))
        self.w_out = nn.Parameter(torch.zeros(n_domains, dim, width))
        self.b_out = nn.Parameter(torch.zeros(n_domains, width))

    def embed(self, actions: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """``(B, T, W)`` -> ``(B, T, dim)``."""
        return torch.einsum("btw,bwd->btd", actions, self.w_in[domain]) + self.b_in[domain][:, None]

    def project(self, h: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> ``(B, T, W)``."""
        return torch.einsum("btd,bdw->btw", h, self.w_out[domain]) + self.b_out[domain][:, None]


class StateProjection(nn.Module):
    """Per-embodiment-domain linear map from padded proprioception ``(B, W)`` to one
    ``(B, dim)`` embedding. Zero-initialised, so a model starts as if it had no state input
    and learns how much to read from it."""

    def __init__(self, n_domains: int, width: int, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_domains, width, dim))
        self.b = nn.Parameter(torch.zeros(n_domains, dim))

    def forward(self, state: torch.Tensor, present: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """``state`` ``(B, W)`` zero-padded, ``present`` ``(B,)`` bool (a sample without state
        gets no embedding), ``domain`` ``(B,)`` -> ``(B, dim)``."""
        out = torch.einsum("bw,bwd->bd", state, self.w[domain]) + self.b[domain]
        return out * present[:, None].to(out.dtype)


class TimestepEmbedding(nn.Module):
    """Flow time ``t`` in [0, 1] per token ``(B, L)`` -> ``(B, L, dim)`` (sinusoid + MLP)."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-torch.arange(half, device=t.device, dtype=torch.float32) * (9.21 / half))
        a = (t.float() * 1000)[..., None] * freqs
        emb = torch.cat([a.cos(), a.sin()], -1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
