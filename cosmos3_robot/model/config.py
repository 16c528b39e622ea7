"""Model configuration: grouped dataclasses, presets as data.

``Cosmos3Config`` describes the whole model in four groups: ``transformer`` (the shared
shape and the AR inputs: byte text, ViT patches), ``video`` (latents from a pluggable
encoder, the video prior), ``action`` (padded actions through per-domain projections, what
the action side reads, the action prior) and ``flow`` (the flow-matching objective). Presets are
instances registered by name; ``cosmos3-robot model-info`` prints their parameter counts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence


DEFAULT_DOMAINS: tuple[str, ...] = (
    "single_arm", "single_arm_10d", "dual_arm", "humanoid", "agibot", "av", "camera",
    "libero", "libero_10d", "droid", "sim_arm", "sim_arm_absolute",
)
"""Built-in embodiments, each its own action-projection domain (new ones append)."""


@dataclass(frozen=True)
class FlowConfig:
    """Flow matching for DM tokens (``x_t = (1 - t) * noise + t * x``, t = 1 is clean).

    Attributes:
        timestep_sampling: ``"logit_normal"`` (released config), ``"uniform"`` or ``"beta"``
            (GR00T: ``t = (0.999 - Beta(1.5, 1)) / 0.999``).
        logit_mean, logit_std: parameters of the logit-normal sampler.
        shift: timestep shift; > 1 spends more of training and sampling at high noise
            (the reference grows it with resolution). Applied to noise level ``1 - t`` as
            ``s * n / (1 + (s - 1) * n)``.
        action_loss_weight: weight of the action velocity loss relative to video (x10 in the
            released config).
        video_loss_weight: weight of the video velocity loss.
        text_loss_weight: weight of the optional AR next-token cross-entropy.
        text_dropout: probability of training a sample with empty text (for guidance).
        recon_loss_weight: weight of the reconstruction loss that trains a trainable video
            encoder (the conv autoencoder) alongside; the flow itself sees detached latents.
        recon_samples: clips per batch that train the encoder by reconstruction (its
            backward at full resolution is a third of a ``small`` training step on a CPU);
            the others are encoded without grad. ``0``: every clip.
        prior_loss_weight: weight of the priors' regression losses (MSE to the clean chunk
            with ``Cosmos3Config.action_prior``, to the future latents with
            ``Cosmos3Config.video_prior``).
        prior_noise: with ``Cosmos3Config.action_prior``, the std of the action flow's
            starting noise around the prior (normalised units; 1: unit noise as without a
            prior). The flow then carries ``prior + prior_noise * noise`` to the data, its
            action head's output is scaled by ``prior_noise`` and its loss is measured in
            those units (a data-dependent prior as in PriorGrad, Lee et al. 2022): a flow
            that has learned little moves a sample little from the prior's chunk. The same
            std, head scaling and loss units hold for the video flow of forward dynamics with
            ``Cosmos3Config.video_prior``.
        relative_to_prior: with ``Cosmos3Config.action_prior``, the towers read a noisy
            chunk as its offset from the prior's chunk (``x_t - prior``, which starts at
            ``prior_noise * noise``) rather than as the chunk itself; the path, the velocity
            they predict and the loss are the same. A flow that has learned little then
            predicts the mean offset, about zero, and leaves the prior's chunk where it is;
            read as the chunk, it predicts the data's mean action and pulls the chunk there
            (docs/experiments/2026-12-02-relative-flow.md). Off by default so checkpoints
            saved before the field existed load as they were trained.
    """

    timestep_sampling: Literal["logit_normal", "uniform", "beta"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    action_loss_weight: float = 10.0
    video_loss_weight: float = 1.0
    text_loss_weight: float = 0.0
    text_dropout: float = 0.1
    recon_loss_weight: float = 1.0
    recon_samples: int = 4
    prior_loss_weight: float = 10.0
    prior_noise: float = 1.0
    relative_to_prior: bool = False


@dataclass(frozen=True)
class TransformerConfig:
    """The shared transformer (each layer holds one parameter set per tower) and the AR inputs.

    Attributes:
        dim: model width. n_layers: layers. n_heads: attention heads (``dim % n_heads == 0``).
        ffn_mult: SwiGLU hidden width as a multiple of ``dim``.
        rope_theta: RoPE base. rope_sections: head-dim pairs given to the (t, h, w) axes;
            they must sum to ``head_dim // 2``; empty means an even split favouring t.
        block_causal: clean DM conditioning tokens do not attend to noisy targets, so their
            K/V can be cached across denoising steps.
        time_base_tps: TPS_base of the mRoPE (6 = 24 fps / 4).
        max_text_len: text tokens per sample (UTF-8 bytes + BOS). Longer text is an error.
        vit_patch: ViT patch side (Reasoner images); vit_merge: merge factor of neighbouring
            patches (2 -> 2x2 merge).
    """

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn_mult: float = 2.0
    rope_theta: float = 10000.0
    rope_sections: tuple[int, int, int] = ()  # type: ignore[assignment]
    block_causal: bool = False
    time_base_tps: float = 6.0
    max_text_len: int = 64
    vit_patch: int = 8
    vit_merge: int = 2


@dataclass(frozen=True)
class VideoConfig:
    """The video side of the Generator tower.

    Attributes:
        image_size: square AR/DM image side in pixels.
        video_encoder: ``"patchify"`` (raw pixels), ``"conv_ae"`` (this project's compact
            video autoencoder) or ``"external"`` (an adapter around a user's VAE).
        latent_channels, spatial_compression, temporal_compression: the encoder's latent
            shape; clips must have ``1 + k * temporal_compression`` frames.
        video_anchored: with ``conv_ae``, frame groups after the first are coded as their
            differences from the clip's first frame and decoded onto the real first frame
            when known (see :class:`~cosmos3_robot.model.vae.ConvVideoAE`). Off by default so
            checkpoints saved before the field existed load with the coding they were
            trained with.
        video_gated: with ``video_anchored``, the decoder blends its differences onto the
            anchor through a per-pixel gate (static pixels stay exactly the anchor's). Off by
            default for the same reason.
        video_prior: forward dynamics starts from a learned prediction instead of zero-mean
            noise: a small conv net on the context latents and the clean action chunk,
            trained by regression to the future latents
            (:class:`~cosmos3_robot.model.video_prior.VideoPrior`); the video flow transports
            ``prior + prior_noise * noise`` to the data in modes whose actions are given.
            Off by default so checkpoints saved before the field existed load as they were
            trained.
        dm_patch: latent patch side grouped into one DM token.
    """

    image_size: int = 32
    video_encoder: Literal["patchify", "conv_ae", "external"] = "patchify"
    latent_channels: int = 3
    spatial_compression: int = 1
    temporal_compression: int = 1
    video_anchored: bool = False
    video_gated: bool = False
    video_prior: bool = False
    dm_patch: int = 8


@dataclass(frozen=True)
class ActionConfig:
    """The action side of the Generator tower and what it reads besides the video.

    Attributes:
        max_action_width: padded action width (64 in the reference).
        n_action_domains: one input/output projection per embodiment domain (32).
        max_actions: longest action chunk.
        action_domains: embodiment names owning the action projections, in domain order
            (at most ``n_action_domains``); unknown names are rejected.
        state_input: read the robot's proprioception (``WorldBatch.state``, per-domain
            projection) and add it to every action token. Off by default so checkpoints
            saved before the field existed load as they were trained.
        visual_keypoints: with ``> 0``, the observation stem reads every camera's current
            frame (``WorldBatch.views``, or the last context frame with one view) into that
            many spatial-softmax keypoints per camera, its conv stacks conditioned on the
            instruction (FiLM), and adds them, projected, to every action token
            (:mod:`~cosmos3_robot.model.keypoints`). ``0``: off.
        keypoint_film_layers: conv layers of each camera's stem that the instruction scales
            and shifts (FiLM): 1, the third; 2, the second and third (the built-in tasks'
            recipe: pick_place 4/20 -> 13/20 on the development seeds). 1 by default so
            checkpoints saved before the field existed load as they were trained.
        n_views: cameras the observation stem reads (one conv stack each, in the order of
            the recipe's ``window.views``).
        action_prior: the action flow starts from a learned prior instead of zero-mean noise:
            a per-domain mean chunk plus a small head on the unprojected observation (padded
            state, keypoint features), trained by regression; the flow transports ``prior + noise`` to the data
            (:meth:`~cosmos3_robot.model.cosmos3.Cosmos3.action_prior_mean`). Off by default so
            checkpoints saved before the field existed load as they were trained.
    """

    max_action_width: int = 64
    n_action_domains: int = 32
    max_actions: int = 32
    action_domains: tuple[str, ...] = DEFAULT_DOMAINS
    state_input: bool = False
    visual_keypoints: int = 0
    keypoint_film_layers: int = 1
    n_views: int = 1
    action_prior: bool = False


GROUPS: dict[str, type] = {"transformer": TransformerConfig, "video": VideoConfig, "action": ActionConfig}
"""The config's groups besides ``flow``. Field names are unique across them, so a flat key
(``dim``, ``video_prior``) names one field: recipes' ``model.overrides``, :func:`preset` and
checkpoints saved before the config was grouped use flat keys."""
_GROUP_OF: dict[str, str] = {f.name: g for g, c in GROUPS.items() for f in dataclasses.fields(c)}
_TUPLES = ("rope_sections", "action_domains")  # JSON lists -> tuples


@dataclass(frozen=True)
class Cosmos3Config:
    """A compact Cosmos-3-style Mixture-of-Transformers: ``transformer`` (both towers' shape and
    the AR inputs), ``video`` and ``action`` (the Generator tower's two sides) and ``flow`` (the
    objective). Every group field also reads flat: ``config.dim`` is ``config.transformer.dim``.
    Build one with :meth:`make` or :meth:`from_dict` (flat or grouped keys), change it with
    :meth:`replace`."""

    name: str = "custom"
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    action: ActionConfig = field(default_factory=ActionConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        group = _GROUP_OF.get(key)
        if group is None:
            raise AttributeError(f"Cosmos3Config has no field {key!r}")
        return getattr(object.__getattribute__(self, group), key)

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"Cosmos3Config {self.name!r}: {msg}")

        need(self.dim % self.n_heads == 0, f"dim {self.dim} must be divisible by n_heads {self.n_heads}")
        need(self.head_dim % 2 == 0, f"head_dim {self.head_dim} must be even for RoPE")
        need(sum(self.sections) == self.head_dim // 2,
             f"rope_sections {self.sections} must sum to head_dim // 2 = {self.head_dim // 2}")
        need(self.image_size % (self.vit_patch * self.vit_merge) == 0,
             f"image_size {self.image_size} must be a multiple of vit_patch * vit_merge")
        latent = self.image_size // self.spatial_compression
        need(self.image_size % self.spatial_compression == 0 and latent % self.dm_patch == 0,
             f"image_size / spatial_compression = {latent} must be a multiple of dm_patch {self.dm_patch}")
        need(not self.video_gated or self.video_anchored, "video_gated needs video_anchored")
        need(self.video_encoder != "patchify" or (self.spatial_compression, self.temporal_compression) == (1, 1),
             "the raw 'patchify' encoder has no compression (spatial and temporal 1)")
        need(0.0 < self.flow.prior_noise <= 1.0, f"flow.prior_noise must be in (0, 1], got {self.flow.prior_noise}")
        need(self.visual_keypoints >= 0, f"visual_keypoints must be >= 0, got {self.visual_keypoints}")
        need(self.keypoint_film_layers in (1, 2),
             f"keypoint_film_layers must be 1 or 2, got {self.keypoint_film_layers}")
        need(self.n_views >= 1, f"n_views must be >= 1, got {self.n_views}")
        need(self.n_action_domains >= 1 and self.max_action_width >= 1, "action domains and width must be >= 1")
        need(len(self.action_domains) <= self.n_action_domains,
             f"{len(self.action_domains)} action_domains exceed n_action_domains {self.n_action_domains}")
        need(len(set(self.action_domains)) == len(self.action_domains), "action_domains has duplicates")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def sections(self) -> tuple[int, int, int]:
        if self.rope_sections:
            return tuple(self.rope_sections)  # type: ignore[return-value]
        half = self.head_dim // 2
        hw = half // 4
        return (half - 2 * hw, hw, hw)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.spatial_compression

    @property
    def tokens_per_latent_frame(self) -> int:
        return (self.latent_size // self.dm_patch) ** 2

    @property
    def vit_tokens_per_image(self) -> int:
        return (self.image_size // (self.vit_patch * self.vit_merge)) ** 2

    @staticmethod
    def _split(changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Flat and grouped keys -> ``{group: {field: value}}`` (plus ``""``: ``name``);
        unknown keys raise, naming the known ones."""
        out: dict[str, dict[str, Any]] = {"": {}, "flow": {}, **{g: {} for g in GROUPS}}
        for k, v in changes.items():
            if k == "name":
                out[""]["name"] = v
            elif k == "flow" or k in GROUPS:
                if isinstance(v, (FlowConfig, *GROUPS.values())):
                    v = dataclasses.asdict(v)
                if not isinstance(v, dict):
                    raise ValueError(f"Cosmos3Config: {k} must be a mapping of its fields, got {type(v).__name__}")
                out[k].update(v)
            elif k in _GROUP_OF:
                out[_GROUP_OF[k]][k] = v
            else:
                raise ValueError(f"Cosmos3Config: unknown field(s) [{k!r}]; known: name, flow, "
                                 f"{', '.join(GROUPS)} and their fields {sorted(_GROUP_OF)}")
        for g, fields_ in out.items():
            for k in _TUPLES:
                if k in fields_:
                    fields_[k] = tuple(fields_[k])
            if g == "flow":
                known = {f.name for f in dataclasses.fields(FlowConfig)}
            elif g:
                known = {f.name for f in dataclasses.fields(GROUPS[g])}
            else:
                continue
            unknown = sorted(set(fields_) - known)
            if unknown:
                raise ValueError(f"Cosmos3Config: unknown {g} field(s) {unknown}; known: {sorted(known)}")
        return out

    @classmethod
    def make(cls, **fields_: Any) -> "Cosmos3Config":
        """A config from flat keys (``dim=320, video_prior=True``), groups as mappings
        (``flow={...}``), or both."""
        return cls().replace(**fields_)

    def replace(self, **changes: Any) -> "Cosmos3Config":
        """This config with ``changes`` (flat keys, or groups as mappings of their fields)."""
        parts = self._split(changes)
        groups = {g: dataclasses.replace(getattr(self, g), **parts[g]) for g in ("flow", *GROUPS) if parts[g]}
        return dataclasses.replace(self, **parts[""], **groups)

    def with_domains(self, names: "Sequence[str]") -> "Cosmos3Config":
        """This config with an action domain for each of ``names`` it lacks, appended in
        order: existing domains keep their indices (old checkpoints load unchanged), a new
        embodiment gets the next free projection of the ``n_action_domains`` allocated."""
        add = [n for n in dict.fromkeys(names) if n not in self.action_domains]
        if not add:
            return self
        if len(self.action_domains) + len(add) > self.n_action_domains:
            raise ValueError(f"Cosmos3Config {self.name!r}: embodiments {add} need action domains, but "
                             f"{len(self.action_domains)} of n_action_domains={self.n_action_domains} are "
                             f"taken; raise model.overrides.n_action_domains (a fresh model only)")
        return self.replace(action_domains=self.action_domains + tuple(add))

    def to_dict(self) -> dict[str, Any]:
        """Grouped: ``{"name", "transformer": {...}, "video": {...}, "action": {...}, "flow": {...}}``."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cosmos3Config":
        """From :meth:`to_dict`'s grouped form or the flat form checkpoints were saved in
        before the config was grouped (fields they lack take their defaults)."""
        return cls.make(**d)


PRESETS: dict[str, Cosmos3Config] = {
    # Unit tests: < 2M parameters, 32 px frames, raw patches.
    "tiny": Cosmos3Config.make(name="tiny", dim=64, n_layers=2, n_heads=4, image_size=32, vit_patch=8,
                          dm_patch=4, max_text_len=48, max_actions=32),
    # CPU demo: ~25M parameters, 64 px frames, the compact conv autoencoder (8x spatial).
    # The deployable presets are block-causal (like pi0's prefix/suffix attention): clean
    # conditioning runs once per chunk and each denoising step runs only the noisy tokens,
    # half the tokens of a policy step (benchmarks/inference_latency.py).
    "small": Cosmos3Config.make(name="small", dim=320, n_layers=8, n_heads=5, ffn_mult=2.5, block_causal=True,
                           image_size=64, vit_patch=8, video_encoder="conv_ae",
                           latent_channels=8, spatial_compression=8, temporal_compression=4,
                           video_anchored=True, video_gated=True, state_input=True, dm_patch=2, max_text_len=64,
                           max_actions=32),
    # Jetson Orin / RTX class: ~250M parameters, 128 px frames.
    "compact": Cosmos3Config.make(name="compact", dim=768, n_layers=14, n_heads=12, ffn_mult=2.75, block_causal=True,
                             image_size=128, vit_patch=16, video_encoder="conv_ae",
                             latent_channels=16, spatial_compression=16, temporal_compression=4,
                             video_anchored=True, video_gated=True, state_input=True, dm_patch=2,
                             max_text_len=96, max_actions=64),
}


def preset(name: str, **overrides: Any) -> Cosmos3Config:
    """A preset by name, with field overrides (``flow`` may be a dict of flow overrides)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
