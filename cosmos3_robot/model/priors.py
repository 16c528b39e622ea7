"""The optional priors: the action prior (an instruction-conditioned keypoint stem and a
regression head, the policy at ``steps 0``) and the video prior forward dynamics starts from;
their losses, parameters and the noise scale the flow uses around them. A mixin of
:class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

from __future__ import annotations

import torch
from torch import nn

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model.flow import masked_mean
from cosmos3_robot.model.modes import Mode
from cosmos3_robot.model.tokenizers import patchify
from cosmos3_robot.model.video_prior import frame_log_error


PRIOR_HIDDEN = 512
"""Hidden width of the action prior's head (independent of the towers' width: the prior is
the whole policy at ``steps 0``, and 512 fitted the built-in tasks where 320 underfitted)."""


class Priors:
    """Action and video priors (``Cosmos3Config.action_prior`` / ``video_prior``)."""

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

    def prior_loss(self, batch: WorldBatch, video_windows: int | None = None) -> torch.Tensor:
        """The priors' regression losses alone (scalar), without the towers, for pretraining
        them before the flow (``TrainConfig.prior_steps``): the action prior's (the
        observation path: state, keypoint stem, prior head and per-domain mean; needs actions
        and embodiments, and the current frame with ``visual_keypoints``) plus the video
        prior's (:meth:`video_prior_loss`, on the first ``video_windows`` samples when given;
        skipped for a batch without future frames). Needs ``action_prior`` or ``video_prior``."""
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
            sub = batch if video_windows is None or video_windows >= B else batch.head(video_windows)
            loss = loss + self.video_prior_loss(sub)
        elif self.prior_bias is None:
            raise ValueError("prior_loss: the video prior needs clips with context and future frames "
                             "(window.n_future > 0), and the model has no action prior")
        return loss

    def video_prior_frames(self, batch: WorldBatch, n_frames: int) -> torch.Tensor:
        """The video prior's future frames ``(B, n_frames, 3, H, W)`` in [-1, 1] after the
        batch's context frames (the last of them is "now"), from its actions (the clean
        chunk), state and embodiments."""
        if self.video_prior is None:
            raise ValueError("video_prior_frames: the model has no video prior (Cosmos3Config.video_prior)")
        B = batch.batch_size
        n_ctx = batch.n_context_frames
        if batch.video is None or n_ctx < 1:
            raise ValueError("video: the video prior needs the context frames (B, F, 3, H, W)")
        self._check_images(batch.video, "video", B)
        if batch.actions is None:
            raise ValueError("actions: the video prior needs the action chunk (B, T, D)")
        actions, _ = self._padded_actions(batch, B)
        state = self._padded_state(batch, B)
        st = actions.new_zeros(B, self.config.max_action_width) if state is None else state[0]
        now = batch.video[:, n_ctx - 1].to(self.device, self.special.dtype)
        return self.video_prior(now, actions, st, self.domain_ids(batch.embodiment, B), n_frames)

    def video_prior_loss(self, batch: WorldBatch, frames: torch.Tensor | None = None) -> torch.Tensor:
        """The video prior's regression loss (scalar, dB; :func:`frame_log_error`): its
        frames (``frames`` when already computed) against the clip's real future frames."""
        n_ctx = batch.n_context_frames
        if batch.video is None or not 1 <= n_ctx < batch.video.shape[1]:
            raise ValueError("video: the video prior needs context and future frames (B, F, 3, H, W)")
        future = batch.video[:, n_ctx:].to(self.device, self.special.dtype)
        if frames is None:
            frames = self.video_prior_frames(batch, future.shape[1])
        return frame_log_error(frames, future)

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

    def video_prior_tokens(self, batch: WorldBatch, n_future: int) -> torch.Tensor:
        """The video prior's future as latent DM tokens ``(B, n_future * tokens_per_latent_frame,
        C * p * p)``, where the video flow starts: its frames encoded after the batch's context
        frames (as the clip's own future would be)."""
        c = self.config
        return self.prior_frame_tokens(batch, self.video_prior_frames(batch, n_future * c.temporal_compression))

    def prior_frame_tokens(self, batch: WorldBatch, frames: torch.Tensor) -> torch.Tensor:
        """Predicted future ``frames`` ``(B, k * tc, 3, H, W)`` as latent DM tokens: encoded
        after the batch's context frames."""
        c = self.config
        n_ctx = batch.n_context_frames
        clip = torch.cat([batch.video[:, :n_ctx].to(self.device, frames.dtype), frames], 1)
        lat = self.video_encoder.encode(clip)[:, self._context_latents(n_ctx):]
        return patchify(lat, c.dm_patch)
