"""Reading a :class:`~cosmos3_robot.batch.WorldBatch`: validation of every input by name and
shape, and the padded, per-domain tensors the towers take (actions, proprioception, camera
views, context and future video latents). A mixin of :class:`~cosmos3_robot.model.cosmos3.Cosmos3`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model.modes import Mode
from cosmos3_robot.model.tokenizers import patchify
from cosmos3_robot.model.vae import check_frames


def _per_sample(x: float | torch.Tensor, B: int, name: str) -> torch.Tensor:
    """A rate in Hz, scalar or ``(B,)`` -> ``(B,)`` float64, each > 0."""
    t = torch.as_tensor(x, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"{name}: expected a scalar or ({B},) values, got {tuple(t.shape)}")
    if not bool((t > 0).all()):
        raise ValueError(f"{name}: rates must be > 0 Hz, got {t.tolist()}")
    return t


# ---- input checks: plain functions of a batch's fields and the model's sizes ----------------
def domain_indices(names: Sequence[str] | None, B: int, domains: Sequence[str]) -> list[int]:
    """One embodiment name per sample -> its index in ``domains`` (the model's action domains)."""
    if names is None:
        raise ValueError("embodiment: one name per sample is required for modes with actions")
    if len(names) != B:
        raise ValueError(f"embodiment: expected {B} names, got {len(names)}")
    for n in names:
        if n not in domains:
            raise ValueError(f"embodiment {n!r} has no action domain in this model; known: {list(domains)}")
    return [list(domains).index(n) for n in names]


def check_images(x: torch.Tensor, name: str, B: int, size: int) -> None:
    """``x`` must be ``(B, N, 3, size, size)`` with finite values (pixels in [-1, 1])."""
    if x.dim() != 5 or x.shape[0] != B or x.shape[2] != 3 or tuple(x.shape[3:]) != (size, size):
        raise ValueError(f"{name}: expected shape ({B}, N, 3, {size}, {size}) float in [-1, 1], got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: non-finite pixel values")


def padded_actions(a: torch.Tensor | None, action_mask: torch.Tensor | None, B: int, max_actions: int, W: int,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk ``(B, T, D)`` (``D <= W``; or ``(B, T, W)`` with ``action_mask`` ``(B, W)``)
    -> ``(B, T, W)`` zero-padded on ``device``/``dtype`` and the ``(B, W)`` bool mask of its
    real dimensions."""
    if a is None:
        raise ValueError("actions: this mode needs actions (B, T, D)")
    if a.dim() != 3 or a.shape[0] != B:
        raise ValueError(f"actions: expected shape ({B}, T, D), got {tuple(a.shape)}")
    if a.shape[1] > max_actions:
        raise ValueError(f"actions: chunk of {a.shape[1]} steps exceeds max_actions {max_actions}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("actions: non-finite values")
    a = a.to(device, dtype)
    if action_mask is not None:
        mask = action_mask.to(device, torch.bool)
        if a.shape[2] != W or tuple(mask.shape) != (B, W):
            raise ValueError(f"actions with action_mask: expected ({B}, T, {W}) and mask ({B}, {W})")
        return a * mask[:, None], mask
    D = a.shape[2]
    if D > W:
        raise ValueError(f"actions: width {D} exceeds the padded maximum {W}")
    mask = torch.zeros(B, W, dtype=torch.bool, device=device)
    mask[:, :D] = True
    return F.pad(a, (0, W - D)), mask


def padded_state(state: torch.Tensor, state_mask: torch.Tensor | None, B: int, W: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised proprioception ``(B, P)`` (``P <= W``) and its optional ``(B, P)`` bool
    mask -> the state zero-padded to ``(B, W)`` (masked entries zeroed) and whether each
    sample has any ``(B,)``."""
    x = torch.as_tensor(state, device=device, dtype=dtype)
    if x.dim() != 2 or x.shape[0] != B or x.shape[1] > W:
        raise ValueError(f"state: expected ({B}, P) normalised proprioception with P <= {W}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("state: non-finite values")
    mask = torch.ones(x.shape, dtype=torch.bool) if state_mask is None else state_mask
    mask = torch.as_tensor(mask, device=device, dtype=torch.bool)
    if tuple(mask.shape) != tuple(x.shape):
        raise ValueError(f"state_mask: expected {tuple(x.shape)} bool like state, got {tuple(mask.shape)}")
    x, mask = F.pad(x, (0, W - x.shape[1])), F.pad(mask, (0, W - mask.shape[1]))
    return x * mask, mask.any(1)


def check_views(v: torch.Tensor, B: int, n: int, size: int) -> None:
    """Every camera's current frame: ``(B, n, 3, size, size)``, finite."""
    if v.dim() != 5 or tuple(v.shape[:3]) != (B, n, 3) or tuple(v.shape[3:]) != (size, size):
        raise ValueError(f"views: expected ({B}, {n}, 3, {size}, {size}) float in [-1, 1], got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("views: non-finite pixel values")


def check_action_valid(v: torch.Tensor | None, shape: Sequence[int], device: torch.device | str = "cpu",
                       ) -> torch.Tensor | None:
    """Which chunk steps are real: ``(B, T)`` bool, or ``None`` (all real)."""
    if v is None:
        return None
    v = torch.as_tensor(v, device=device)
    if v.dtype != torch.bool or tuple(v.shape) != tuple(shape):
        raise ValueError(f"action_valid: expected ({shape[0]}, {shape[1]}) bool (True = a real chunk step), "
                         f"got {tuple(v.shape)} {v.dtype}")
    return v


class BatchInputs:
    """The model's input side: each input of a batch checked by the functions above against
    the model's sizes, on its device and dtype."""

    def domain_ids(self, names: Sequence[str] | None, B: int) -> torch.Tensor:
        return torch.tensor(domain_indices(names, B, self.config.action_domains), device=self.device)

    def _check_images(self, x: torch.Tensor, name: str, B: int) -> None:
        check_images(x, name, B, self.config.image_size)

    def _padded_actions(self, batch: WorldBatch, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return padded_actions(batch.actions, batch.action_mask, B, c.max_actions, c.max_action_width,
                              self.device, self.special.dtype)

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
        check_views(batch.views, B, n, s)
        return batch.views.to(self.device, self.special.dtype)

    def _padded_state(self, batch: WorldBatch, B: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`padded_state` of the batch; ``None`` without ``state_input`` or without a state."""
        if not self.config.state_input or batch.state is None:
            return None
        return padded_state(batch.state, batch.state_mask, B, self.config.max_action_width, self.device,
                            self.special.dtype)

    def _action_valid(self, batch: WorldBatch, shape: torch.Size) -> torch.Tensor | None:
        return check_action_valid(batch.action_valid, shape, self.device)

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
