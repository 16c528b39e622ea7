"""What a model trains alone before the world model does: its pretraining phases.

The trainer (:class:`~cosmos3_robot.train.trainer.Trainer`) asks the model for them instead
of reaching into its parts: :meth:`Pretraining.encoder_phase` (the trainable video
autoencoder by reconstruction, with a video prior alongside) and :meth:`Pretraining.prior_phase`
(the action and video priors by regression), each a :class:`PretrainPhase` with its
parameters, its loss on a batch, and what to freeze once it is done. A mixin of
:class:`~cosmos3_robot.model.cosmos3.Cosmos3`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class PretrainPhase:
    """Attributes:
        name: ``"encoder"`` or ``"prior"`` (the ``phase`` of its ``metrics.jsonl`` records).
        metric: the logged loss name (``loss/<metric>``).
        params: the parameters the phase trains (nothing else moves).
        loss: ``loss(batch, indices)``: the phase's loss on a batch and its dataset indices.
        salt: seeds the phase's own stream of batches.
        frozen: parameters that stop training once the phase is over (or is skipped on a
            resumed run, whose checkpoint holds them).
    """

    name: str
    metric: str
    params: list[nn.Parameter]
    loss: Callable[[Any, list[int]], torch.Tensor]
    salt: int
    frozen: list[nn.Parameter] = field(default_factory=list)


class Pretraining:
    """The pretraining phases of a :class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

    def encoder_phase(self) -> PretrainPhase | None:
        """Reconstruction of the trainable video encoder (the conv autoencoder), with the
        video prior learning alongside from the latents each step encodes anyway; ``None``
        when the encoder has no trainable weights (raw patches, an external VAE). Once done
        the encoder is frozen: the flow learns on latents that no longer move under it."""
        enc = self.video_encoder
        if not any(p.requires_grad for p in enc.parameters()):
            return None

        def recon(batch: Any, indices: list[int]) -> torch.Tensor:
            if batch.video is None:
                raise ValueError("train.encoder_steps: the data has no video to reconstruct")
            return self.encoder_loss(batch)

        beside = [p for part in self.parts.values() for p in part.encoder_parameters()]
        return PretrainPhase("encoder", "video_recon_and_prior" if beside else "video_recon",
                             [p for p in [*enc.parameters(), *beside] if p.requires_grad], recon, 0xE4C,
                             frozen=list(enc.parameters()))

    def prior_phase(self, video_windows: int | None = None) -> PretrainPhase | None:
        """Regression of the action prior (keypoint stem, head, per-domain mean) and the video
        prior, the towers never run; ``None`` for a model with neither. ``video_windows``:
        how many of each batch's windows the video prior learns from (``None``: all); the
        video prior costs several times an action-prior sample, and the action prior is what
        acts (``TrainConfig.video_prior_batch_size``)."""
        params = [p for p in self.prior_parameters() if p.requires_grad]
        if not params:
            return None
        if video_windows is not None and video_windows < 1:
            raise ValueError(f"train.video_prior_batch_size: expected >= 1 windows, got {video_windows}")

        def priors(batch: Any, indices: list[int]) -> torch.Tensor:
            return self.prior_loss(batch, video_windows)

        name = "_and_".join(key for key, part in self.parts.items() if part.prior)
        return PretrainPhase("prior", name, params, priors, 0x9A1)
