"""The Mixture-of-Transformers core: every layer has a Reasoner and a Generator parameter set.

    AR tokens  ──Reasoner(norm, QKV, O, FFN)──┐ causal over AR keys only
                                               │ K_AR, V_AR
    DM tokens  ──Generator(adaLN(t), QKV, O, FFN)── bidirectional over [K_AR; K_DM]

``forward_ar`` runs the Reasoner tower alone and returns the per-layer AR keys/values
(the prefix cache); ``forward_dm`` runs the Generator tower against a prefix cache. A full
forward is the two in sequence, so the AR outputs are independent of the DM tokens by
construction, and the prefix is computed once per request at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cosmos3_robot.model.attention import ar_mask, attend, dm_mask
from cosmos3_robot.model.rope import apply_rope


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x)`` over the last axis, the statistic in float32 (no affine weight).
    Written as the op pattern onnxruntime fuses into one ``SimplifiedLayerNormalization``."""
    if x.dtype == torch.float32:  # no Cast nodes in the exported graph
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rms_norm(x, self.eps)
        return y * self.weight if self.weight is not None else y


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up(x).split([self.hidden, self.hidden], -1)
        return self.down(F.silu(g) * u)


class TowerBlock(nn.Module):
    """One tower's parameters in one layer: norms, Q/K/V/O (with QK-norm) and the FFN.

    The Generator's norms are affine-free: its scale/shift come from the timestep (adaLN).
    """

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, adaln: bool):
        super().__init__()
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.norm1 = RMSNorm(dim, affine=not adaln)
        self.norm2 = RMSNorm(dim, affine=not adaln)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.o = nn.Linear(dim, dim, bias=False)
        self.ffn = SwiGLU(dim, ffn_hidden)
        self.ada = nn.Linear(dim, 6 * dim) if adaln else None
        if self.ada is not None:  # adaLN-Zero: each block starts as the identity
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def qkv_heads(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """``(B, L, dim)`` -> q, k, v ``(B, H, L, head_dim)``; q comes pre-scaled by
        ``head_dim ** -0.5`` (attend with ``scale=1``).

        Queries and keys are normalised and rotated together (one norm, one rotation on a
        ``(B, L, 2, H, head_dim)`` view, the q/k-norm weights stacked, the attention scale
        folded into the q weight): the same values as two norms and two rotations, in
        half the ops, which is most of the cost of a batch-1 step on a CPU.
        """
        qkv = self.qkv(h).unflatten(-1, (3, self.n_heads, self.head_dim))  # (B, L, 3, H, hd)
        weight = torch.stack([self.q_norm.weight * self.head_dim ** -0.5, self.k_norm.weight])[:, None]
        qk = apply_rope(rms_norm(qkv[:, :, :2], self.q_norm.eps) * weight, cos[:, :, None, None], sin[:, :, None, None])
        qk = qk.permute(2, 0, 3, 1, 4)  # (2, B, H, L, hd)
        return qk[0], qk[1], qkv[:, :, 2].transpose(1, 2)

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, H, L, head_dim)`` attention output -> ``(B, L, dim)`` through O."""
        return self.o(out.transpose(1, 2).flatten(2))


@dataclass
class PrefixCache:
    """Per-layer keys/values ``(B, H, Lp, D)`` that DM tokens attend to, and their validity."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor  # (B, Lp) bool
    _stacked: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def extend(self, keys: list[torch.Tensor], values: list[torch.Tensor], valid: torch.Tensor) -> "PrefixCache":
        return PrefixCache([torch.cat([a, b], 2) for a, b in zip(self.keys, keys)],
                           [torch.cat([a, b], 2) for a, b in zip(self.values, values)],
                           torch.cat([self.valid, valid], 1))

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values as ``(n_layers, B, H, Lp, D)`` tensors (made once per cache)."""
        if self._stacked is None:
            self._stacked = (torch.stack(self.keys), torch.stack(self.values))
        return self._stacked

    def select(self, index: torch.Tensor) -> "PrefixCache":
        """The cache of the samples ``index`` ``(B',)`` long (repeats allowed; differentiable)."""
        return PrefixCache([k.index_select(0, index) for k in self.keys],
                           [v.index_select(0, index) for v in self.values], self.valid.index_select(0, index))

    def repeat(self, n: int) -> "PrefixCache":
        """The same cache for ``n`` copies of the batch (batch-major)."""
        return PrefixCache([k.repeat(n, 1, 1, 1) for k in self.keys], [v.repeat(n, 1, 1, 1) for v in self.values],
                           self.valid.repeat(n, 1))


def modulation(ada: nn.Module, temb: torch.Tensor, group: torch.Tensor | int | None,
               precomputed: torch.Tensor | None = None) -> torch.Tensor:
    """adaLN parameters per token.

    ``temb`` is per token ``(B, L, dim)`` when ``group`` is ``None``; otherwise per time group
    ``(B, S, dim)``, with ``group`` an ``(L,)`` long tensor giving each token's group, or one
    int when all L tokens share a group (broadcast, nothing gathered). Every token of a
    stream shares one flow time, so the grouped form runs the ``dim -> k dim`` projection on
    S rows instead of L (the same values). ``precomputed``: ``ada(temb)`` already known
    (inference looks it up per flow time)."""
    out = ada(temb) if precomputed is None else precomputed
    if group is None:
        return out
    if isinstance(group, int):
        return out[:, group:group + 1]
    return out.index_select(1, group)


class MoTLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, ffn_hidden: int):
        super().__init__()
        self.reasoner = TowerBlock(dim, n_heads, ffn_hidden, adaln=False)
        self.generator = TowerBlock(dim, n_heads, ffn_hidden, adaln=True)

    def forward(self, tower: str, *args):
        """``layer("ar", ...)`` / ``layer("dm", ...)``: going through ``__call__`` lets module
        hooks (FSDP's parameter gathering, profilers) see each tower pass."""
        return self.forward_ar(*args) if tower == "ar" else self.forward_dm(*args)

    def forward_ar(self, x, cos, sin, mask):
        r = self.reasoner
        q, k, v = r.qkv_heads(r.norm1(x), cos, sin)
        x = x + r.merge(attend(q, k, v, mask))
        x = x + r.ffn(r.norm2(x))
        return x, k, v

    def forward_dm(self, x, temb, cos, sin, prefix_k, prefix_v, mask, group=None, mod=None):
        g = self.generator
        # Split by constant sizes (chunk on a traced shape exports as shape arithmetic).
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation(g.ada, temb, group, mod).split(
            [g.dim] * 6, -1)
        q, k, v = g.qkv_heads(g.norm1(x) * (1 + scale1) + shift1, cos, sin)
        out = attend(q, torch.cat([prefix_k, k], 2), torch.cat([prefix_v, v], 2), mask)
        x = x + gate1 * g.merge(out)
        x = x + gate2 * g.ffn(g.norm2(x) * (1 + scale2) + shift2)
        return x, k, v


