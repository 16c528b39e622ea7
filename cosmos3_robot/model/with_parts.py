"""Cosmos3's side of its optional parts (:mod:`.parts`): each hook called in one loop over
``Cosmos3.parts``, and the priors for callers that name them. A mixin of
:class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model.modes import MODES, Mode
from cosmos3_robot.model.parts import FlowStart, Part, VideoPriorPart, rename_legacy
from cosmos3_robot.model.tokenizers import patchify


class OptionalParts:
    """:class:`~cosmos3_robot.model.cosmos3.Cosmos3`'s side of its parts: each hook called
    in one loop over ``self.parts`` (a mixin)."""

    parts: nn.ModuleDict

    def part(self, key: str) -> Part | None:
        """The part named ``key`` (``"state"``, ``"keypoints"``, ``"action_prior"``,
        ``"video_prior"``), ``None`` when the config leaves it out."""
        return self.parts[key] if key in self.parts else None  # type: ignore[return-value]

    def observe(self, batch: WorldBatch, B: int, domain: torch.Tensor | None,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the action tokens read besides attention, and the action prior's input.

        Returns ``(side, observed)``: ``side`` ``(B, dim)`` is added to every action token
        (the sum of the observation parts' projections: proprioception, every camera's
        keypoints conditioned on the instruction); ``observed`` ``(B, W + F)`` is the same
        observation unprojected (padded state, zero where absent, then the stem's ``F``
        features), the input of the action prior. Both ``None`` when the mode has no
        actions (``domain`` ``None``) or no part observes.

        The instruction reaches the prior through the stem (FiLM on each camera's convs),
        not beside it: given the Reasoner's summary of the instruction next to unconditioned
        keypoints, an earlier prior learned from the instruction and the state and left the
        camera (its action error moved by 0.02 with another episode's frame)."""
        if domain is None:
            return None, None
        side, features = None, []
        for p in self.parts.values():
            s, f = p.observe(self, batch, B, domain)
            if s is not None:
                side = s if side is None else side + s
            if f is not None:
                features.append(f)
        return side, (torch.cat(features, 1) if features else None)

    def start_flow(self, s: FlowStart, noise: dict[str, torch.Tensor]) -> None:
        """Every part moves the starting point of the streams it starts (see :meth:`Part.start`)."""
        for p in self.parts.values():
            p.start(s, noise)

    def without_towers(self, s: FlowStart, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``generate(steps=0)``: the parts' outputs for every noisy stream of ``s.mode``
        (a prior's chunk or frames); a mode whose every noisy stream no part starts is an
        error."""
        out: dict[str, torch.Tensor] = {}
        for p in self.parts.values():
            out.update(p.without_towers(s, noise))
        if {"video" if k == "video_future" else k for k in s.mode.noisy} != set(out):
            raise ValueError("steps: 0 returns a prior's output without running the towers; it needs a mode "
                             "that generates actions alone (e.g. 'policy_actions') and a model with action_prior, "
                             f"or 'forward_dynamics' and a model with video_prior (mode {s.mode.name!r}, "
                             f"action_prior={self.config.action_prior}, video_prior={self.config.video_prior})")
        return out

    def noise_scale(self, mode: Mode, stream: str) -> float:
        """Std of ``stream``'s starting noise in ``mode``: ``flow.prior_noise`` where a
        prior starts it, else 1; the stream's head predicts velocities in these units."""
        for p in self.parts.values():
            v = p.noise_scale(mode, stream)
            if v is not None:
                return v
        return 1.0

    @property
    def action_noise_scale(self) -> float:
        """:meth:`noise_scale` of the actions (the same in every mode)."""
        return self.noise_scale(MODES["policy_actions"], "actions")

    def video_noise_scale(self, mode: Mode) -> float:
        return self.noise_scale(mode, "video_future")

    # ---- the priors, for callers that name them ------------------------------------------
    def action_prior_mean(self, observed: torch.Tensor | None, domain: torch.Tensor, n_actions: int,
                          mask: torch.Tensor) -> torch.Tensor | None:
        """:meth:`ActionPrior.mean` (``None`` without ``action_prior``)."""
        prior = self.part("action_prior")
        return None if prior is None else prior.mean(observed, domain, n_actions, mask)

    def _video_prior(self, what: str) -> VideoPriorPart:
        prior = self.part("video_prior")
        if prior is None:
            raise ValueError(f"{what}: the model has no video prior (Cosmos3Config.video_prior)")
        return prior  # type: ignore[return-value]

    def video_prior_frames(self, batch: WorldBatch, n_frames: int) -> torch.Tensor:
        """:meth:`VideoPriorPart.frames`: ``(B, n_frames, 3, H, W)`` in [-1, 1]."""
        return self._video_prior("video_prior_frames").frames(self, batch, n_frames)

    def video_prior_loss(self, batch: WorldBatch, frames: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`VideoPriorPart.loss` (scalar, dB)."""
        return self._video_prior("video_prior_loss").loss(self, batch, frames)

    def prior_frame_tokens(self, batch: WorldBatch, frames: torch.Tensor) -> torch.Tensor:
        """Predicted future ``frames`` ``(B, k * tc, 3, H, W)`` as latent DM tokens ``(B, k *
        tokens_per_latent_frame, C p p)``: encoded after the batch's context frames (as the
        clip's own future would be), where the video flow starts."""
        c = self.config
        n_ctx = batch.n_context_frames
        clip = torch.cat([batch.video[:, :n_ctx].to(self.device, frames.dtype), frames], 1)
        lat = self.video_encoder.encode(clip)[:, self._context_latents(n_ctx):]
        return patchify(lat, c.dm_patch)

    # ---- the prior phase ---------------------------------------------------------------------
    def prior_loss(self, batch: WorldBatch, video_windows: int | None = None) -> torch.Tensor:
        """The priors' regression losses alone (scalar), without the towers, for pretraining
        them before the flow (``TrainConfig.prior_steps``): the action prior's (the
        observation path: state, keypoint stem, prior head and per-domain mean; needs actions
        and embodiments, and the current frames with ``visual_keypoints``) plus the video
        prior's (on the first ``video_windows`` samples when given; skipped for a batch
        without future frames). Needs ``action_prior`` or ``video_prior``."""
        if not any(p.prior for p in self.parts.values()):
            raise ValueError("prior_loss: the model has no prior (Cosmos3Config.action_prior / video_prior)")
        B = batch.batch_size
        actions, mask = self._padded_actions(batch, B)
        domain = self.domain_ids(batch.embodiment, B)
        loss, any_loss = actions.new_zeros(()), False
        for p in self.parts.values():
            part_loss = p.prior_loss(self, batch, actions, mask, domain, video_windows)
            if part_loss is not None:
                loss, any_loss = loss + part_loss, True
        if not any_loss:
            raise ValueError("prior_loss: the video prior needs clips with context and future frames "
                             "(window.n_future > 0), and the model has no action prior")
        return loss

    def prior_parameters(self) -> list[nn.Parameter]:
        """What :meth:`prior_loss` trains (``[]`` without a prior): the action prior's own and
        the keypoint stem's, and the video prior's."""
        return [q for p in self.parts.values() for q in p.prior_parameters(self)]

    def frozen_prior_parameters(self) -> list[nn.Parameter]:
        """What ``train.freeze_prior`` stops after the prior phase: the priors' own parameters,
        so a ``steps 0`` policy stays exactly what the phase fitted; the keypoint stem's
        projection onto the action tokens keeps learning with the flow."""
        return [q for p in self.parts.values() for q in p.frozen_after_prior(self)]

    def _rename_legacy(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """``load_state_dict`` pre-hook: :func:`rename_legacy`."""
        rename_legacy(state_dict, prefix)
