"""One trainer for every recipe: a laptop CPU, one GPU, or many through ``torchrun``.

- Objectives: each optimizer step draws a mode (``policy``, ``forward_dynamics``,
  ``inverse_dynamics``, ...) from ``TrainConfig.modes`` with a generator seeded by the step,
  so every rank trains the same mode at the same step.
- Optimisation: AdamW with parameter groups (no decay on norms, biases and embeddings; the
  action projections at ``action_lr_mult`` times the base rate), linear warm-up then cosine
  decay, gradient clipping, gradient accumulation, EMA, bf16 autocast (CUDA, bf16 CPUs), optional
  ``torch.compile``.
- Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP (NCCL on
  GPUs, gloo on CPUs); each rank reads its own seeded index stream, so ranks see different
  data and all-reduced gradients keep their weights identical.
- State: checkpoints every ``ckpt_every`` steps (see :mod:`cosmos3_robot.train.state`);
  ``resume=True`` continues from the latest one, data position and RNG included, so the
  loss curve continues as if never stopped.
- Logging: ``metrics.jsonl`` (loss per mode, lr, samples/s) and a console line every
  ``log_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from cosmos3_robot.data.windows import collate
from cosmos3_robot.model.cosmos3 import Cosmos3
from cosmos3_robot.train.config import TrainConfig, lr_at
from cosmos3_robot.train.state import latest_checkpoint, load_optimizer_tensors, save_checkpoint


PRINT_EVERY_S = 20.0
"""Without a progress bar, training prints a line at most this often (every record still goes
to metrics.jsonl)."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA; a CPU with AVX512-BF16 or AMX, through
    oneDNN). Elsewhere bf16 autocast is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def param_groups(model: Cosmos3, cfg: TrainConfig) -> list[dict[str, Any]]:
    action, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("actions."):
            action.append(p)
        elif p.dim() < 2 or "embed" in name or name in ("special", "modality"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0, "name": "no_decay"},
        {"params": action, "weight_decay": 0.0, "lr_mult": cfg.action_lr_mult, "name": "action_proj"},
    ]


def _mix(*xs: int) -> int:
    """A fixed, platform-independent seed from integers (unlike ``hash`` of other types)."""
    h = 0
    for x in xs:
        h = (h * 1_000_003 + int(x) + 0x9E37) % (1 << 62)
    return h


class IndexStream:
    """An endless, seeded stream of dataset indices for one rank, addressable by position.

    Position ``p`` lies in block ``p // 1024``, drawn with a generator seeded by
    ``(seed, rank, block)``: resuming at a position reproduces the same indices without
    replaying the run, and different ranks draw different data.
    """

    BLOCK = 1024

    def __init__(self, weights: torch.Tensor, seed: int, rank: int):
        self.weights, self.seed, self.rank = weights.double(), seed, rank
        self._block: tuple[int, torch.Tensor] | None = None

    def at(self, position: int) -> int:
        b, off = divmod(position, self.BLOCK)
        if self._block is None or self._block[0] != b:
            g = torch.Generator().manual_seed(_mix(self.seed, self.rank, b))
            self._block = (b, torch.multinomial(self.weights, self.BLOCK, replacement=True, generator=g))
        return int(self._block[1][off])


