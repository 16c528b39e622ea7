"""The DM sequence of one batch: streams laid out with their 3D mRoPE positions and flow
times, run through the Generator tower (the attention rule of :mod:`.attention`), and read out
by the per-stream heads. A mixin of :class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from cosmos3_robot.model import rope
from cosmos3_robot.model.attention import attention_bias, dm_mask
from cosmos3_robot.model.modes import Mode
from cosmos3_robot.model.mot import PrefixCache, modulation


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


def _per_rate(positions, *rates: torch.Tensor) -> torch.Tensor:
    """``(B, L, 3)`` positions, ``positions(*rates of sample b)`` per sample, computed once per
    distinct tuple of rates (a batch usually has one or two: a Python loop over the
    samples was a tenth of a GPU training step at batch 64)."""
    keys = list(zip(*(r.tolist() for r in rates)))
    done = {k: positions(*k) for k in dict.fromkeys(keys)}
    return torch.stack([done[k] for k in keys])


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


class SequenceLayout:
    """Layout, Generator pass and heads of the DM sequence."""

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