class MoTCore(nn.Module):
    """The stack of layers; embeddings, heads and modes live in :mod:`cosmos3_robot.model.cosmos3`."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, ffn_hidden: int, block_causal: bool):
        super().__init__()
        self.layers = nn.ModuleList([MoTLayer(dim, n_heads, ffn_hidden) for _ in range(n_layers)])
        self.block_causal = block_causal

    def forward_ar(self, x, cos, sin, valid) -> tuple[torch.Tensor, PrefixCache]:
        """AR tokens ``(B, La, dim)`` -> outputs and the prefix cache. Sees no DM tensor."""
        mask = ar_mask(valid)
        keys, values = [], []
        for layer in self.layers:
            x, k, v = layer("ar", x, cos, sin, mask)
            keys.append(k)
            values.append(v)
        return x, PrefixCache(keys, values, valid)

    def forward_dm(self, x, temb, cos, sin, prefix: PrefixCache, valid, noisy, group: torch.Tensor | int | None = None,
                   mods: list[torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """DM tokens ``(B, Ld, dim)`` against ``prefix`` -> outputs and their per-layer K/V.

        ``temb``: ``(B, Ld, dim)`` per token, or ``(B, S, dim)`` per time group with ``group``
        ``(Ld,)`` (see :func:`modulation`). ``mods``: each layer's ``ada(temb)`` when already
        known (then ``temb`` is unused)."""
        mask = dm_mask(prefix.valid, valid, noisy, self.block_causal)
        keys, values = [], []
        for i, (layer, pk, pv) in enumerate(zip(self.layers, prefix.keys, prefix.values)):
            x, k, v = layer("dm", x, temb, cos, sin, pk, pv, mask, group, None if mods is None else mods[i])
            keys.append(k)
            values.append(v)
        return x, keys, values