class Trainer:
    def __init__(self, model: Cosmos3, dataset: Dataset, cfg: TrainConfig, run_dir: str | os.PathLike[str],
                 sample_weights: torch.Tensor | None = None, run_info: dict[str, Any] | None = None,
                 resume: bool = False, device: str | torch.device | None = None, quiet: bool = False):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.use_amp = cfg.amp and native_bf16(self.device)  # bf16 autocast in every phase (TrainConfig.amp)
        self.model = model.to(self.device)
        self.dataset = dataset
        weights = sample_weights if sample_weights is not None else torch.ones(len(dataset))  # type: ignore[arg-type]
        self.stream = IndexStream(weights, cfg.seed, self.rank)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
        self.step = 0
        self.position = 0
        self.quiet = quiet or self.rank != 0
        self.run_info = run_info or {}
        ckpt = self._resume_weights() if resume else None
        self.t_start = time.perf_counter()  # the wall-clock budget counts from here
        self._t_print = 0.0
        # the model says what it trains alone first (model/pretraining.py)
        if cfg.encoder_steps > 0:
            phase = model.encoder_phase()
            if phase is None:  # one recipe serves several presets; a fixed encoder has nothing to pretrain
                if not self.quiet:
                    print(f"[train] encoder_steps: the {model.config.video_encoder!r} video encoder has no "
                          "trainable weights; nothing to pretrain")
            else:
                if ckpt is None:  # a fresh start; before any wrapping, so ranks average by hand
                    self._pretrain(phase.name, phase.params, phase.loss, cfg.encoder_steps, cfg.encoder_lr,
                                   phase.metric, phase.salt)
                for p in phase.frozen:
                    p.requires_grad_(False)
        if cfg.prior_steps > 0 and ckpt is None:
            phase = model.prior_phase(cfg.video_prior_batch_size)
            if phase is None:
                if not self.quiet:
                    print("[train] prior_steps: the model has no prior (model action_prior / video_prior); "
                          "nothing to pretrain")
            else:
                self._pretrain(phase.name, phase.params, phase.loss, cfg.prior_steps, cfg.prior_lr, phase.metric,
                               phase.salt)
        if cfg.freeze_prior and cfg.prior_steps > 0:
            for p in model.frozen_prior_parameters():
                p.requires_grad_(False)
        self.fsdp = self.world > 1 and cfg.strategy == "fsdp"
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in self.model.core.layers:  # one FSDP unit per MoT layer, plus the rest
                fully_shard(layer)
            fully_shard(self.model)
        self.opt = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.95))
        if ckpt is not None:
            load_optimizer_tensors(self.opt, ckpt / "optimizer.safetensors", self.model if self.fsdp else None)
        self.net: torch.nn.Module = self.model
        if self.world > 1 and not self.fsdp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Modes leave some heads unused (e.g. no video head in inverse dynamics).
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                 find_unused_parameters=True)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _pretrain(self, phase: str, params: list[torch.nn.Parameter],
                  loss_fn: Callable[[Any, list[int]], torch.Tensor],
                  steps: int, lr: float, loss_name: str, salt: int) -> None:
        """``steps`` steps of ``loss_fn(batch, indices)`` (the batch and its dataset indices) on
        ``params`` alone, before the world model
        trains (``encoder_steps``, ``prior_steps``; see :class:`TrainConfig`): AdamW at ``lr``
        after a linear warm-up over ``warmup`` steps, batches of ``batch_size`` from a stream
        of the phase's own (seeded by ``salt``). Logged to ``metrics.jsonl`` as ``{"phase":
        phase, f"{phase}_step": ..., f"loss/{loss_name}": ...}``. Under ``max_minutes`` the
        pretraining phases stop once ``pretrain_fraction`` of the budget is spent. The prior
        phase's learning rate follows a cosine to zero over the phase (steps or time,
        whichever runs out first). The EMA copy then takes the pretrained weights."""
        cfg = self.cfg
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        stream = IndexStream(torch.ones(len(self.dataset)), _mix(cfg.seed, salt), self.rank)  # type: ignore[arg-type]
        limit = None if cfg.max_minutes is None else cfg.max_minutes * 60.0 * cfg.pretrain_fraction  # s
        t_phase = time.perf_counter()
        bs = cfg.pretrain_batch_size or cfg.batch_size
        t_log = t_print = time.perf_counter()
        losses: list[float] = []
        for step in range(steps):
            now = time.perf_counter()
            if limit is not None and now - self.t_start > limit:
                if not self.quiet:
                    print(f"[train] {phase} pretraining stopped at step {step}: {cfg.pretrain_fraction:g} of the "
                          f"{cfg.max_minutes:g}-minute budget is spent")
                break
            step_lr = lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            if phase == "prior":  # cosine over the phase: by steps, or by the time it may use
                done = step / steps
                if limit is not None:
                    done = max(done, (now - t_phase) / max(limit - (t_phase - self.t_start), 1e-9))
                step_lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
            for g in opt.param_groups:
                g["lr"] = step_lr
            indices = [stream.at(step * bs + i) for i in range(bs)]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                loss = loss_fn(collate([self.dataset[i] for i in indices]), indices)
            loss.backward()
            if self.world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                now = time.perf_counter()
                rate = len(losses) * bs * self.world / max(now - t_log, 1e-9)
                rec = {"phase": phase, f"{phase}_step": step + 1, f"loss/{loss_name}": sum(losses) / len(losses),
                       "lr": step_lr, "samples_per_s": rate}
                self._append_metrics(rec)
                if not self.quiet and (now - t_print >= PRINT_EVERY_S or step + 1 == steps):
                    t_print = now
                    print(f"[train] {phase} step {step + 1:>5}/{steps} {loss_name}={rec[f'loss/{loss_name}']:.5f} "
                          f"{rec['samples_per_s']:.1f} samples/s", flush=True)
                losses, t_log = [], now
        if self.ema is not None:  # the EMA copy was taken before: it starts from the pretrained weights
            self.ema.load_state_dict(self.model.state_dict())

    def _resume_weights(self) -> Path | None:
        """Load model/EMA weights and the trainer position from the latest checkpoint (before
        any sharding); the optimizer state is loaded once the optimizer exists."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            if not self.quiet:
                print(f"[train] no checkpoint in {self.run_dir}; starting fresh")
            return None
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=str(self.device)))
        if self.ema is not None and (ckpt / "ema.safetensors").exists():
            self.ema.load_state_dict(load_file(str(ckpt / "ema.safetensors"), device=str(self.device)))
        state = json.loads((ckpt / "trainer.json").read_text())
        if state.get("train", {}).get("strategy", "ddp") != self.cfg.strategy and self.world > 1:
            raise ValueError(f"{ckpt}: saved with strategy {state['train'].get('strategy')!r}; "
                             f"resume with the same strategy (got {self.cfg.strategy!r})")
        self.step, self.position = int(state["step"]), int(state["position"])
        if not self.quiet:
            print(f"[train] resumed from {ckpt} at step {self.step}")
        return ckpt

    def _batch(self):
        idx = [self.stream.at(self.position + i) for i in range(self.cfg.batch_size)]
        self.position += self.cfg.batch_size
        return collate([self.dataset[i] for i in idx])

    def _mode(self) -> str:
        names = list(self.cfg.modes)
        w = torch.tensor([self.cfg.modes[n] for n in names], dtype=torch.float64)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        return names[int(torch.multinomial(w, 1, generator=g))]

    def _start_loggers(self) -> None:
        self._wandb = None
        self._progress = None
        if not self.is_main:
            return
        if self.cfg.wandb_project:
            try:
                import wandb
            except ImportError:
                print("[train] wandb_project is set but wandb is not installed; logging to metrics.jsonl only")
            else:
                self._wandb = wandb.init(project=self.cfg.wandb_project, dir=str(self.run_dir),
                                         config={"train": asdict(self.cfg), **self.run_info}, resume="allow")
        if not self.quiet and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self._task = self._progress.add_task("train", total=self.cfg.steps, completed=self.step, info="")
            self._progress.start()

    def _stop_loggers(self) -> None:
        if getattr(self, "_progress", None) is not None:
            self._progress.stop()
        if getattr(self, "_wandb", None) is not None:
            self._wandb.finish()

    def _append_metrics(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (rank 0 only)."""
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self._append_metrics(record)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
        if self._progress is not None:
            self._progress.update(self._task, completed=record["step"],
                                  info=f"loss {record['loss']:.4f}  {record['samples_per_s']:.1f} samples/s")
        elif not self.quiet and (time.perf_counter() - self._t_print >= PRINT_EVERY_S
                                 or record["step"] == self.cfg.steps):
            self._t_print = time.perf_counter()
            parts = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("loss"))
            print(f"[train] step {record['step']:>6}/{self.cfg.steps} {parts} lr={record['lr']:.2e} "
                  f"{record['samples_per_s']:.1f} samples/s", flush=True)

    def fit(self) -> list[dict[str, Any]]:
        self.model.train()
        history: list[dict[str, Any]] = []
        self._start_loggers()
        try:
            self._loop(history)
        finally:
            self._stop_loggers()
        return history

    def _loop(self, history: list[dict[str, Any]]) -> None:
        cfg = self.cfg
        window: list[tuple[str, float, dict[str, float]]] = []
        t_last, n_last = time.perf_counter(), self.step
        t_start, step_start = self.t_start, self.step
        budget_at, rate_ref, planned = step_start + cfg.budget_probe, (t_last, step_start), cfg.steps
        while self.step < cfg.steps:
            if cfg.max_minutes is not None and self.step == budget_at:
                # re-fit at probe, 2 x probe, 4 x probe ... steps; the rate after the first probe
                # leaves out warm-up costs (allocation, first-call overheads)
                self._fit_budget(t_start, rate_ref, planned)
                if budget_at == step_start + cfg.budget_probe:
                    rate_ref = (time.perf_counter(), self.step)
                budget_at = step_start + 2 * (budget_at - step_start)
                cfg = self.cfg
            mode = self._mode()
            scale = lr_at(self.step, cfg)
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * scale * g["lr_mult"]
            noise = torch.Generator().manual_seed(_mix(cfg.seed, self.rank, self.step) ^ 0x5EED)
            total = 0.0
            parts_acc: dict[str, float] = {}
            for _ in range(cfg.grad_accum):
                batch = self._batch()
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                    loss, parts = self.net(mode, batch, noise)
                (loss / cfg.grad_accum).backward()
                total += float(loss.detach()) / cfg.grad_accum
                for k, v in parts.items():
                    parts_acc[k] = parts_acc.get(k, 0.0) + v / cfg.grad_accum
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if self.ema is not None:
                with torch.no_grad():
                    for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP shards
                        pe.lerp_(full.detach(), 1 - cfg.ema)
            self.step += 1
            window.append((mode, total, parts_acc))
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                samples = (self.step - n_last) * cfg.batch_size * cfg.grad_accum * self.world
                rec: dict[str, Any] = {"step": self.step, "lr": cfg.lr * scale,
                                       "loss": sum(w[1] for w in window) / len(window),
                                       "samples_per_s": samples / max(now - t_last, 1e-9)}
                for m in {w[0] for w in window}:
                    rec[f"loss/{m}"] = sum(w[1] for w in window if w[0] == m) / sum(1 for w in window if w[0] == m)
                history.append(rec)
                self._log(rec)
                window, t_last, n_last = [], now, self.step
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save()

    def _fit_budget(self, t_start: float, rate_ref: tuple[float, int], planned: int) -> None:
        """Set ``cfg.steps`` (at most the recipe's ``planned``) so the run ends within
        ``max_minutes`` at the rate measured since ``rate_ref`` (rank 0's estimate, broadcast
        so every rank runs the same number of steps)."""
        cfg = self.cfg
        assert cfg.max_minutes is not None
        now = time.perf_counter()
        per_step = (now - rate_ref[0]) / max(self.step - rate_ref[1], 1)
        remaining = cfg.max_minutes * 60.0 - (now - t_start)
        total = torch.tensor([min(planned, self.step + max(1, int(remaining / per_step)))], dtype=torch.int64)
        if dist.is_initialized():
            dist.broadcast(total, 0)
        total_i = int(total.item())
        if total_i != cfg.steps:
            self.cfg = dataclasses.replace(cfg, steps=total_i)
            first = "budget_steps" not in self.run_info  # later re-fits show in the step count only
            self.run_info["budget_steps"] = total_i
            if self.is_main and not self.quiet and first:
                print(f"[train] {per_step:.3f} s/step: {total_i} steps fit the {cfg.max_minutes:g}-minute budget "
                      f"(recipe: {planned})")
            if self._progress is not None:
                self._progress.update(self._task, total=total_i)

    def save(self) -> Path | None:
        model_state = opt_state = None
        if self.fsdp:  # gather full state dicts (collective: every rank takes part)
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state = get_model_state_dict(self.model, options=opts)
            opt_state = get_optimizer_state_dict(self.model, self.opt, options=opts)
        if not self.is_main:
            if dist.is_initialized():
                dist.barrier()
            return None
        state = {"position": self.position, "world_size": self.world, "train": asdict(self.cfg), **self.run_info}
        path = save_checkpoint(self.run_dir, self.step, self.model, self.ema, self.opt, state, keep=self.cfg.keep,
                               model_state=model_state, opt_state=opt_state)
        if dist.is_initialized():
            dist.barrier()
        return path

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
