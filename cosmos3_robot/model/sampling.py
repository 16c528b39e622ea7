"""Generation: the flow sampler over a mode's noisy streams (prefix and clean-token caches,
the adaLN modulation table, inpainting prefixes, guidance, a Generator backend), the priors'
``steps 0`` outputs, text generation and video decoding. A mixin of
:class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model.flow import check_temperature, integrate, time_grid
from cosmos3_robot.model.inputs import _per_sample
from cosmos3_robot.model.modes import Mode, get_mode
from cosmos3_robot.model.parts import FlowStart
from cosmos3_robot.model.sequence import GeneratorBackend, _Layout
from cosmos3_robot.model.tokenizers import ByteTokenizer, unpatchify
from cosmos3_robot.model.vae import check_frames


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


class Sampling:
    """Sampling every mode's noisy streams (``generate``) and decoding them."""

    def modulation_table(self, times: torch.Tensor) -> "ModulationTable":
        """Every layer's adaLN parameters for the flow times ``times`` ``(U,)``, computed in
        one pass (see :class:`ModulationTable`)."""
        times = times.to(self.device, torch.float32)
        temb = self.time_embed(times)
        return ModulationTable([float(t) for t in times.cpu()],
                               [layer.generator.ada(temb) for layer in self.core.layers], self.dm_final_ada(temb))

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
        prior's predicted future frames (in pixels, not through the autoencoder; the
        temperature does not apply there).

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

        # Where the flow starts: noise, moved by the parts that start a stream (the priors).
        n_fut = shapes["video_future"][1] // c.tokens_per_latent_frame if "video_future" in shapes else 0
        start = FlowStart(self, mode, batch, B, domain, mask, n_fut * c.temporal_compression, towers=steps > 0)
        noise = self._starting_noise(shapes, gen, temperature, mask)
        self.start_flow(start, noise)
        pinned = self._pinned_prefix(action_prefix, mode, noise.get("actions"))
        if steps == 0:  # the priors' outputs, the towers never run
            out = self.without_towers(start, noise)
            if "actions" in out:
                assert mask is not None
                if pinned is not None:
                    out["actions"] = out["actions"].clone()
                    out["actions"][:, :pinned.shape[1]] = pinned * mask[:, None]
                out.update(self._action_output(out.pop("actions"), mask))
            return out
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
        state_r = rep(start.observation[0])
        mask_r = rep(mask)
        t0 = float(prefix.valid.shape[1])
        vscale = self.video_noise_scale(mode)
        names = list(mode.noisy)
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
                tokens = torch.cat([first.tokens[:, :first_noisy]] + [
                    self._embed(k, rep(start.seen(k, x_noisy[k])), dom_r, state_r) for k in names], 1)
                stream_time = first.stream_time.clone()
                stream_time[:, first_noisy_stream:] = t.to(stream_time)
                return dataclasses.replace(first, tokens=tokens, stream_time=stream_time)
            inputs = {**clean_r, **{k: rep(start.seen(k, v)) for k, v in x_noisy.items()}}
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
                        mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``temperature`` times unit noise per noisy stream, for actions masked to the real
        dimensions; the parts then move the streams they start (:meth:`start_flow`: with a
        prior, ``flow.prior_noise`` times it around the prior's output; temperature 0: at it)."""
        check_temperature(temperature)
        noise = {k: (float(temperature) * torch.randn(s, generator=gen)).to(self.device, self.special.dtype)
                 for k, s in shapes.items()}
        if "actions" in noise:
            assert mask is not None
            noise["actions"] = noise["actions"] * mask[:, None]
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
