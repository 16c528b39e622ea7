"""``Cosmos3Config``: the LeRobot configuration of the cosmos3 policy type."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig

DOMAIN = "lerobot"
"""Action-projection domain of LeRobot datasets: actions are the dataset's own vector."""


@PreTrainedConfig.register_subclass("cosmos3")
@dataclass
class Cosmos3Config(PreTrainedConfig):
    """The cosmos3-robot Mixture-of-Transformers world-action model inside LeRobot.

    The model sees one camera (``camera``, resized to the preset's image size) and the
    episode's task text, and samples a chunk of ``chunk_size`` actions by flow matching.
    Actions are the dataset's ``action`` vector (at most 64 dims), normalised by LeRobot's
    processors like ACT's. ``observation.state`` (normalised like ACT's) is the model's
    proprioceptive input for presets with ``state_input`` (``small``, ``compact``); ``tiny``
    conditions on video and text only. The relative-action embodiment codecs of
    ``cosmos3-robot train`` are the route for state-relative actions.

    Args:
        preset: model preset of cosmos3-robot (``tiny``, ``small``, ``compact``; see
            ``cosmos3-robot models``).
        block_causal: clean conditioning tokens do not attend to noisy ones (their K/V are
            then computed once per chunk); ``None``: the preset's choice.
        camera: the image feature the model sees; ``None``: the first image feature.
        chunk_size: actions per sampled chunk. n_action_steps: how many of them are
            executed before sampling the next chunk (ACT's action queue).
        num_inference_steps: flow-matching denoising steps per chunk; sampler ``euler`` or
            ``heun``; guidance: classifier-free guidance on the task text (1 = off).
            ``0`` (with ``action_prior``): the action prior's chunk, the towers not run.
        temperature: scale of the sampler's starting noise in [0, 1] (``Cosmos3.generate``).
        visual_keypoints, action_prior, prior_noise: the model's camera keypoint stem, learned
            action prior and the flow's noise scale around it (``Cosmos3Config.visual_keypoints``,
            ``action_prior``, ``FlowConfig.prior_noise``; "The camera on the action side" in
            docs/experiments/2026-12-01-learning-quality-log.md). Inside LeRobot's loop the prior trains with the flow from the first step
            (``cosmos3-robot train`` can pretrain it alone first, ``train.prior_steps``).
        future_frames: 0 trains the policy mode on actions alone. ``k * temporal_compression``
            (4, 8, ... for the presets with a video autoencoder, 1, 2, ... for ``tiny``) also
            loads that many future frames per sample and trains the world-model mixture
            (video+action policy 2 : forward dynamics 1 : inverse dynamics 1).
        fps: the dataset's frame rate in Hz (from the dataset when LeRobot builds the policy).
        optimizer_*: AdamW preset; scheduler_warmup_steps / scheduler_decay_steps: cosine
            schedule with warm-up (scaled to shorter runs by LeRobot).
    """

    n_obs_steps: int = 1
    preset: str = "small"
    block_causal: bool | None = None
    camera: str | None = None
    chunk_size: int = 16
    n_action_steps: int = 8
    num_inference_steps: int = 4
    sampler: str = "euler"
    guidance: float = 1.0
    temperature: float = 1.0
    future_frames: int = 0
    fps: float = 10.0
    visual_keypoints: int = 0
    action_prior: bool = False
    prior_noise: float = 1.0

    normalization_mapping: dict[str, NormalizationMode] = field(default_factory=lambda: {
        "VISUAL": NormalizationMode.IDENTITY,  # pixels in [0, 1]; the model maps them to [-1, 1]
        "STATE": NormalizationMode.MEAN_STD,
        "ACTION": NormalizationMode.MEAN_STD,
    })

    optimizer_lr: float = 3e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_weight_decay: float = 0.01
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 100
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 3e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        from cosmos3_robot.model import PRESETS
        from cosmos3_robot.model.flow import check_temperature

        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; available: {sorted(PRESETS)}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps: expected 1..chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        if self.n_obs_steps != 1:
            raise ValueError(f"n_obs_steps: the cosmos3 policy takes the current frame only (1), got {self.n_obs_steps}")
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"sampler: expected 'euler' or 'heun', got {self.sampler!r}")
        if not 0 <= self.num_inference_steps <= 1000 or (self.num_inference_steps == 0 and not self.action_prior):
            raise ValueError(f"num_inference_steps: expected 1..1000 (0 only with action_prior: the prior's "
                             f"chunk), got {self.num_inference_steps}")
        check_temperature(self.temperature)
        self.model_config()  # the model's own checks (visual_keypoints >= 0, prior_noise in (0, 1])
        tc = PRESETS[self.preset].temporal_compression
        if self.future_frames < 0 or self.future_frames % tc:
            raise ValueError(f"future_frames: expected a multiple of the preset's temporal compression {tc}, "
                             f"got {self.future_frames}")

    def model_config(self):
        """The cosmos3-robot model configuration (one action domain: this dataset's actions)."""
        from cosmos3_robot.model import PRESETS

        base = PRESETS[self.preset]
        block_causal = base.block_causal if self.block_causal is None else self.block_causal
        return base.replace(block_causal=block_causal, action_domains=(DOMAIN,),
                            max_actions=max(base.max_actions, self.chunk_size),
                            visual_keypoints=self.visual_keypoints, action_prior=self.action_prior,
                            flow={"prior_noise": self.prior_noise})

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, betas=self.optimizer_betas, weight_decay=self.optimizer_weight_decay,
                           grad_clip_norm=self.optimizer_grad_clip_norm)

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(num_warmup_steps=self.scheduler_warmup_steps,
                                                    num_decay_steps=self.scheduler_decay_steps,
                                                    peak_lr=self.optimizer_lr, decay_lr=self.scheduler_decay_lr)

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("input_features: the cosmos3 policy needs at least one image feature "
                             "(observation.images.*)")
        if self.camera is not None and self.camera not in self.image_features:
            raise ValueError(f"camera: {self.camera!r} is not an image feature; have {list(self.image_features)}")
        if self.action_feature is None or self.action_feature.type is not FeatureType.ACTION:
            raise ValueError("output_features: the cosmos3 policy needs an 'action' feature")
        width = self.action_feature.shape[0]
        if width > self.model_config().max_action_width:
            raise ValueError(f"action: {width} dims exceed the model's padded width "
                             f"{self.model_config().max_action_width}")

    @property
    def camera_key(self) -> str:
        return self.camera or next(iter(self.image_features))

    @property
    def observation_delta_indices(self) -> list[int] | None:
        return list(range(self.future_frames + 1)) if self.future_frames else None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
