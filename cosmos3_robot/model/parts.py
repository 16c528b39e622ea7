"""The model's optional parts: small modules :class:`~cosmos3_robot.model.cosmos3.Cosmos3`
holds in ``parts`` (an ``nn.ModuleDict``, in this order) and calls in one loop per hook.

- ``state`` (:class:`StateInput`, ``state_input``): proprioception, projected onto every
  action token and read by the action prior.
- ``keypoints`` (:class:`KeypointInput`, ``visual_keypoints``): an instruction-conditioned
  keypoint stem on every camera's current frame, the same two ways.
- ``action_prior`` (:class:`ActionPrior`, ``action_prior``): a regression of the chunk from
  the observation; the action flow starts from it, and at ``steps 0`` it is the policy.
- ``video_prior`` (:class:`VideoPriorPart`, ``video_prior``): future frames warped from
  the current one by the chunk; forward dynamics starts from them.

Hooks (each part answers only those it has; the rest are the no-ops of :class:`Part`):
``observe`` (what the action side reads), ``start`` (shift a noisy stream's starting point
and, when learning, add a loss), ``without_towers`` (the ``steps 0`` answer), ``prior_loss``
/ ``prior_parameters`` / ``frozen_after_prior`` (the prior phase), ``encoder_loss`` /
``encoder_parameters`` (learning beside the video autoencoder) and ``noise_scale``.

Checkpoints saved before the parts were modules name their tensors ``state_in.*``,
``keypoints.*``, ``prior_bias``, ``prior_head.*`` and ``video_prior.*``; :func:`rename_legacy`
maps them (``Cosmos3`` applies it on every ``load_state_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cosmos3_robot.batch import WorldBatch
from cosmos3_robot.model.config import Cosmos3Config
from cosmos3_robot.model.flow import masked_mean
from cosmos3_robot.model.keypoints import KeypointStem
from cosmos3_robot.model.modes import Mode
from cosmos3_robot.model.tokenizers import StateProjection
from cosmos3_robot.model.video_prior import VideoPrior, frame_log_error

if TYPE_CHECKING:
    from cosmos3_robot.model.cosmos3 import Cosmos3


PRIOR_HIDDEN = 512
"""Hidden width of the action prior's head (independent of the towers' width: the prior is
the whole policy at ``steps 0``, and 512 fitted the built-in tasks where 320 underfitted)."""


@dataclass
class FlowStart:
    """One batch as the parts see it where a flow starts (training or sampling).

    Attributes:
        model: the model the parts belong to.
        mode: the mode being trained or sampled.
        batch: the batch; ``B`` its size.
        domain: ``(B,)`` action domains (``None`` without actions in the mode).
        mask: ``(B, W)`` bool real action dimensions (``None`` likewise).
        n_future_frames: future frames in pixels (the clip's in training, the requested ones
            in sampling; 0 without).
        clean: training: the clean padded actions ``(B, T, W)`` under ``"actions"`` (the
            regression target); sampling: empty.
        learn: training: parts add their losses to ``losses``.
        towers: the towers will run from the starting point (``False`` at ``steps 0``,
            where a prior's output is the answer and its latents are not needed).
        origin: per noisy stream, the point the towers read it from (they see ``x_t -
            origin``; ``flow.relative_to_prior``: the action prior's chunk), set by
            :meth:`Part.start`.
    """

    model: "Cosmos3"
    mode: Mode
    batch: WorldBatch
    B: int
    domain: torch.Tensor | None
    mask: torch.Tensor | None
    n_future_frames: int = 0
    clean: dict[str, torch.Tensor] = field(default_factory=dict)
    learn: bool = False
    towers: bool = True
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    video_frames: torch.Tensor | None = None  # the video prior's frames, once computed
    origin: dict[str, torch.Tensor] = field(default_factory=dict)

    def seen(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        """A noisy stream's ``x_t`` as the towers read it: less its :attr:`origin`."""
        o = self.origin.get(stream)
        return x if o is None else x - o

    @cached_property
    def observation(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(side, observed)`` of :meth:`Cosmos3.observe`, computed on first use (a mode
        without actions, or forward dynamics at ``steps 0``, never reads the cameras)."""
        return self.model.observe(self.batch, self.B, self.domain)


class Part(nn.Module):
    """An optional part of the model: every hook a no-op unless the part overrides it."""

    key: str = ""
    """Its name in ``Cosmos3.parts`` (its state-dict prefix ``parts.<key>.``)."""

    def reset_parameters(self) -> None:
        """Its own initialisation, after the model's transformer-width one."""

    def observe(self, model: "Cosmos3", batch: WorldBatch, B: int, domain: torch.Tensor,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(side (B, dim) added to every action token, features (B, F) the action prior
        reads)``, either ``None``."""
        return None, None

    def start(self, s: FlowStart, noise: dict[str, torch.Tensor]) -> None:
        """Move its stream's starting point in ``noise`` (unit noise, times the temperature
        when sampling) to ``scale * noise + mean``; add its loss to ``s.losses`` when
        ``s.learn``."""

    def without_towers(self, s: FlowStart, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs at ``steps 0`` for the noisy streams it starts (``{}``: none)."""
        return {}

    def noise_scale(self, mode: Mode, stream: str) -> float | None:
        """Std of ``stream``'s starting noise in ``mode`` where this part sets it."""
        return None

    prior: bool = False
    """Whether it learns in the prior phase (:meth:`prior_loss`)."""

    def prior_loss(self, model: "Cosmos3", batch: WorldBatch, actions: torch.Tensor, mask: torch.Tensor,
                   domain: torch.Tensor, video_windows: int | None) -> torch.Tensor | None:
        return None

    def prior_parameters(self, model: "Cosmos3") -> list[nn.Parameter]:
        return []

    def frozen_after_prior(self, model: "Cosmos3") -> list[nn.Parameter]:
        """What ``train.freeze_prior`` stops after the prior phase."""
        return self.prior_parameters(model)

    def encoder_loss(self, model: "Cosmos3", batch: WorldBatch) -> torch.Tensor | None:
        """Its loss while the video autoencoder pretrains (``None``: it does not learn then)."""
        return None

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []


class StateInput(Part):
    """Proprioception: its per-domain projection onto every action token, and the padded
    state itself (zeros where absent) as the action prior's first ``W`` features."""

    key = "state"

    def __init__(self, c: Cosmos3Config):
        super().__init__()
        self.proj = StateProjection(c.n_action_domains, c.max_action_width, c.dim)
        self.width = c.max_action_width

    def observe(self, model, batch, B, domain):
        state = model._padded_state(batch, B)
        if state is None:
            return None, torch.zeros(B, self.width, device=model.device, dtype=model.special.dtype)
        return self.proj(state[0], state[1], domain), state[0]


class KeypointInput(Part):
    """Every camera's current frame and the instruction through the keypoint stem: its
    projection onto the action tokens, and its features for the action prior. The prior
    phase trains the stem through the prior (:class:`ActionPrior`); after it, the
    projection onto the action tokens keeps learning with the flow."""

    key = "keypoints"

    def __init__(self, c: Cosmos3Config):
        super().__init__()
        self.stem = KeypointStem(c.visual_keypoints, c.dim, c.n_views, c.max_text_len, film_layers=c.keypoint_film_layers)

    @property
    def features(self) -> int:
        return self.stem.features

    def observe(self, model, batch, B, domain):
        feats, seen = self.stem(model._views(batch, B), list(batch.text))
        return seen, feats


class ActionPrior(Part):
    """A per-domain mean chunk ``bias`` ``(n_domains, max_actions, W)`` plus, when the model
    observes something (state, keypoints), a head on that observation. Zero-initialised, so
    the flow starts from noise until the prior learns (by L1 regression, as ACT's chunk loss)."""

    key = "action_prior"
    prior = True

    def __init__(self, c: Cosmos3Config, observed: int):
        super().__init__()
        self.max_actions, self.width = c.max_actions, c.max_action_width
        self.prior_noise = c.flow.prior_noise
        self.relative = c.flow.relative_to_prior
        self.bias = nn.Parameter(torch.zeros(c.n_action_domains, c.max_actions, c.max_action_width))
        self.head = None
        if observed:
            self.head = nn.Sequential(nn.Linear(observed, PRIOR_HIDDEN), nn.GELU(), nn.Linear(PRIOR_HIDDEN, PRIOR_HIDDEN),
                                      nn.GELU(), nn.Linear(PRIOR_HIDDEN, c.max_actions * c.max_action_width))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def reset_parameters(self) -> None:
        """Inputs of O(1), not projected: PyTorch's fan-in initialisation (the model's
        ``std=0.02`` is for transformer widths); the output layer stays at zero."""
        if self.head is not None:
            for layer in self.head[:3]:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def mean(self, observed: torch.Tensor | None, domain: torch.Tensor, n_actions: int,
             mask: torch.Tensor) -> torch.Tensor:
        """The chunk ``(B, n_actions, W)`` (normalised, zero on padded dimensions) from the
        observation features ``observed`` (``None``: the per-domain mean alone)."""
        mu = self.bias[domain][:, :n_actions]
        if self.head is not None and observed is not None:
            mu = mu + self.head(observed).reshape(-1, self.max_actions, self.width)[:, :n_actions]
        return mu * mask[:, None].to(mu.dtype)

    def error(self, model: "Cosmos3", mu: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
              batch: WorldBatch) -> torch.Tensor:
        """Mean absolute error of ``mu`` to the clean padded chunk over the real dimensions
        and real chunk steps."""
        err = (mu - actions).abs()
        return masked_mean(err, mask, model._action_valid(batch, err.shape[:2]))

    def start(self, s, noise):
        if "actions" not in s.mode.noisy:
            return
        assert s.domain is not None and s.mask is not None
        mu = self.mean(s.observation[1], s.domain, noise["actions"].shape[1], s.mask)
        if s.learn:  # the prior learns by regression; the flow starts from it
            s.losses["action_prior"] = self.error(s.model, mu, s.clean["actions"], s.mask, s.batch)
        noise["actions"] = noise["actions"] * self.prior_noise + mu.detach()
        if self.relative:
            s.origin["actions"] = mu.detach()

    def without_towers(self, s, noise):
        return {"actions": noise["actions"]} if set(s.mode.noisy) == {"actions"} else {}

    def noise_scale(self, mode, stream):
        return self.prior_noise if stream == "actions" else None

    def prior_loss(self, model, batch, actions, mask, domain, video_windows):
        mu = self.mean(model.observe(batch, batch.batch_size, domain)[1], domain, actions.shape[1], mask)
        return self.error(model, mu, actions, mask, batch)

    def prior_parameters(self, model):
        """Its own and those of the stem it reads (the keypoints)."""
        stem = model.part("keypoints")
        return ([self.bias] + (list(stem.parameters()) if stem is not None else [])
                + (list(self.head.parameters()) if self.head is not None else []))

    def frozen_after_prior(self, model):
        """All but the stem's projection onto the action tokens, so a ``steps 0`` policy
        stays exactly what the phase fitted."""
        stem = model.part("keypoints")
        side = {id(p) for p in stem.stem.out.parameters()} if stem is not None else set()
        return [p for p in self.prior_parameters(model) if id(p) not in side]


class VideoPriorPart(Part):
    """:class:`~cosmos3_robot.model.video_prior.VideoPrior` (``net``): the future frames
    from the current one, the chunk, the state and the embodiment. It learns from every
    mode that holds a clip and its actions (and beside the video autoencoder); forward
    dynamics' video flow starts from its frames' latents."""

    key = "video_prior"
    prior = True

    def __init__(self, c: Cosmos3Config):
        super().__init__()
        self.net = VideoPrior(c.max_actions, c.max_action_width, c.n_action_domains)
        self.prior_noise = c.flow.prior_noise
        self.loss_weight = c.flow.prior_loss_weight

    def reset_parameters(self) -> None:
        self.net.reset_parameters()

    @staticmethod
    def applies(mode: Mode) -> bool:
        """Whether ``mode``'s video flow starts here: future frames generated from given
        context and actions (forward dynamics)."""
        return "video_future" in mode.noisy and "video_context" in mode.clean and "actions" in mode.clean

    def frames(self, model: "Cosmos3", batch: WorldBatch, n_frames: int) -> torch.Tensor:
        """``(B, n_frames, 3, H, W)`` in [-1, 1] after the batch's context frames (the last
        of them is "now"), from its actions (the clean chunk), state and embodiments."""
        B = batch.batch_size
        n_ctx = batch.n_context_frames
        if batch.video is None or n_ctx < 1:
            raise ValueError("video: the video prior needs the context frames (B, F, 3, H, W)")
        model._check_images(batch.video, "video", B)
        if batch.actions is None:
            raise ValueError("actions: the video prior needs the action chunk (B, T, D)")
        actions, _ = model._padded_actions(batch, B)
        state = model._padded_state(batch, B)
        st = actions.new_zeros(B, model.config.max_action_width) if state is None else state[0]
        now = batch.video[:, n_ctx - 1].to(model.device, model.special.dtype)
        return self.net(now, actions, st, model.domain_ids(batch.embodiment, B), n_frames)

    def loss(self, model: "Cosmos3", batch: WorldBatch, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Its regression loss (scalar, dB; :func:`frame_log_error`): its frames (``frames``
        when already computed) against the clip's real future frames."""
        n_ctx = batch.n_context_frames
        if batch.video is None or not 1 <= n_ctx < batch.video.shape[1]:
            raise ValueError("video: the video prior needs context and future frames (B, F, 3, H, W)")
        future = batch.video[:, n_ctx:].to(model.device, model.special.dtype)
        if frames is None:
            frames = self.frames(model, batch, future.shape[1])
        return frame_log_error(frames, future)

    def start(self, s, noise):
        mode = s.mode
        learns = s.learn and any(p.requires_grad for p in self.parameters()) and all(
            mode.has(x) for x in ("video_context", "video_future", "actions"))
        if not (learns or self.applies(mode)):
            return
        # one pass: its loss unless frozen (freeze_prior), and where forward dynamics starts
        with torch.set_grad_enabled(learns and torch.is_grad_enabled()):
            frames = self.frames(s.model, s.batch, s.n_future_frames)
        if learns:
            s.losses["video_prior"] = self.loss(s.model, s.batch, frames)
        s.video_frames = frames.detach()
        if self.applies(mode) and s.towers:
            with torch.no_grad():
                mu = s.model.prior_frame_tokens(s.batch, s.video_frames)
            noise["video_future"] = noise["video_future"] * self.prior_noise + mu

    def without_towers(self, s, noise):
        return {"video": s.video_frames} if self.applies(s.mode) else {}

    def noise_scale(self, mode, stream):
        return self.prior_noise if stream == "video_future" and self.applies(mode) else None

    def prior_loss(self, model, batch, actions, mask, domain, video_windows):
        if batch.video is None or batch.n_context_frames >= batch.video.shape[1]:
            return None  # no future frames to learn from
        B = batch.batch_size
        return self.loss(model, batch if video_windows is None or video_windows >= B else batch.head(video_windows))

    def prior_parameters(self, model):
        return list(self.net.parameters())

    def encoder_loss(self, model, batch):
        lat_ctx = model._context_latents(batch.n_context_frames)
        n_lat = model._context_latents(batch.video.shape[1]) if batch.video is not None else 0
        if batch.actions is None or not 0 < lat_ctx < n_lat:
            return None
        return self.loss_weight * self.loss(model, batch)

    def encoder_parameters(self):
        return list(self.net.parameters())


def build_parts(c: Cosmos3Config) -> nn.ModuleDict:
    """The parts ``c`` switches on, by :attr:`Part.key`, in hook order (the action prior
    reads what the observation parts before it produce)."""
    parts: list[Part] = []
    if c.state_input:
        parts.append(StateInput(c))
    if c.visual_keypoints:
        parts.append(KeypointInput(c))
    if c.action_prior:
        observed = sum(c.max_action_width if isinstance(p, StateInput) else p.features for p in parts)
        parts.append(ActionPrior(c, observed))
    if c.video_prior:
        parts.append(VideoPriorPart(c))
    return nn.ModuleDict({p.key: p for p in parts})


LEGACY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("state_in.", "parts.state.proj."), ("keypoints.", "parts.keypoints.stem."),
    ("prior_bias", "parts.action_prior.bias"), ("prior_head.", "parts.action_prior.head."),
    ("video_prior.", "parts.video_prior.net."))
"""Tensor names of checkpoints saved before the parts were modules -> today's."""


def rename_legacy(state: dict[str, Any], prefix: str = "") -> None:
    """Rename, in place, ``state``'s tensors saved under the names of
    :data:`LEGACY_PREFIXES` (below ``prefix``, a module's place in a larger state dict)."""
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in LEGACY_PREFIXES:
            if rest == old or (old.endswith(".") and rest.startswith(old)):
                state[prefix + new + rest[len(old):]] = state.pop(key)
                break

