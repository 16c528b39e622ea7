"""The Cosmos3 world-action model: its towers, embeddings, heads and flow-matching loss.

One set of weights serves every mode (:mod:`cosmos3_robot.model.modes`); a mode only
decides which DM streams are present and which of them are noisy. The rest lives in one
module per responsibility, each a mixin of :class:`Cosmos3`: reading a batch
(:mod:`.inputs`), the DM sequence and the Generator pass (:mod:`.sequence`), the optional
parts (:mod:`.parts`, called in one loop per hook by :mod:`.with_parts`), what trains alone
first (:mod:`.pretraining`) and sampling (:mod:`.sampling`). Sequence per sample::

    AR:  [BOS text... PAD..] [ViT image tokens] [EOS] [BOG]      (Reasoner, causal)
    DM:  [clean conditioning streams] [noisy target streams]       (Generator, flow)

Positions follow :mod:`cosmos3_robot.model.rope`; DM time starts after the AR prefix.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model import rope
from cosmos3_robot.model.config import Cosmos3Config
from cosmos3_robot.model.flow import interpolate, masked_mean, sample_time
from cosmos3_robot.model.inputs import BatchInputs, _per_sample
from cosmos3_robot.model.modes import Mode, get_mode
from cosmos3_robot.model.mot import MoTCore, PrefixCache, RMSNorm
from cosmos3_robot.model.parts import FlowStart, build_parts
from cosmos3_robot.model.pretraining import Pretraining
from cosmos3_robot.model.sampling import ModulationTable, Sampling  # noqa: F401  (ModulationTable re-exported)
from cosmos3_robot.model.sequence import GeneratorBackend, SequenceLayout, _Layout  # noqa: F401  (re-exported)
from cosmos3_robot.model.tokenizers import ActionProjections, ByteTokenizer, TimestepEmbedding, ViTPatchEmbed
from cosmos3_robot.model.vae import ConvVideoAE, RawPatchify, VideoEncoder
from cosmos3_robot.model.with_parts import OptionalParts


class Cosmos3(BatchInputs, SequenceLayout, OptionalParts, Pretraining, Sampling, nn.Module):
    """The model: Reasoner and Generator towers (:class:`~.mot.MoTCore`), the AR and DM
    embeddings, the per-stream heads, the video encoder, the optional ``parts``
    (:mod:`.parts`); ``loss`` and (from :class:`~.sampling.Sampling`) ``generate`` for every
    mode."""

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
        self.parts = build_parts(c)  # state, keypoints, action prior, video prior: those c switches on
        self._register_load_state_dict_pre_hook(self._rename_legacy)  # checkpoints of before the parts
        self.modality = nn.Parameter(torch.randn(2, c.dim) * 0.02)  # video, action
        self.time_embed = TimestepEmbedding(c.dim)
        self.dm_final_norm = RMSNorm(c.dim, affine=False)
        self.dm_final_ada = nn.Linear(c.dim, 2 * c.dim)
        nn.init.zeros_(self.dm_final_ada.weight)
        nn.init.zeros_(self.dm_final_ada.bias)

        self.core = MoTCore(c.dim, c.n_layers, c.n_heads, int(c.dim * c.ffn_mult), c.block_causal)
        self.rope = rope.MRoPE(c.head_dim, c.sections, c.rope_theta)
        self.apply(self._init)
        for part in self.parts.values():  # nets on O(1) inputs: their own initialisation
            part.reset_parameters()

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


    def encoder_loss(self, batch: WorldBatch) -> torch.Tensor:
        """The trainable video encoder's reconstruction loss (MSE of the round trip, later
        groups decoded onto the real first frame) plus the losses of the parts that learn
        beside it (:meth:`~.parts.Part.encoder_loss`: the video prior's, weighted by
        ``flow.prior_loss_weight``, on a batch with context, future frames and actions)
        (``TrainConfig.encoder_steps``). Scalar."""
        if batch.video is None:
            raise ValueError("video: the encoder's pretraining needs video (B, F, 3, H, W)")
        B = batch.batch_size
        self._check_images(batch.video, "video", B)
        enc = self.video_encoder
        video = batch.video.to(self.device, self.special.dtype)
        lat = enc.encode(video)
        loss = F.mse_loss(enc.decode(lat, anchor=video[:, 0]), video)
        for part in self.parts.values():
            part_loss = part.encoder_loss(self, batch)
            if part_loss is not None:
                loss = loss + part_loss
        return loss


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
            n_future = 0 if batch.video is None else batch.video.shape[1] - batch.n_context_frames
            start = FlowStart(self, mode, batch, B, domain, mask, n_future, clean=clean, learn=True)
            side, _ = start.observation
            self.start_flow(start, noise)  # the priors' losses, and where their streams start
            parts.update(start.losses)
            vscale = self.video_noise_scale(mode)
            times = {s: sample_time((B,), fc, generator).to(self.device) for s in mode.noisy}
            for s in mode.noisy:
                inputs[s] = start.seen(s, interpolate(clean[s], noise[s], times[s]))
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


