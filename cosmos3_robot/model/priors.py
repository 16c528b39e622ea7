"""The optional priors: the action prior (an instruction-conditioned keypoint stem and a
regression head, the policy at ``steps 0``), the video prior forward dynamics starts from, and
the inverse-dynamics prior (the action prior's chunk corrected by the clip's frames); their losses, parameters and the noise scale the flow uses around them. A mixin of
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

    def inverse_prior_applies(self, mode: Mode) -> bool:
        """Whether ``mode``'s action flow starts from the inverse-dynamics prior: a model with
        ``inverse_prior`` generating actions from a given clip (context and future frames)."""
        return (self.inverse_head is not None and "actions" in mode.noisy
                and {"video_context", "video_future"} <= set(mode.clean))

    def inverse_prior_mean(self, batch: WorldBatch, observed: torch.Tensor, domain: torch.Tensor,
                           n_actions: int, mask: torch.Tensor) -> torch.Tensor:
        """The inverse-dynamics prior's chunk ``(B, n_actions, W)`` (normalised, zero on padded
        dimensions): the action prior's chunk (:meth:`action_prior_mean`), whose first ``k``
        steps (``k`` = the clip's future frames, at most ``n_actions``) each get a correction
        from the observation ``observed`` and the first camera's keypoints in the frame
        before and the frame after that step (``batch.video`` ``(B, F, 3, H, W)``: the last
        context frame is "now"). Gradients reach the correction head alone: the stem and
        the action prior are the policy's and do not learn from it."""
        if self.inverse_head is None or self.keypoints is None:
            raise ValueError("inverse_prior_mean: the model has no inverse prior (Cosmos3Config.inverse_prior)")
        B, n_ctx = batch.batch_size, batch.n_context_frames
        if batch.video is None or not 1 <= n_ctx < batch.video.shape[1]:
            raise ValueError("video: the inverse prior needs context and future frames (B, F, 3, H, W)")
        self._check_images(batch.video, "video", B)
        k = min(batch.video.shape[1] - n_ctx, n_actions)
        clip = batch.video[:, n_ctx - 1: n_ctx + k].to(self.device, self.special.dtype)  # (B, k + 1, 3, H, W)
        with torch.no_grad():
            mu = self.action_prior_mean(observed, domain, n_actions, mask)
            assert mu is not None
            text = self.keypoints.text(list(batch.text), self.device)
            points = self.keypoints.cameras[0](clip.flatten(0, 1), text.repeat_interleave(k + 1, 0))
            points = points.reshape(B, k + 1, -1)
        pairs = torch.cat([observed.detach()[:, None].expand(-1, k, -1), points[:, :-1], points[:, 1:]], -1)
        correction = self.inverse_head(pairs) * mask[:, None].to(mu.dtype)  # (B, k, W)
        return torch.cat([mu[:, :k] + correction, mu[:, k:]], 1)

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
        skipped for a batch without future frames) and the inverse prior's (the same L1 on the
        steps its frames pin, on the same samples). Needs ``action_prior`` or ``video_prior``."""
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
        has_future = batch.video is not None and batch.n_context_frames < batch.video.shape[1]
        sub = batch if video_windows is None or video_windows >= B else batch.head(video_windows)
        if self.inverse_head is not None and has_future:
            n = sub.batch_size
            imu = self.inverse_prior_mean(sub, observed[:n], domain[:n], actions.shape[1], mask[:n])
            k = min(batch.video.shape[1] - batch.n_context_frames, actions.shape[1])  # the corrected steps
            valid = None if sub.action_valid is None else torch.as_tensor(sub.action_valid, device=self.device)[:, :k]
            loss = loss + masked_mean((imu[:, :k] - actions[:n, :k]).abs(), mask[:n], valid)
        if self.video_prior is not None and has_future:
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
        prior's own and the keypoint stem's, the video prior's and the inverse prior's head."""
        params: list[nn.Parameter] = []
        if self.prior_bias is not None:
            mods = [m for m in (self.keypoints, self.prior_head) if m is not None]
            params += [self.prior_bias] + [p for m in mods for p in m.parameters()]
        if self.video_prior is not None:
            params += list(self.video_prior.parameters())
        if self.inverse_head is not None:
            params += list(self.inverse_head.parameters())
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
