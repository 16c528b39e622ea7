"""The model's input contract, :class:`WorldBatch`: what data windows, the runtime policy and
the LeRobot plugin hand the model, in every mode. A module of its own so that those can build
batches without importing the network (:mod:`cosmos3_robot.model.cosmos3`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class WorldBatch:
    """Inputs for any mode; a stream the mode does not use may be ``None``.

    Attributes:
        text: one instruction per sample.
        embodiment: one embodiment name per sample (selects the action projection domain).
        video: ``(B, F, 3, H, W)`` float in [-1, 1]: ``n_context_frames`` context frames, then
            future frames. Both counts must fit the temporal compression
            (context ``1 + k * tc``, future ``k * tc``).
        n_context_frames: how many of ``video``'s frames are context.
        actions: ``(B, T, D)`` normalised pseudo-actions, or ``(B, T, W)`` already padded
            with ``action_mask``.
        action_mask: ``(B, W)`` bool valid action dimensions (padded batches).
        fps: video frame rate in Hz, scalar or ``(B,)``.
        control_hz: action rate in Hz, scalar or ``(B,)``.
        ar_images: ``(B, N, 3, H, W)`` images for the ViT (Reasoner), optional.
        state: ``(B, P)`` normalised proprioception at "now" (the last context frame), zero-
            padded to ``max_action_width`` with ``state_mask`` ``(B, W)`` bool (a sample
            without state has an empty mask); read when the model has ``state_input``.
        views: ``(B, N, 3, H, W)`` float in [-1, 1], every camera's current frame (the
            recipe's ``window.views`` order), read by the observation stem of a model with
            ``visual_keypoints``; ``None`` with ``n_views`` 1 uses the last context frame.
        action_valid: ``(B, T)`` bool, which chunk steps are real; ``False`` marks padding
            past an episode's end (LeRobot's ``action_is_pad``). Padded steps stay in the
            sequence but are left out of the action loss. ``None``: all real.
    """

    text: Sequence[str]
    embodiment: Sequence[str] | None = None
    video: torch.Tensor | None = None
    n_context_frames: int = 1
    actions: torch.Tensor | None = None
    action_mask: torch.Tensor | None = None
    fps: float | torch.Tensor = 15.0
    control_hz: float | torch.Tensor = 15.0
    ar_images: torch.Tensor | None = None
    action_valid: torch.Tensor | None = None
    state: torch.Tensor | None = None
    state_mask: torch.Tensor | None = None
    views: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return len(self.text)

    def head(self, n: int) -> "WorldBatch":
        """The first ``n`` samples (every per-sample field sliced; scalars kept)."""
        def cut(x):
            if isinstance(x, torch.Tensor):
                return x[:n] if x.ndim > 0 else x
            if isinstance(x, (list, tuple)):
                return type(x)(x[:n])
            return x

        return dataclasses.replace(self, **{f.name: cut(getattr(self, f.name)) for f in dataclasses.fields(self)})
