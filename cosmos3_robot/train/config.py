"""Training settings: :class:`TrainConfig` (what a recipe's ``train:`` section holds), read
from a mapping with :func:`train_config_from`, and the learning-rate schedule it implies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cosmos3_robot.model.modes import get_mode


@dataclass(frozen=True)
class TrainConfig:
    """Attributes:
        steps: optimizer steps. batch_size: samples per rank per micro-batch.
        grad_accum: micro-batches per optimizer step.
        lr: base learning rate; action_lr_mult: multiplier for the action projections.
        weight_decay: AdamW decay (matrices only). warmup: linear warm-up steps.
        min_lr_ratio: final cosine learning rate as a fraction of ``lr``.
        grad_clip: max global gradient norm (0 disables).
        ema: EMA decay per step (0 disables).
        amp: bf16 autocast (weights and optimizer stay float32) in every phase, where the
            device computes bf16 natively (:func:`native_bf16`): CUDA, and CPUs with
            AVX512-BF16 or AMX. On 2 such CPU cores a prior step of the built-in recipe computes
            in 123-134 ms against 157-161 ms, at the same loss after 500 equal steps
            (docs/experiments/2026-12-02-seed-spread.md). compile: ``torch.compile`` the model.
        modes: mode name -> sampling weight.
        log_every / ckpt_every: in optimizer steps. keep: checkpoints kept.
        seed: base seed of data order, noise and modes.
        wandb_project: also log to Weights & Biases under this project when ``wandb`` is
            installed (``WANDB_MODE=offline`` keeps it local).
        max_minutes: wall-clock budget. After ``budget_probe`` steps the step rate is
            measured and ``steps`` shortened (never lengthened) so that the warm-up + cosine
            schedule ends within the budget; the shortened count is logged and stored.
        encoder_steps: reconstruction-only steps of a trainable video encoder (the conv
            autoencoder) before the world model trains, on batches of ``batch_size`` clips at
            ``encoder_lr`` (AdamW, linear warm-up over ``warmup`` steps, then constant). The
            encoder is then frozen: the flow learns on latents that no longer move under it,
            and steps skip the encoder's reconstruction pass. Runs on a fresh start only (a
            resumed run has its encoder in the checkpoint); under ``max_minutes`` it counts
            against the budget and stops at ``pretrain_fraction`` of it. A model whose encoder has no
            trainable weights (raw patches, an external VAE) skips it. ``0``: the encoder
            trains alongside the world model by ``flow.recon_loss_weight`` (never frozen).
            A model with ``video_prior`` trains the prior in the same steps
            (:meth:`~cosmos3_robot.model.cosmos3.Cosmos3.encoder_loss`).
        prior_steps: regression-only steps of the action prior (``Cosmos3Config.action_prior``:
            the keypoint stem, the prior head and the per-domain mean,
            :meth:`~cosmos3_robot.model.cosmos3.Cosmos3.prior_loss`) before the world model
            trains, at ``prior_lr`` the same way as ``encoder_steps`` (after them). The towers
            never run, so a step costs a fraction of a training step. The prior keeps training
            with the flow afterwards (``flow.prior_loss_weight``): the flow then starts from a
            chunk that already reads the camera instead of learning that path through it. A
            fresh start only; under ``max_minutes`` both pretraining phases together stop at
            ``pretrain_fraction`` of the budget. A model with ``video_prior`` trains that prior in the same
            steps (on ``video_prior_batch_size`` windows of each batch); a model with neither
            prior skips it.
        prior_lr: the prior phase's peak learning rate; after the warm-up it follows a
            cosine to zero over the phase (its steps, or under ``max_minutes`` its share of the
            budget, whichever ends first).
        freeze_prior: after ``prior_steps`` (and on resuming such a run), the priors' own
            parameters stop training (the stem's projection onto the action tokens still
            learns with the flow): the world model trains around a fixed observation path,
            and a ``steps 0`` policy is exactly what the prior phase fitted. Without it the
            prior keeps learning by ``flow.prior_loss_weight`` at the world model's batch.
        pretrain_fraction: under ``max_minutes``, the share of the budget the pretraining
            phases may spend (the rest trains the world model).
        pretrain_batch_size: batch of the pretraining phases (``None``: ``batch_size``); a
            prior step never runs the towers, so it affords a larger batch.
        video_prior_batch_size: in the prior phase, how many of each batch's windows the video
            prior learns from (``None``: all). A video-prior sample costs several action-prior
            samples, and on a CPU budget the action prior is what acts.
        strategy: with several processes, ``"ddp"`` (replicated weights) or ``"fsdp"``
            (FSDP2: parameters, gradients and optimizer state sharded per MoT layer; for the
            larger presets). Checkpoints hold full tensors either way.
    """

    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    action_lr_mult: float = 5.0
    weight_decay: float = 0.05
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema: float = 0.999
    amp: bool = True
    compile: bool = False
    modes: dict[str, float] = field(default_factory=lambda: {
        "policy": 0.5, "forward_dynamics": 0.25, "inverse_dynamics": 0.25})
    log_every: int = 10
    ckpt_every: int = 200
    keep: int = 3
    seed: int = 0
    wandb_project: str | None = None
    strategy: str = "ddp"
    max_minutes: float | None = None
    budget_probe: int = 10
    encoder_steps: int = 0
    encoder_lr: float = 1e-3
    prior_steps: int = 0
    prior_lr: float = 1e-3
    freeze_prior: bool = False
    pretrain_fraction: float = 0.5
    pretrain_batch_size: int | None = None
    video_prior_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in self.modes:
            get_mode(name)
        if not self.modes or any(w < 0 for w in self.modes.values()) or sum(self.modes.values()) <= 0:
            raise ValueError(f"train.modes: expected positive weights, got {self.modes}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"train.strategy: expected 'ddp' or 'fsdp', got {self.strategy!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train: steps, batch_size and grad_accum must be >= 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"train.max_minutes: expected > 0 minutes or null, got {self.max_minutes}")
        if not 0.0 < self.pretrain_fraction <= 1.0:
            raise ValueError(f"train.pretrain_fraction: expected a share of the budget in (0, 1], "
                             f"got {self.pretrain_fraction}")
        if self.pretrain_batch_size is not None and self.pretrain_batch_size < 1:
            raise ValueError(f"train.pretrain_batch_size: expected >= 1 or null, got {self.pretrain_batch_size}")
        if self.video_prior_batch_size is not None and self.video_prior_batch_size < 1:
            raise ValueError(f"train.video_prior_batch_size: expected >= 1 or null, got {self.video_prior_batch_size}")
        for phase in ("encoder", "prior"):
            steps, lr = getattr(self, f"{phase}_steps"), getattr(self, f"{phase}_lr")
            if steps < 0 or not lr > 0:
                raise ValueError(f"train: {phase}_steps >= 0 and {phase}_lr > 0 expected, got {steps} and {lr}")


def train_config_from(d: dict[str, Any] | None) -> TrainConfig:
    d = dict(d or {})
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"train: unknown field(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
