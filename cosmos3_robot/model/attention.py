"""The attention rule of the Mixture-of-Transformers, in one place.

- AR (Reasoner) queries attend causally to AR keys only. The AR pass never receives DM
  tensors at all (see ``mot.MoTLayer.forward_ar``), so AR outputs cannot depend on DM
  tokens: a wall at the projection level, not only a mask.
- DM (Generator) queries attend bidirectionally to ``[K_prefix; K_DM]`` of the same sample,
  where the prefix is the AR keys (plus, with block-causal caching, already processed clean
  DM keys).
- ``block_causal``: clean DM conditioning queries do not see noisy DM keys, so clean K/V are
  the same at every denoising step and can be cached.

Masks are boolean, True = may attend, shaped ``(B, 1, Lq, Lk)`` for
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ar_mask(ar_valid: torch.Tensor) -> torch.Tensor:
    """Causal mask over AR tokens ``(B, 1, La, La)``; padded keys are excluded.

    Every query may see itself, so padded rows stay finite (their outputs are unused).
    """
    B, L = ar_valid.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=ar_valid.device).tril()
    m = causal[None] & ar_valid[:, None, :]
    m = m | torch.eye(L, dtype=torch.bool, device=ar_valid.device)[None]
    return m[:, None]


def dm_mask(prefix_valid: torch.Tensor, dm_valid: torch.Tensor, dm_noisy: torch.Tensor,
            block_causal: bool) -> torch.Tensor:
    """DM queries over ``[prefix; DM]`` keys: ``(B, 1, Ld, Lp + Ld)``.

    ``prefix_valid`` ``(B, Lp)`` marks usable prefix keys (AR, cached clean DM);
    ``dm_valid`` ``(B, Ld)`` usable DM keys; ``dm_noisy`` ``(B, Ld)`` which DM tokens are
    noisy targets. With ``block_causal`` a clean query sees no noisy key.
    """
    B, Ld = dm_valid.shape
    keys = dm_valid[:, None, :].expand(B, Ld, Ld)
    if block_causal:
        clean_q = ~dm_noisy[:, :, None]
        keys = keys & ~(clean_q & dm_noisy[:, None, :])
    keys = keys | torch.eye(Ld, dtype=torch.bool, device=dm_valid.device)[None]
    prefix = prefix_valid[:, None, :].expand(B, Ld, prefix_valid.shape[1])
    return torch.cat([prefix, keys], -1)[:, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, H, Lq, D)`` attention output. ``q`` comes pre-scaled (``TowerBlock.qkv_heads``
    folds ``D ** -0.5`` into the q-norm weight); ``mask`` is boolean (True = may attend) or
    an additive float bias. Through PyTorch SDPA (flash / memory-efficient kernels on CUDA,
    the math kernel on CPU); while exporting to ONNX, as its four ops (SDPA's exporter
    emits dozens, mostly shape arithmetic, and a batch-1 CPU step is bound by op count)."""
    if torch.onnx.is_in_onnx_export():
        return attend_explicit(q, k, v, mask if mask.dtype != torch.bool else attention_bias(mask, q.dtype))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def attend_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The same attention as :func:`attend` (pre-scaled ``q``) with an additive ``bias``,
    written out as matmul, add, softmax, matmul: the form exported to ONNX."""
    return torch.softmax(q @ k.transpose(-1, -2) + bias, -1) @ v


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean may-attend mask -> additive bias (0 visible, -inf hidden)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
