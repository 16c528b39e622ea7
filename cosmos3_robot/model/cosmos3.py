"""The Cosmos3 world-action model: embeddings, layouts, flow-matching loss and generation.

One set of weights serves every mode (:mod:`cosmos3_robot.model.modes`); a mode only
decides which DM streams are present and which of them are noisy. Sequence per sample::

    AR:  [BOS text... PAD..] [ViT image tokens] [EOS] [BOG]      (Reasoner, causal)
    DM:  [clean conditioning streams] [noisy target streams]       (Generator, flow)

Positions follow :mod:`cosmos3_robot.model.rope`; DM time starts after the AR prefix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosmos3_robot.batch import WorldBatch  # noqa: F401  (re-exported: the model's input contract)
from cosmos3_robot.model import rope
from cosmos3_robot.model.config import Cosmos3Config
from cosmos3_robot.model.flow import check_temperature, integrate, interpolate, sample_time, time_grid
from cosmos3_robot.model.modes import Mode, get_mode
from cosmos3_robot.model.attention import attention_bias, dm_mask
from cosmos3_robot.model.mot import MoTCore, PrefixCache, RMSNorm, modulation
from cosmos3_robot.model.tokenizers import (
    ActionProjections,
    ByteTokenizer,
    StateProjection,
    TimestepEmbedding,
    ViTPatchEmbed,
    patchify,
    unpatchify,
)
from cosmos3_robot.model.keypoints import KeypointStem
from cosmos3_robot.model.vae import ConvVideoAE, RawPatchify, VideoEncoder, check_frames
from cosmos3_robot.model.video_prior import VideoPrior

PRIOR_HIDDEN = 512
"""Hidden width of the action prior's head (independent of the towers' width: the prior is
the whole policy at ``steps 0``, and 512 fitted the built-in tasks where 320 underfitted)."""


@dataclass
class _Layout:
    """The assembled DM sequence of one batch."""

    tokens: torch.Tensor  # (B, L, dim) embedded inputs (noisy streams hold x_t)
    pos: torch.Tensor  # (B, L, 3)
    noisy: torch.Tensor  # (B, L) bool
    stream_time: torch.Tensor  # (B, S) flow time per stream (1 = clean)
    group: torch.Tensor  # (L,) long: each token's stream index into stream_time
    spans: dict[str, slice] = field(default_factory=dict)
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin of pos, when precomputed
    # attention biases by (prefix, token range) for a Generator backend; shared by the
    # per-step copies of one request's layout, so each is built once per request
    biases: dict = field(default_factory=dict)

    @property
    def time(self) -> torch.Tensor:
        """``(B, L)`` flow time per token."""
        return self.stream_time[:, self.group]


@dataclass
class ModulationTable:
    """The Generator's adaLN parameters for a fixed set of flow times.

    At batch 1 the denoising step is bound by reading weights, and a third of the
    Generator's weights are the ``dim -> 6 dim`` adaLN projections, whose input is only the
    flow time. The times a sampler visits are known before it starts (the time grid, plus
    1 for clean streams), so generation computes the projections for all of them in one
    pass and each step looks its rows up instead of reading those weights again.

    Attributes:
        times: the flow times, host floats (row ``i`` is ``times[i]``).
        layers: per layer ``(U, 6 dim)``. final: ``(U, 2 dim)`` of the output norm.
    """

    times: list[float]
    layers: list[torch.Tensor]
    final: torch.Tensor
    _taken: dict = field(default_factory=dict, repr=False, compare=False)

    def take(self, stream_times: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows for one time per stream -> ``(n_layers, 1, S, 6 dim)`` and ``(1, S, 2 dim)``
        (gathered once per distinct tuple of times; later steps and requests reuse them)."""
        key = tuple(stream_times)
        if key not in self._taken:
            self._taken[key] = self._gather(key)
        return self._taken[key]

    def _gather(self, stream_times: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for t in stream_times:  # float32 times: match to within float32 rounding
            i = min(range(len(self.times)), key=lambda j: abs(self.times[j] - t))
            if abs(self.times[i] - t) > 1e-6:
                raise ValueError(f"flow times {list(stream_times)} are not all in the table {self.times}")
            rows.append(i)
        rows_t = torch.tensor(rows, device=self.final.device)
        return torch.stack([m[rows_t][None] for m in self.layers]), self.final[rows_t][None]


class GeneratorBackend(Protocol):
    """Runs the Generator tower in place of the torch modules (e.g. an onnxruntime session
    of the exported step, :mod:`cosmos3_robot.runtime.export`). Shapes:

    ``tokens (B, L, dim)``; ``prefix_k``/``prefix_v`` ``(n_layers, B, H, Lp, head_dim)``;
    ``cos``/``sin`` ``(B, L, head_dim / 2)``; ``bias`` ``(B, 1, L, Lp + L)`` additive
    attention bias (0 visible, -inf hidden); ``mods`` ``(n_layers, 1, S, 6 dim)`` and
    ``final_mod`` ``(1, S, 2 dim)`` adaLN parameters per stream; ``group`` ``(L,)`` int64
    stream of each token. Returns the normalised outputs ``(B, L, dim)`` and the tokens'
    keys and values ``(n_layers, B, H, L, head_dim)``.
    """

    def __call__(self, tokens: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, bias: torch.Tensor, mods: torch.Tensor, final_mod: torch.Tensor,
                 group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...



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


def _per_sample(x: float | torch.Tensor, B: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"{name}: expected a scalar or ({B},) values, got {tuple(t.shape)}")
    if not bool((t > 0).all()):
        raise ValueError(f"{name}: rates must be > 0 Hz, got {t.tolist()}")
    return t


def _per_rate(positions, *rates: torch.Tensor) -> torch.Tensor:
    """``(B, L, 3)`` positions, ``positions(*rates of sample b)`` per sample, computed once per
    distinct tuple of rates (a batch usually has one or two: a Python loop over the
    samples was a tenth of a GPU training step at batch 64)."""
    keys = list(zip(*(r.tolist() for r in rates)))
    done = {k: positions(*k) for k in dict.fromkeys(keys)}
    return torch.stack([done[k] for k in keys])


class Cosmos3(nn.Module):
    def __init__(self, config: Cosmos3Config, video_encoder: VideoEncoder | None = None):
        super().__init__()
        c = self.config = config
        self.tokenizer = ByteTokenizer(c.max_text_len)
        self.text_embed = nn.Embedding(ByteTokenizer.vocab_size, c.dim)
        self.vit = ViTPatchEmbed(c.dim, c.vit_patch, c.vit_merge)
        self.special = nn.Parameter(torch.randn(2, c.dim) * 0.02)  # EOS, BOG
        self.ar_norm = RMSNorm(c.dim)

        if video_encoder is None:
            if c.video_encoder == "patchify":
                video_encoder = RawPatchify()
            elif c.video_encoder == "conv_ae":
                video_encoder = ConvVideoAE(c.latent_channels, c.spatial_compression, c.temporal_compression,
                                            anchored=c.video_anchored, gated=c.video_gated)
            else:
                raise ValueError("video_encoder 'external': pass the ExternalVAE instance to Cosmos3(...)")
        enc = video_encoder
        if (enc.latent_channels, enc.spatial_compression, enc.temporal_compression) != (
                c.latent_channels, c.spatial_compression, c.temporal_compression):
            raise ValueError("video encoder's latent shape does not match the config's "
                             "(latent_channels, spatial_compression, temporal_compression)")
        self.video_encoder = video_encoder
        patch_dim = c.latent_channels * c.dm_patch ** 2
        self.video_in = nn.Linear(patch_dim, c.dim)
        self.video_out = nn.Linear(c.dim, patch_dim)
        nn.init.zeros_(self.video_out.weight)
        nn.init.zeros_(self.video_out.bias)
        self.actions = ActionProjections(c.n_action_domains, c.max_action_width, c.dim)
        self.state_in = StateProjection(c.n_action_domains, c.max_action_width, c.dim) if c.state_input else None
        self.keypoints = (KeypointStem(c.visual_keypoints, c.dim, c.n_views, c.max_text_len,
                                       film_layers=c.keypoint_film_layers)
                          if c.visual_keypoints else None)
        # The action prior: a per-domain mean chunk, plus a head on the observation when the
        # model has one (state, keypoints); zero-initialised, so the flow starts from noise.
        observed = c.max_action_width * c.state_input + (self.keypoints.features if self.keypoints else 0)
        self.prior_bias = (nn.Parameter(torch.zeros(c.n_action_domains, c.max_actions, c.max_action_width))
                           if c.action_prior else None)
        self.prior_head = None
        if c.action_prior and observed:
            hidden = PRIOR_HIDDEN
            self.prior_head = nn.Sequential(nn.Linear(observed, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                            nn.GELU(), nn.Linear(hidden, c.max_actions * c.max_action_width))
            nn.init.zeros_(self.prior_head[-1].weight)
            nn.init.zeros_(self.prior_head[-1].bias)
        self.video_prior = (VideoPrior(c.latent_channels, c.max_actions, c.max_action_width, c.n_action_domains)
                            if c.video_prior else None)
        self.modality = nn.Parameter(torch.randn(2, c.dim) * 0.02)  # video, action
        self.time_embed = TimestepEmbedding(c.dim)
        self.dm_final_norm = RMSNorm(c.dim, affine=False)
        self.dm_final_ada = nn.Linear(c.dim, 2 * c.dim)
        nn.init.zeros_(self.dm_final_ada.weight)
        nn.init.zeros_(self.dm_final_ada.bias)

        self.core = MoTCore(c.dim, c.n_layers, c.n_heads, int(c.dim * c.ffn_mult), c.block_causal)
        self.rope = rope.MRoPE(c.head_dim, c.sections, c.rope_theta)
        self.apply(self._init)
        if self.prior_head is not None:  # unprojected inputs of O(1): PyTorch's fan-in scaling
            for layer in self.prior_head[:3]:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        if self.video_prior is not None:  # a conv net on O(1) inputs, like the prior head
            self.video_prior.reset_parameters()

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.weight.abs().sum() > 0:
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None and m.bias.abs().sum() == 0:
                nn.init.zeros_(m.bias)

    # ---- bookkeeping -------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        return self.special.device

    def domain_ids(self, names: Sequence[str] | None, B: int) -> torch.Tensor:
        if names is None:
            raise ValueError("embodiment: one name per sample is required for modes with actions")
        if len(names) != B:
            raise ValueError(f"embodiment: expected {B} names, got {len(names)}")
        ids = []
        for n in names:
            if n not in self.config.action_domains:
                raise ValueError(f"embodiment {n!r} has no action domain in this model; "
                                 f"known: {list(self.config.action_domains)}")
            ids.append(self.config.action_domains.index(n))
        return torch.tensor(ids, device=self.device)

    # ---- AR prefix ---------------------------------------------------------------------
    def encode_prefix(self, text: Sequence[str], ar_images: torch.Tensor | None = None,
                      add_eos: bool = True) -> tuple[torch.Tensor, PrefixCache, torch.Tensor]:
        """Run the Reasoner once: returns AR hidden states, the K/V prefix cache and the
        text tokens. DM time positions start at the prefix length.

        Samples with the same text and no AR images share one Reasoner pass (a robot batch
        repeats a few instructions; the results are gathered per sample, gradients included).
        """
        if ar_images is None:
            unique = list(dict.fromkeys(text))
            if len(unique) < len(text):
                h, cache, tokens = self.encode_prefix(unique, None, add_eos)
                index = torch.tensor([unique.index(t) for t in text], device=self.device)
                return h.index_select(0, index), cache.select(index), tokens.index_select(0, index)
        tokens, valid = self.tokenizer.encode(text, add_eos=add_eos)
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        B = tokens.shape[0]
        parts = [self.text_embed(tokens)]
        valids = [valid]
        if ar_images is not None:
            self._check_images(ar_images, "ar_images", B)
            img = self.vit(ar_images.to(self.device, self.special.dtype))
            parts.append(img)
            valids.append(torch.ones(img.shape[:2], dtype=torch.bool, device=self.device))
        parts.append(self.special[None].expand(B, 2, -1))
        valids.append(torch.ones(B, 2, dtype=torch.bool, device=self.device))
        x, valid = torch.cat(parts, 1), torch.cat(valids, 1)
        pos = rope.text_positions(x.shape[1]).to(self.device)[None].expand(B, -1, -1)
        cos, sin = self.rope.cos_sin(pos, x.dtype)
        h, cache = self.core.forward_ar(x, cos, sin, valid)
        return self.ar_norm(h), cache, tokens

    def text_logits(self, ar_hidden: torch.Tensor) -> torch.Tensor:
        """LM head (tied to the text embedding) over the AR text positions."""
        return ar_hidden[:, : self.config.max_text_len] @ self.text_embed.weight.T

    # ---- input checks ------------------------------------------------------------------
    def _check_images(self, x: torch.Tensor, name: str, B: int) -> None:
        s = self.config.image_size
        if x.dim() != 5 or x.shape[0] != B or x.shape[2] != 3 or tuple(x.shape[3:]) != (s, s):
            raise ValueError(f"{name}: expected shape ({B}, N, 3, {s}, {s}) float in [-1, 1], got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: non-finite pixel values")

    def _padded_actions(self, batch: WorldBatch, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = batch.actions
        W = self.config.max_action_width
        if a is None:
            raise ValueError("actions: this mode needs actions (B, T, D)")
        if a.dim() != 3 or a.shape[0] != B:
            raise ValueError(f"actions: expected shape ({B}, T, D), got {tuple(a.shape)}")
        if a.shape[1] > self.config.max_actions:
            raise ValueError(f"actions: chunk of {a.shape[1]} steps exceeds max_actions {self.config.max_actions}")
        if not bool(torch.isfinite(a).all()):
            raise ValueError("actions: non-finite values")
        a = a.to(self.device, self.special.dtype)
        if batch.action_mask is not None:
            mask = batch.action_mask.to(self.device, torch.bool)
            if a.shape[2] != W or tuple(mask.shape) != (B, W):
                raise ValueError(f"actions with action_mask: expected ({B}, T, {W}) and mask ({B}, {W})")
            return a * mask[:, None], mask
        D = a.shape[2]
        if D > W:
            raise ValueError(f"actions: width {D} exceeds the padded maximum {W}")
        mask = torch.zeros(B, W, dtype=torch.bool, device=self.device)
        mask[:, :D] = True
        return F.pad(a, (0, W - D)), mask

    def _action_side(self, batch: WorldBatch, B: int, domain: torch.Tensor | None,
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the action tokens read besides attention, and the action prior's input.

        Returns ``(side, observed)``: ``side`` ``(B, dim)`` is added to every action token, the
        proprioception's embedding (``state_input``) plus the observation stem's output
        (``visual_keypoints``: every camera's keypoints, conditioned on the instruction);
        ``observed`` ``(B, W + F)`` is the same observation unprojected (padded state, zero
        where absent, then the stem's ``F`` features), the input of the action prior. Both
        ``None`` when the mode has no actions or neither input applies.

        The instruction reaches the prior through the stem (FiLM on each camera's convs),
        not beside it: given the Reasoner's summary of the instruction next to unconditioned
        keypoints, an earlier prior learned from the instruction and the state and left the
        camera (its action error moved by 0.02 with another episode's frame)."""
        if domain is None:
            return None, None
        c = self.config
        state = self._padded_state(batch, B)
        side = None if state is None or self.state_in is None else self.state_in(state[0], state[1], domain)
        observed: list[torch.Tensor] = []
        if c.state_input:
            observed.append(torch.zeros(B, c.max_action_width, device=self.device, dtype=self.special.dtype)
                            if state is None else state[0])
        if self.keypoints is not None:
            feats, seen = self.keypoints(self._views(batch, B), list(batch.text))
            side = seen if side is None else side + seen
            observed.append(feats)
        return side, (torch.cat(observed, 1) if observed else None)

    def _views(self, batch: WorldBatch, B: int) -> torch.Tensor:
        """The observation stem's input ``(B, n_views, 3, S, S)``: ``batch.views``, or with one
        view and none given, the last context frame."""
        n, s = self.config.n_views, self.config.image_size
        if batch.views is None:
            if n != 1 or batch.video is None or batch.n_context_frames < 1:
                raise ValueError(f"views: a model with visual_keypoints reads {n} current camera frame(s) "
                                 f"(B, {n}, 3, {s}, {s}) wherever it reads or writes actions; "
                                 "pass WorldBatch.views (one view: or a context frame in video)")
            return batch.video[:, batch.n_context_frames - 1: batch.n_context_frames].to(self.device, self.special.dtype)
        v = batch.views
        if v.dim() != 5 or tuple(v.shape[:3]) != (B, n, 3) or tuple(v.shape[3:]) != (s, s):
            raise ValueError(f"views: expected ({B}, {n}, 3, {s}, {s}) float in [-1, 1], got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("views: non-finite pixel values")
        return v.to(self.device, self.special.dtype)

    def action_prior_mean(self, observed: torch.Tensor | None, domain: torch.Tensor, n_actions: int,
                          mask: torch.Tensor) -> torch.Tensor | None:
        """The prior's chunk ``(B, n_actions, W)`` (normalised, zero on padded dimensions) from
        the observation ``observed`` (see :meth:`_action_side`; ``None``: the per-domain
        mean alone); ``None`` without ``action_prior``. Trained by regression to the clean
        chunk; the action flow runs from ``prior + noise`` to the data, so a sample starts
        where the observation says the chunk goes and the flow adds what one mean cannot."""
        if self.prior_bias is None:
            return None
        c = self.config
        mu = self.prior_bias[domain][:, :n_actions]
        if self.prior_head is not None and observed is not None:
            mu = mu + self.prior_head(observed).reshape(-1, c.max_actions, c.max_action_width)[:, :n_actions]
        return mu * mask[:, None].to(mu.dtype)

    def _prior_error(self, mu: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                     batch: WorldBatch) -> torch.Tensor:
        """The prior's regression loss: mean absolute error (L1, as ACT's chunk loss) of ``mu``
        to the clean padded chunk ``actions`` ``(B, T, W)`` over the real dimensions ``mask``
        and real chunk steps."""
        err = (mu - actions).abs()
        return masked_mean(err, mask, self._action_valid(batch, err.shape[:2]))

    def prior_loss(self, batch: WorldBatch, video_latents: torch.Tensor | None = None) -> torch.Tensor:
        """The priors' regression losses alone (scalar), without the towers, for pretraining
        them before the flow (``TrainConfig.prior_steps``): the action prior's (the
        observation path: state, keypoint stem, prior head and per-domain mean; needs actions
        and embodiments, and the current frame with ``visual_keypoints``) plus the video
        prior's (:meth:`video_prior_loss`; on ``video_latents`` ``(B, F', C, h, w)`` when
        given, e.g. cached, else the clip encoded without gradient; skipped for a batch
        without future frames). Needs ``action_prior`` or ``video_prior``."""
        if self.prior_bias is None and self.video_prior is None:
            raise ValueError("prior_loss: the model has no prior (Cosmos3Config.action_prior / video_prior)")
        B = batch.batch_size
        actions, mask = self._padded_actions(batch, B)
        domain = self.domain_ids(batch.embodiment, B)
        loss = actions.new_zeros(())
        if self.prior_bias is not None:
            _, observed = self._action_side(batch, B, domain)
            mu = self.action_prior_mean(observed, domain, actions.shape[1], mask)
            assert mu is not None
            loss = loss + self._prior_error(mu, actions, mask, batch)
        if self.video_prior is not None and batch.video is not None and batch.n_context_frames < batch.video.shape[1]:
            loss = loss + self.video_prior_loss(batch, video_latents)
        elif self.prior_bias is None:
            raise ValueError("prior_loss: the video prior needs clips with context and future frames "
                             "(window.n_future > 0), and the model has no action prior")
        return loss

    def video_prior_loss(self, batch: WorldBatch, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The video prior's regression loss (scalar): MSE of its prediction to the clip's
        future latents, from the context latents, the clean actions and the embodiments.
        ``latents`` ``(B, F', C, h, w)``: the clip's latents (treated as fixed targets);
        ``None`` encodes ``batch.video`` without gradient."""
        if self.video_prior is None:
            raise ValueError("video_prior_loss: the model has no video prior (Cosmos3Config.video_prior)")
        B = batch.batch_size
        n_ctx = batch.n_context_frames
        if batch.video is None or n_ctx < 1:
            raise ValueError("video: the video prior needs context and future frames (B, F, 3, H, W)")
        if latents is None:
            self._check_images(batch.video, "video", B)
            with torch.no_grad():
                latents = self.video_encoder.encode(batch.video.to(self.device, self.special.dtype))
        n_ctx_lat = self._context_latents(n_ctx)
        if latents.shape[1] <= n_ctx_lat:
            raise ValueError(f"video: the video prior needs future frames after the {n_ctx} context frames")
        actions, _ = self._padded_actions(batch, B)
        latents = latents.detach().to(self.device, self.special.dtype)
        mu = self.video_prior(latents[:, :n_ctx_lat], actions, self.domain_ids(batch.embodiment, B),
                              latents.shape[1] - n_ctx_lat)
        return F.mse_loss(mu, latents[:, n_ctx_lat:])

    def prior_parameters(self) -> list[nn.Parameter]:
        """The parameters :meth:`prior_loss` trains (``[]`` without a prior): the action
        prior's own and the keypoint stem's, and the video prior's."""
        params: list[nn.Parameter] = []
        if self.prior_bias is not None:
            mods = [m for m in (self.keypoints, self.prior_head) if m is not None]
            params += [self.prior_bias] + [p for m in mods for p in m.parameters()]
        if self.video_prior is not None:
            params += list(self.video_prior.parameters())
        return params

    def _padded_state(self, batch: WorldBatch, B: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The proprioception zero-padded to ``(B, W)`` (masked entries zeroed) and whether
        each sample has any ``(B,)``; ``None`` without ``state_input`` or without a state."""
        if not self.config.state_input or batch.state is None:
            return None
        W = self.config.max_action_width
        x = torch.as_tensor(batch.state, device=self.device, dtype=self.special.dtype)
        if x.dim() != 2 or x.shape[0] != B or x.shape[1] > W:
            raise ValueError(f"state: expected ({B}, P) normalised proprioception with P <= {W}, "
                             f"got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("state: non-finite values")
        mask = batch.state_mask
        if mask is None:
            mask = torch.ones(x.shape, dtype=torch.bool)
        mask = torch.as_tensor(mask, device=self.device, dtype=torch.bool)
        if tuple(mask.shape) != tuple(x.shape):
            raise ValueError(f"state_mask: expected {tuple(x.shape)} bool like state, got {tuple(mask.shape)}")
        x, mask = F.pad(x, (0, W - x.shape[1])), F.pad(mask, (0, W - mask.shape[1]))
        return x * mask, mask.any(1)

    def _action_valid(self, batch: WorldBatch, shape: torch.Size) -> torch.Tensor | None:
        v = batch.action_valid
        if v is None:
            return None
        v = torch.as_tensor(v, device=self.device)
        if v.dtype != torch.bool or tuple(v.shape) != tuple(shape):
            raise ValueError(f"action_valid: expected ({shape[0]}, {shape[1]}) bool (True = a real chunk step), "
                             f"got {tuple(v.shape)} {v.dtype}")
        return v

    def _context_latents(self, n_context_frames: int) -> int:
        """Latent frames of ``n_context_frames`` context frames (the first alone, then groups
        of the temporal compression); 0 without context."""
        return 0 if n_context_frames == 0 else 1 + (n_context_frames - 1) // self.config.temporal_compression

    def _split_video(self, batch: WorldBatch, B: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Latents of the whole clip ``(B, F', C, h, w)``, the number of context latents, and
        (training a trainable encoder) its reconstruction loss."""
        v = batch.video
        if v is None:
            raise ValueError("video: this mode needs video (B, F, 3, H, W)")
        self._check_images(v, "video", B)
        tc = self.config.temporal_compression
        n_ctx = batch.n_context_frames
        if n_ctx == 0:  # the whole clip is one (future) stream
            check_frames(v.shape[1], tc, "video")
        else:
            check_frames(n_ctx, tc, "video context")
        n_future = v.shape[1] - n_ctx
        if n_ctx and (n_future < 0 or n_future % tc != 0):
            raise ValueError(f"video: {n_future} future frames do not fit the temporal compression {tc}; "
                             f"expected a multiple of {tc}")
        video = v.to(self.device, self.special.dtype)
        recon = None
        if self.training and any(p.requires_grad for p in self.video_encoder.parameters()):
            # A trainable encoder learns from reconstruction only; the flow sees detached
            # latents, otherwise it could shrink them to make the flow loss trivial. The
            # round trip (forward and backward through the full-resolution convolutions)
            # runs on the first ``recon_samples`` clips; the rest are encoded without grad.
            n = B if self.config.flow.recon_samples <= 0 else min(B, self.config.flow.recon_samples)
            lat = self.video_encoder.encode(video[:n])
            recon = F.mse_loss(self.video_encoder.decode(lat, anchor=video[:n, 0]), video[:n])
            lat = lat.detach()
            if n < B:
                with torch.no_grad():
                    lat = torch.cat([lat, self.video_encoder.encode(video[n:])])
        else:
            lat = self.video_encoder.encode(video)
        n_ctx_lat = self._context_latents(n_ctx)
        return lat, n_ctx_lat, recon

    # ---- layout ------------------------------------------------------------------------
    def _layout(self, mode: Mode, B: int, t0: float, fps: torch.Tensor, hz: torch.Tensor,
                video_tokens: dict[str, torch.Tensor], n_ctx_lat: int, actions: torch.Tensor | None,
                domain: torch.Tensor | None, times: dict[str, torch.Tensor],
                state: torch.Tensor | None = None) -> _Layout:
        """Embed streams in the mode's order. ``video_tokens``/``actions`` hold the inputs as
        the network sees them (x_t for noisy streams); ``times`` the per-sample flow times;
        ``state`` the proprioception's embedding ``(B, dim)``, added to the action tokens.
        (Generation lays out once per request and then re-embeds only the noisy streams.)"""
        c = self.config
        g = c.latent_size // c.dm_patch
        parts, pos, noisy, time, group, spans = [], [], [], [], [], {}
        start = 0
        for index, (stream, is_noisy) in enumerate(mode.streams):
            if stream == "actions":
                assert actions is not None and domain is not None
                emb = self._embed(stream, actions, domain, state)
                pos.append(_per_rate(lambda h, f: rope.action_positions(
                    actions.shape[1], h, t0 + self._t_now(n_ctx_lat, f)), hz, fps))
            else:
                tok = video_tokens[stream]
                emb = self._embed(stream, tok, domain)
                n_frames = tok.shape[1] // c.tokens_per_latent_frame
                first = 0 if stream == "video_context" else n_ctx_lat
                pos.append(_per_rate(lambda f: rope.video_positions(
                    n_frames, g, g, f, c.temporal_compression, t0, first), fps))
            L = emb.shape[1]
            parts.append(emb)
            noisy.append(torch.full((B, L), is_noisy, dtype=torch.bool, device=self.device))
            time.append(times[stream].to(self.device, torch.float32) if is_noisy
                        else torch.ones(B, device=self.device))
            group.append(torch.full((L,), index, dtype=torch.long))
            spans[stream] = slice(start, start + L)
            start += L
        all_pos = torch.cat(pos, 1).to(self.device)
        return _Layout(torch.cat(parts, 1), all_pos, torch.cat(noisy, 1), torch.stack(time, 1),
                       torch.cat(group).to(self.device), spans)

    def _embed(self, stream: str, x: torch.Tensor, domain: torch.Tensor | None,
               state: torch.Tensor | None = None) -> torch.Tensor:
        """One stream's inputs (latent tokens or padded actions) -> ``(B, L, dim)`` tokens;
        action tokens also carry the state embedding ``(B, dim)`` when given."""
        if stream == "actions":
            emb = self.actions.embed(x, domain) + self.modality[1]
            return emb if state is None else emb + state[:, None]
        return self.video_in(x) + self.modality[0]

    def _t_now(self, n_ctx_lat: int, fps: float) -> float:
        """Position offset of the current (last context) frame."""
        if n_ctx_lat == 0:
            return 0.0
        c = self.config
        return (n_ctx_lat - 1) * rope.temporal_step(fps / c.temporal_compression, c.time_base_tps)

    def _run_dm(self, lay: _Layout, prefix: PrefixCache, select: slice | None = None,
                mods: tuple[torch.Tensor, torch.Tensor] | None = None, backend: GeneratorBackend | None = None,
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The Generator tower over ``lay``'s tokens (``select``: a slice of them). ``mods``:
        the adaLN parameters per stream already looked up (:class:`ModulationTable`);
        ``backend``: run the tower there instead (needs ``mods``)."""
        sl = select or slice(None)
        tokens, noisy = lay.tokens[:, sl], lay.noisy[:, sl]
        start, stop, _ = sl.indices(lay.tokens.shape[1])
        inside = [i for i, span in enumerate(lay.spans.values()) if span.start < stop and span.stop > start]
        group = inside[0] if len(inside) == 1 else lay.group[sl]  # one stream: broadcast its row
        cos, sin = lay.rope if lay.rope is not None else self.rope.cos_sin(lay.pos, tokens.dtype)
        valid = torch.ones(noisy.shape, dtype=torch.bool, device=self.device)
        if backend is not None:
            if mods is None:
                raise ValueError("a Generator backend needs the looked-up modulation (not the plain path)")
            key = (id(prefix), start, stop)
            if key not in lay.biases:
                lay.biases[key] = attention_bias(dm_mask(prefix.valid, valid, noisy, self.core.block_causal),
                                                 tokens.dtype)
            bias = lay.biases[key]
            pk, pv = prefix.stacked()
            h, k, v = backend(tokens, pk, pv, cos[:, sl], sin[:, sl], bias, mods[0], mods[1], lay.group[sl])
            return h, list(k.unbind(0)), list(v.unbind(0))
        # One time embedding per stream (B, S, dim), unless the modulation is looked up.
        temb = self.time_embed(lay.stream_time) if mods is None else None
        h, k, v = self.core.forward_dm(tokens, temb, cos[:, sl], sin[:, sl], prefix, valid, noisy, group,
                                       None if mods is None else mods[0])
        shift, scale = modulation(self.dm_final_ada, temb, group, None if mods is None else mods[1]).split(
            [self.config.dim] * 2, -1)
        return self.dm_final_norm(h) * (1 + scale) + shift, k, v

    def _heads(self, h: torch.Tensor, lay: _Layout, offset: int, domain: torch.Tensor | None,
               streams: Sequence[str], video_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Output heads of ``streams`` (the noisy ones: clean streams have no target) from the
        Generator outputs ``h``, which start at token ``offset`` of ``lay``. ``video_scale``:
        the video flow's starting-noise std (:meth:`video_noise_scale`)."""
        out = {}
        for stream in streams:
            sl = lay.spans[stream]
            part = h[:, sl.start - offset: sl.stop - offset]
            out[stream] = (self.actions.project(part, domain) * self.action_noise_scale if stream == "actions"
                           else self.video_out(part) * video_scale)
        return out

    @property
    def action_noise_scale(self) -> float:
        """Std of the action flow's starting noise (``flow.prior_noise`` with an action prior,
        else 1); the action head's velocity is in these units times it."""
        return self.config.flow.prior_noise if self.prior_bias is not None else 1.0

    def video_prior_applies(self, mode: Mode) -> bool:
        """Whether ``mode``'s video flow starts from the video prior: a model with
        ``video_prior`` generating future frames from given context and actions (forward
        dynamics)."""
        return (self.video_prior is not None and "video_future" in mode.noisy
                and "video_context" in mode.clean and "actions" in mode.clean)

    def video_noise_scale(self, mode: Mode) -> float:
        """Std of the video flow's starting noise in ``mode`` (``flow.prior_noise`` where the
        video prior applies, else 1); the video head's velocity is in these units times it."""
        return self.config.flow.prior_noise if self.video_prior_applies(mode) else 1.0

    def video_prior_tokens(self, context: torch.Tensor, actions: torch.Tensor, domain: torch.Tensor,
                           n_future: int) -> torch.Tensor:
        """The video prior's future latents as DM tokens ``(B, n_future * tokens_per_latent_frame,
        C * p * p)`` from the context tokens ``(B, n_ctx * tokens_per_latent_frame, C * p * p)``
        and the padded actions ``(B, T, max_action_width)``."""
        c = self.config
        assert self.video_prior is not None
        g, tpf = c.latent_size, c.tokens_per_latent_frame
        ctx = unpatchify(context, context.shape[1] // tpf, c.latent_channels, g, g, c.dm_patch)
        return patchify(self.video_prior(ctx, actions, domain, n_future), c.dm_patch)

    def encoder_loss(self, batch: WorldBatch) -> torch.Tensor:
        """The trainable video encoder's reconstruction loss (MSE of the round trip, later
        groups decoded onto the real first frame) plus, with ``video_prior`` and a batch with
        context, future frames and actions, ``flow.prior_loss_weight`` times the prior's
        regression loss on the detached latents: the prior learns while the encoder does
        (``TrainConfig.encoder_steps``). Scalar."""
        if batch.video is None:
            raise ValueError("video: the encoder's pretraining needs video (B, F, 3, H, W)")
        B = batch.batch_size
        self._check_images(batch.video, "video", B)
        enc = self.video_encoder
        video = batch.video.to(self.device, self.special.dtype)
        lat = enc.encode(video)
        loss = F.mse_loss(enc.decode(lat, anchor=video[:, 0]), video)
        n_ctx_lat = self._context_latents(batch.n_context_frames)
        if self.video_prior is not None and batch.actions is not None and 0 < n_ctx_lat < lat.shape[1]:
            loss = loss + self.config.flow.prior_loss_weight * self.video_prior_loss(batch, lat)
        return loss

    def modulation_table(self, times: torch.Tensor) -> "ModulationTable":
        """Every layer's adaLN parameters for the flow times ``times`` ``(U,)``, computed in
        one pass (see :class:`ModulationTable`)."""
        times = times.to(self.device, torch.float32)
        temb = self.time_embed(times)
        return ModulationTable([float(t) for t in times.cpu()],
                               [layer.generator.ada(temb) for layer in self.core.layers], self.dm_final_ada(temb))

    # ---- training ----------------------------------------------------------------------
    def forward(self, mode: str | Mode, batch: WorldBatch, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Same as :meth:`loss`; ``forward`` is what DDP/FSDP wrappers call."""
        return self.loss(mode, batch, generator)

    def loss(self, mode: str | Mode, batch: WorldBatch, generator: torch.Generator | None = None,
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss on exactly the mode's noisy streams (+ optional text CE).

        Video and actions get independent noise levels per sample. Returns the weighted
        total and its parts (floats, for logging).
        """
        mode = get_mode(mode)
        fc = self.config.flow
        B = batch.batch_size
        text = list(batch.text)
        if self.training and fc.text_dropout > 0:
            drop = torch.rand(B, generator=generator) < fc.text_dropout
            text = ["" if d else t for t, d in zip(text, drop.tolist())]
        ar_h, prefix, tokens = self.encode_prefix(text, batch.ar_images)
        parts: dict[str, torch.Tensor] = {}
        if mode.text_loss or fc.text_loss_weight > 0:
            logits = self.text_logits(ar_h)[:, :-1]
            target = tokens[:, 1:].masked_fill(tokens[:, 1:] == ByteTokenizer.PAD, -100)
            parts["text"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
        if mode.streams:
            fps = _per_sample(batch.fps, B, "fps")
            hz = _per_sample(batch.control_hz, B, "control_hz")
            clean, noise, inputs, domain, mask, n_ctx_lat, recon = self._clean_streams(mode, batch, B, generator)
            if recon is not None:
                parts["video_recon"] = recon
            side, observed = self._action_side(batch, B, domain)
            if "actions" in mode.noisy:
                mu = self.action_prior_mean(observed, domain, clean["actions"].shape[1], mask)
                if mu is not None:  # the prior learns by regression; the flow starts from it
                    parts["action_prior"] = self._prior_error(mu, clean["actions"], mask, batch)
                    noise["actions"] = noise["actions"] * self.action_noise_scale + mu.detach()
            vscale = self.video_noise_scale(mode)
            if self.video_prior is not None and "actions" in clean and {"video_context", "video_future"} <= set(clean):
                # the prior learns from every mode that holds the clip and its actions
                n_fut = clean["video_future"].shape[1] // self.config.tokens_per_latent_frame
                vmu = self.video_prior_tokens(clean["video_context"], clean["actions"], domain, n_fut)
                parts["video_prior"] = F.mse_loss(vmu, clean["video_future"])
                if self.video_prior_applies(mode):  # forward dynamics starts from it
                    noise["video_future"] = noise["video_future"] * vscale + vmu.detach()
            times = {s: sample_time((B,), fc, generator).to(self.device) for s in mode.noisy}
            for s in mode.noisy:
                inputs[s] = interpolate(clean[s], noise[s], times[s])
            t0 = float(prefix.valid.shape[1])
            lay = self._layout(mode, B, t0, fps, hz, {k: v for k, v in inputs.items() if k != "actions"},
                               n_ctx_lat, inputs.get("actions"), domain, times, side)
            h, _, _ = self._run_dm(lay, prefix)
            pred = self._heads(h, lay, 0, domain, mode.noisy, vscale)
            for s in mode.noisy:
                err = (pred[s] - (clean[s] - noise[s])) ** 2
                if s == "actions":  # in units of the starting noise's std
                    err = err / self.action_noise_scale ** 2
                    parts["actions"] = masked_mean(err, mask, self._action_valid(batch, err.shape[:2]))
                else:
                    parts[s] = err.mean() / vscale ** 2
        weights = {"text": fc.text_loss_weight if not mode.text_loss else max(fc.text_loss_weight, 1.0),
                   "video_recon": fc.recon_loss_weight,
                   "actions": fc.action_loss_weight, "action_prior": fc.prior_loss_weight,
                   "video_prior": fc.prior_loss_weight,
                   "video_future": fc.video_loss_weight, "video_context": fc.video_loss_weight}
        if not parts:
            raise ValueError(f"mode {mode.name!r} has nothing to learn from")
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _video_streams(self, mode: Mode, batch: WorldBatch, B: int, need_future: bool,
                       ) -> tuple[dict[str, torch.Tensor], int, torch.Tensor | None]:
        """Latent tokens of the clip split into ``video_context`` (if the mode has it) and
        ``video_future`` (if ``need_future``), the number of context latent frames and the
        encoder's reconstruction loss (``None`` unless training a trainable encoder)."""
        if not mode.has("video_context"):
            batch = WorldBatch(**{**batch.__dict__, "n_context_frames": 0})
        lat, n_ctx_lat, recon = self._split_video(batch, B)
        tokens = patchify(lat, self.config.dm_patch)
        n = n_ctx_lat * self.config.tokens_per_latent_frame
        out = {}
        if mode.has("video_context"):
            out["video_context"] = tokens[:, :n]
        if need_future:
            if tokens.shape[1] == n:
                raise ValueError("video: this mode needs future frames after the context")
            out["video_future"] = tokens[:, n:]
        return out, n_ctx_lat, recon

    def _clean_streams(self, mode: Mode, batch: WorldBatch, B: int, generator: torch.Generator | None):
        """Clean targets (tokens / padded actions), noise of the same shapes, inputs, action
        domains and mask, context latent count, and the encoder's reconstruction loss."""
        clean: dict[str, torch.Tensor] = {}
        domain = mask = None
        n_ctx_lat = 0
        recon = None
        if mode.has("video_context") or mode.has("video_future"):
            video, n_ctx_lat, recon = self._video_streams(mode, batch, B, mode.has("video_future"))
            clean.update(video)
        if mode.has("actions"):
            clean["actions"], mask = self._padded_actions(batch, B)
            domain = self.domain_ids(batch.embodiment, B)
        noise = {k: torch.randn(v.shape, generator=generator).to(v) for k, v in clean.items()}
        if "actions" in noise:
            noise["actions"] = noise["actions"] * mask[:, None]
        return clean, noise, dict(clean), domain, mask, n_ctx_lat, recon

    # ---- generation --------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, mode: str | Mode, batch: WorldBatch, *, steps: int = 4,
                 sampler: Literal["euler", "heun"] = "euler", guidance: float = 1.0,
                 shift: float | None = None, seed: int = 0, temperature: float = 1.0,
                 n_actions: int | None = None,
                 action_dim: int | None = None, n_future_frames: int | None = None,
                 plain: bool = False, action_prefix: torch.Tensor | None = None,
                 prefix_cache: dict | None = None, backend: GeneratorBackend | None = None,
                 ) -> dict[str, torch.Tensor]:
        """Sample the mode's noisy streams given its clean ones.

        The AR prefix is computed once (twice with guidance: with and without text); with
        ``block_causal`` the clean DM tokens are also run once and cached, and each step runs
        only the noisy tokens. Returns ``actions`` ``(B, T, D)`` (D from ``action_dim``, the
        given actions or mask) and/or ``video`` ``(B, F_future, 3, H, W)`` in pixels.
        Deterministic for a given ``seed``.

        ``steps=0`` (a policy mode with an action prior, or forward dynamics with a video
        prior) returns the sampler's starting point without running either tower: at
        temperature 0 the prior's regressed chunk, the model's cheapest action (a conv stem
        and an MLP) and, early in training, often its most accurate one; or the video
        prior's regressed future frames.

        ``temperature`` scales the starting noise (1: sample the learned distribution; 0: start
        from its centre, so a one-step Euler sample is the model's estimate of the mean, and
        more steps move towards a mode). A policy imitating a deterministic expert, or a world
        model scored by PSNR, can trade diversity for accuracy with values below 1.

        Per-request work is done once, not per step: token positions and their RoPE angles,
        the adaLN modulation for every flow time of the grid (:class:`ModulationTable`,
        cached in ``prefix_cache`` across requests), and with ``block_causal`` the clean DM
        tokens' K/V. ``plain=True`` recomputes all of it at every step: the reference path
        the tests compare the optimised default against. ``backend``: run the Generator
        tower there (:class:`GeneratorBackend`, e.g. onnxruntime) instead of in torch.

        ``action_prefix`` ``(B, k, D)`` (normalised, like training actions): inpainting-style
        continuation. The first ``k`` generated actions are pinned to it (their velocity is
        the exact one towards it, so the sampled chunk starts with exactly these actions)
        and the rest are sampled consistently with them, e.g. the not-yet-executed tail of
        the previous chunk when replanning.

        ``prefix_cache``: a dict the caller keeps across calls (e.g. one per episode); the AR
        prefix K/V of a text (without AR images) is computed once and reused while the
        instruction stays the same. The caller owns its lifetime: clear it when the weights
        change.
        """
        mode = get_mode(mode)
        if not mode.noisy:
            if mode.text_loss:
                return {"text": self.generate_text(batch.text, batch.ar_images)}  # type: ignore[dict-item]
            raise ValueError(f"mode {mode.name!r} generates nothing")
        c = self.config
        B = batch.batch_size
        gen = torch.Generator().manual_seed(seed)
        fps = _per_sample(batch.fps, B, "fps")
        hz = _per_sample(batch.control_hz, B, "control_hz")
        shift = c.flow.shift if shift is None else shift

        # Clean streams and the shapes of the noisy ones.
        clean: dict[str, torch.Tensor] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        domain = mask = None
        n_ctx_lat = 0
        if mode.has("video_context") or mode.has("video_future"):
            if mode.has("video_context"):
                video, n_ctx_lat, _ = self._video_streams(mode, batch, B, "video_future" in mode.clean)
                clean.update(video)
            if "video_future" in mode.noisy:
                tc = c.temporal_compression
                if n_future_frames is None or n_future_frames < 1:
                    raise ValueError("n_future_frames: how many frames to generate is required")
                if n_ctx_lat:  # frames after the context: groups of tc
                    if n_future_frames % tc:
                        raise ValueError(f"n_future_frames: {n_future_frames} is not a multiple of {tc}")
                    n_lat = n_future_frames // tc
                else:  # text-to-video: a whole clip of 1 + k * tc frames
                    n_lat = check_frames(n_future_frames, tc, "n_future_frames")
                shapes["video_future"] = (B, n_lat * c.tokens_per_latent_frame, c.latent_channels * c.dm_patch ** 2)
        if mode.has("actions"):
            domain = self.domain_ids(batch.embodiment, B)
            if "actions" in mode.clean or batch.actions is not None:
                a, mask = self._padded_actions(batch, B)
                if "actions" in mode.clean:
                    clean["actions"] = a
                n_actions = n_actions or a.shape[1]
            else:
                if action_dim is None and batch.action_mask is None:
                    raise ValueError("action_dim: needed to generate actions without given actions or mask")
                mask = torch.zeros(B, c.max_action_width, dtype=torch.bool, device=self.device)
                if batch.action_mask is not None:
                    mask = batch.action_mask.to(self.device, torch.bool)
                else:
                    if action_dim > c.max_action_width:
                        raise ValueError(f"action_dim {action_dim} exceeds the padded maximum {c.max_action_width}")
                    mask[:, :action_dim] = True
            if "actions" in mode.noisy:
                if not n_actions or not 1 <= n_actions <= c.max_actions:
                    raise ValueError(f"n_actions: expected 1..{c.max_actions}, got {n_actions}")
                shapes["actions"] = (B, n_actions, c.max_action_width)

        video_mu = None
        if self.video_prior_applies(mode):
            n_fut = shapes["video_future"][1] // c.tokens_per_latent_frame
            video_mu = self.video_prior_tokens(clean["video_context"], clean["actions"], domain, n_fut)
        if steps == 0:
            if video_mu is not None:
                return self._prior_video(batch, clean, shapes, gen, temperature, video_mu)
            return self._prior_chunk(mode, batch, B, shapes, gen, temperature, domain, mask, action_prefix)
        text = list(batch.text)
        use_cfg = guidance != 1.0
        if use_cfg:
            text = text + [""] * B
        key = (tuple(text), str(self.device)) if prefix_cache is not None and batch.ar_images is None else None
        if key is not None and key in prefix_cache:
            prefix = prefix_cache[key]
        else:
            _, prefix, _ = self.encode_prefix(text, None if batch.ar_images is None else
                                              (torch.cat([batch.ar_images] * 2) if use_cfg else batch.ar_images))
            if key is not None:
                if len(prefix_cache) >= 64:  # a bounded cache: drop the oldest instruction
                    prefix_cache.pop(next(iter(prefix_cache)))
                prefix_cache[key] = prefix
        nb = 2 if use_cfg else 1

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.cat([x] * nb)

        clean_r = {k: rep(v) for k, v in clean.items()}
        dom_r, fps_r, hz_r = rep(domain), torch.cat([fps] * nb), torch.cat([hz] * nb)
        side, observed = self._action_side(batch, B, domain)
        state_r = rep(side)
        mask_r = rep(mask)
        t0 = float(prefix.valid.shape[1])
        noise = self._starting_noise(shapes, gen, temperature, observed, domain, mask, video_mu)
        vscale = self.video_noise_scale(mode)
        names = list(mode.noisy)
        pinned = self._pinned_prefix(action_prefix, mode, noise.get("actions"))
        # The sampler integrates one flat state per sample: streams flattened and concatenated.
        sizes = [noise[k][0].numel() for k in names]

        def split(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: part.reshape(noise[k].shape) for k, part in zip(names, torch.split(x, sizes, dim=1))}

        # Positions, RoPE angles and the clean streams' embeddings are the same at every
        # step: the first layout keeps them and later steps embed only the noisy streams
        # (``plain``: everything laid out again at every step).
        fixed: dict[str, _Layout] = {}

        def layout(x_noisy: dict[str, torch.Tensor], t: torch.Tensor) -> _Layout:
            first = fixed.get("layout")
            if first is not None:  # only the noisy streams change: embed them, keep the rest
                tokens = torch.cat([first.tokens[:, :first_noisy]] + [self._embed(k, rep(x_noisy[k]), dom_r, state_r)
                                                                    for k in names], 1)
                stream_time = first.stream_time.clone()
                stream_time[:, first_noisy_stream:] = t.to(stream_time)
                return dataclasses.replace(first, tokens=tokens, stream_time=stream_time)
            inputs = {**clean_r, **{k: rep(v) for k, v in x_noisy.items()}}
            times = {k: t.expand(B * nb).to(self.device) for k in names}
            lay = self._layout(mode, B * nb, t0, fps_r, hz_r,
                               {k: v for k, v in inputs.items() if k != "actions"}, n_ctx_lat,
                               inputs.get("actions"), dom_r, times, state_r)
            if not plain:  # positions, RoPE angles and clean embeddings are fixed from now on
                lay.rope = self.rope.cos_sin(lay.pos, lay.tokens.dtype)
                fixed["layout"] = lay
            return lay

        # Clean streams precede noisy ones (a rule of modes), so the noisy ones are a tail.
        first_noisy_stream = len(mode.clean)
        first_noisy = 0  # token index where the noisy tail starts, set by the first layout

        # The adaLN modulation of every flow time the sampler visits, in one pass; kept in
        # the caller's cache across requests (it depends on the weights and the grid only).
        table = None
        if plain and backend is not None:
            raise ValueError("backend: the plain reference path runs in torch only")
        if not plain:
            tkey = ("modulation", steps, float(shift), str(self.device), self.special.dtype)
            table = prefix_cache.get(tkey) if prefix_cache is not None else None
            if table is None:
                table = self.modulation_table(torch.cat([time_grid(steps, shift), torch.ones(1)]))
                if prefix_cache is not None:
                    prefix_cache[tkey] = table
        def mods(t: float) -> tuple[torch.Tensor, torch.Tensor] | None:
            if table is None:
                return None
            return table.take([t if s in mode.noisy else 1.0 for s, _ in mode.streams])

        # Block-causal: clean DM tokens see no noisy key, so run them once and cache their K/V.
        noisy_start = None
        dm_prefix = prefix
        if not plain:
            probe = layout({k: noise[k] for k in names}, torch.zeros(()))
            first_noisy = min(probe.spans[k].start for k in names)
        if c.block_causal and mode.clean and not plain:
            noisy_start = first_noisy
            _, ck, cv = self._run_dm(probe, prefix, slice(0, noisy_start), mods(1.0), backend)
            dm_prefix = prefix.extend(ck, cv, torch.ones(B * nb, noisy_start, dtype=torch.bool, device=self.device))

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            lay = layout(split(x), t)
            m = mods(float(t))
            if noisy_start is not None:
                h, _, _ = self._run_dm(lay, dm_prefix, slice(noisy_start, None), m, backend)
                pred = self._heads(h, lay, noisy_start, dom_r, names, vscale)
            else:
                h, _, _ = self._run_dm(lay, prefix, None, m, backend)
                pred = self._heads(h, lay, 0, dom_r, names, vscale)
            v = {k: pred[k] for k in names}
            if "actions" in v:
                v["actions"] = v["actions"] * mask_r[:, None]
            if use_cfg:
                v = {k: val[B:] + guidance * (val[:B] - val[B:]) for k, val in v.items()}
            if pinned is not None:  # exact velocity towards the known actions
                v["actions"] = v["actions"].clone()
                v["actions"][:, :pinned.shape[1]] = (pinned - noise["actions"][:, :pinned.shape[1]]) * mask[:, None]
            return torch.cat([v[k].flatten(1) for k in names], 1)

        x0 = torch.cat([noise[k].flatten(1) for k in names], 1)
        x1 = split(integrate(velocity, x0, steps, shift, sampler))
        out: dict[str, torch.Tensor] = {}
        if "actions" in x1:
            out.update(self._action_output(x1["actions"], mask))
        if "video_future" in x1:
            out["video"] = self._decode_future(x1["video_future"], clean, batch)
        return out

    def _decode_future(self, future: torch.Tensor, clean: dict[str, torch.Tensor], batch: WorldBatch) -> torch.Tensor:
        """Generated future tokens -> frames ``(B, F, 3, H, W)``, decoded after the clean
        context (when the mode has one) onto the real first frame."""
        ctx = clean.get("video_context")
        anchor = None if ctx is None else batch.video[:, 0].to(self.device, self.special.dtype)
        return self.decode_video(future, ctx, anchor)

    def _starting_noise(self, shapes: dict[str, tuple[int, ...]], gen: torch.Generator, temperature: float,
                        observed: torch.Tensor | None, domain: torch.Tensor | None, mask: torch.Tensor | None,
                        video_mu: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The sampler's starting point per noisy stream: ``temperature`` times unit noise,
        for actions masked to the real dimensions and, with an action prior, scaled by
        ``flow.prior_noise`` around the prior's chunk; for future video, with ``video_mu``
        (the video prior's tokens), scaled the same way around them."""
        check_temperature(temperature)
        noise = {k: (float(temperature) * torch.randn(s, generator=gen)).to(self.device, self.special.dtype)
                 for k, s in shapes.items()}
        if "actions" in noise:
            assert domain is not None and mask is not None
            noise["actions"] = noise["actions"] * mask[:, None]
            mu = self.action_prior_mean(observed, domain, noise["actions"].shape[1], mask)
            if mu is not None:  # the flow starts from the learned prior (temperature 0: at it)
                noise["actions"] = noise["actions"] * self.action_noise_scale + mu
        if video_mu is not None:
            noise["video_future"] = noise["video_future"] * self.config.flow.prior_noise + video_mu
        return noise

    def _pinned_prefix(self, action_prefix: torch.Tensor | None, mode: Mode, actions: torch.Tensor | None,
                       ) -> torch.Tensor | None:
        """``action_prefix`` ``(B, k, D)`` checked against the generated chunk ``actions``
        ``(B, T, W)`` and padded to ``(B, k, W)``; ``None`` without a prefix."""
        if action_prefix is None:
            return None
        if actions is None:
            raise ValueError(f"action_prefix: mode {mode.name!r} does not generate actions")
        B, n_act, W = actions.shape
        ap = torch.as_tensor(action_prefix, dtype=actions.dtype, device=self.device)
        if ap.ndim != 3 or ap.shape[0] != B or not 1 <= ap.shape[1] <= n_act or ap.shape[2] > W:
            raise ValueError(f"action_prefix: expected (B={B}, k<={n_act}, D) actions, got {tuple(ap.shape)}")
        if not bool(torch.isfinite(ap).all()):
            raise ValueError("action_prefix: non-finite values")
        pinned = torch.zeros(B, ap.shape[1], W, dtype=ap.dtype, device=self.device)
        pinned[..., :ap.shape[2]] = ap
        return pinned

    def _action_output(self, actions: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"actions", "action_mask"}`` of a generated padded chunk ``(B, T, W)``: cut to the
        real width when every sample has the same one."""
        W = self.config.max_action_width
        D = int(mask[0].sum()) if bool((mask == mask[0]).all()) else W
        return {"actions": actions[..., :D] if D < W else actions, "action_mask": mask}

    def _prior_chunk(self, mode: Mode, batch: WorldBatch, B: int, shapes: dict[str, tuple[int, ...]],
                     gen: torch.Generator, temperature: float, domain: torch.Tensor | None,
                     mask: torch.Tensor | None, action_prefix: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``generate(steps=0)``: the flow's starting point without running either tower, the
        action prior's chunk (plus ``temperature * prior_noise`` noise), a pinned
        ``action_prefix`` in place. Only for modes that generate actions alone."""
        if set(mode.noisy) != {"actions"} or self.prior_bias is None:
            raise ValueError("steps: 0 returns a prior's output without running the towers; it needs a mode "
                             "that generates actions alone (e.g. 'policy_actions') and a model with action_prior, "
                             "or 'forward_dynamics' and a model with video_prior (mode "
                             f"{mode.name!r}, action_prior={self.config.action_prior}, "
                             f"video_prior={self.config.video_prior})")
        _, observed = self._action_side(batch, B, domain)
        start = self._starting_noise(shapes, gen, temperature, observed, domain, mask)["actions"]
        pinned = self._pinned_prefix(action_prefix, mode, start)
        assert mask is not None
        if pinned is not None:
            start = start.clone()
            start[:, :pinned.shape[1]] = pinned * mask[:, None]
        return self._action_output(start, mask)

    def _prior_video(self, batch: WorldBatch, clean: dict[str, torch.Tensor],
                     shapes: dict[str, tuple[int, ...]], gen: torch.Generator, temperature: float,
                     video_mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """``generate(steps=0)`` in forward dynamics with a video prior: the flow's starting
        point decoded without running either tower (at temperature 0 the prior's regressed
        future, its estimate of the mean)."""
        start = self._starting_noise(shapes, gen, temperature, None, None, None, video_mu)["video_future"]
        return {"video": self._decode_future(start, clean, batch)}

    @torch.no_grad()
    def generate_text(self, prompts: Sequence[str], ar_images: torch.Tensor | None = None,
                      max_new_tokens: int = 32) -> list[str]:
        """Greedy continuation of each prompt by the Reasoner (the VLM mode), byte by byte,
        until EOS/PAD, a non-byte token or the text context is full. Returns the new text."""
        texts = list(prompts)
        new = [b"" for _ in texts]
        done = [False] * len(texts)
        for _ in range(max_new_tokens):
            room = [len(t.encode("utf-8")) + len(n) + 3 <= self.config.max_text_len for t, n in zip(texts, new)]
            active = [not d and r for d, r in zip(done, room)]
            if not any(active):
                break
            full = [t + n.decode("utf-8", errors="ignore") for t, n in zip(texts, new)]
            hidden, _, tokens = self.encode_prefix(full, ar_images, add_eos=False)
            last = (tokens != ByteTokenizer.PAD).sum(1) - 1  # last valid text position
            logits = self.text_logits(hidden)[torch.arange(len(texts)), last]
            nxt = logits.argmax(-1).tolist()
            for i, tok in enumerate(nxt):
                if not active[i]:
                    continue
                if tok >= 256:
                    done[i] = True
                else:
                    new[i] += bytes([tok])
        return [n.decode("utf-8", errors="replace") for n in new]

    def decode_video(self, future_tokens: torch.Tensor, context_tokens: torch.Tensor | None,
                     anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Future latent tokens -> future frames in pixels ``(B, F, 3, H, W)`` (decoded with the
        context latents in front, as causal video decoders expect, then sliced). ``anchor``
        ``(B, 3, H, W)``: the real first context frame, for encoders that decode onto it."""
        c = self.config
        g = c.latent_size
        tokens = future_tokens if context_tokens is None else torch.cat([context_tokens, future_tokens], 1)
        n_lat = tokens.shape[1] // c.tokens_per_latent_frame
        lat = unpatchify(tokens, n_lat, c.latent_channels, g, g, c.dm_patch)
        video = self.video_encoder.decode(lat, anchor)
        if context_tokens is None:
            return video
        n_ctx_lat = context_tokens.shape[1] // c.tokens_per_latent_frame
        n_ctx_raw = 1 + (n_ctx_lat - 1) * c.temporal_compression
        return video[:, n_ctx_raw:]
