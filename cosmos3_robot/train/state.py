"""A run folder's state: checkpoints (model, EMA, optimizer and trainer state, written
atomically) and the metrics the trainer logged (:func:`read_metrics`).

A checkpoint is a folder ``step_XXXXXXX/`` holding

- ``model.safetensors`` (weights + config metadata, loadable by ``load_model``),
- ``ema.safetensors`` (EMA weights, when EMA is on),
- ``optimizer.safetensors`` (every optimizer tensor; hyper-parameters in its metadata),
- ``trainer.json`` (step, data position, scheduler, RNG seeds, normaliser statistics).

It is written to a temporary folder and renamed into place, then ``latest`` (a text file
naming the folder) is replaced atomically, so a run killed at any moment resumes from the
last complete checkpoint. No pickle is used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cosmos3_robot.model.checkpoint import (  # noqa: F401  (lookup lives with checkpoints; re-exported)
    _complete, _step_of, latest_checkpoint, resolve_checkpoint, save_model)


def optimizer_tensors(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Flatten an optimizer state dict (parameter ids, or names under FSDP) into named
    tensors ``state|<param>|<field>`` plus JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state|{pid}|{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def load_optimizer_tensors(opt: torch.optim.Optimizer, path: Path, fsdp_model: torch.nn.Module | None = None) -> None:
    """Restore what :func:`optimizer_tensors` wrote; ``fsdp_model`` re-shards a full state
    dict onto an FSDP model's optimizer."""

    def key(pid: str) -> int | str:
        return int(pid) if pid.isdigit() else pid

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state: dict[int | str, dict[str, Any]] = {}
        for name in f.keys():
            _, pid, k = name.split("|", 2)
            state.setdefault(key(pid), {})[k] = f.get_tensor(name)
    for pid, sc in json.loads(meta["scalars"]).items():
        state.setdefault(key(pid), {}).update(sc)
    sd = {"state": state, "param_groups": json.loads(meta["param_groups"])}
    if fsdp_model is None:
        opt.load_state_dict(sd)
        params = [p for g in opt.param_groups for p in g["params"]]
        for p in params:  # a run saved by a model of another parameter layout: say so now
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() and v.shape != p.shape:
                    raise ValueError(f"{path}: optimizer state {k!r} of shape {tuple(v.shape)} does not fit its "
                                     f"parameter {tuple(p.shape)}: the run was saved with another parameter "
                                     "layout; train a new run (its model.safetensors still loads)")
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # strict=False: parameters never used (e.g. the ViT when no AR images) have no state
        set_optimizer_state_dict(fsdp_model, opt, optim_state_dict=sd,
                                 options=StateDictOptions(full_state_dict=True, strict=False))


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                    opt: torch.optim.Optimizer, trainer_state: dict[str, Any], keep: int = 3,
                    model_state: dict[str, torch.Tensor] | None = None,
                    opt_state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint folder; ``model_state``/``opt_state`` are full state dicts
    gathered beforehand when the live model is sharded (FSDP)."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:07d}"
    tmp = ckpt_root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, tmp / "model.safetensors", extra={"step": str(step)}, state=model_state)
    if ema is not None:
        save_model(ema, tmp / "ema.safetensors", extra={"step": str(step)})
    tensors, meta = optimizer_tensors(opt_state if opt_state is not None else opt.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata=meta)
    (tmp / "trainer.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = ckpt_root / "latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, ckpt_root / "latest")
    olds = sorted((p for p in ckpt_root.glob("step_*") if p != final and _step_of(p) is not None),
                  key=_step_of)  # by number: step_10000000 sorts after step_9999998
    for old in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_metrics(run_dir: str | os.PathLike[str], phase: str = "train") -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``: ``phase="train"`` the world model's steps
    (with ``step``, ``loss``, ``loss/<mode>``), ``"encoder"`` the encoder pretraining's
    (``encoder_step``, ``loss/video_recon``, or ``loss/video_recon_and_prior`` with a video
    prior), ``"prior"`` the action prior's (``prior_step``,
    ``loss/action_prior``). ``[]`` when the file does not exist yet."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return _last_run_of_each_step([r for r in recs if r.get("phase", "train") == phase],
                                  "step" if phase == "train" else f"{phase}_step")


def _last_run_of_each_step(recs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """A resumed run logs again the steps between its checkpoint and the kill: keep the
    records of the run that continued (a step at or below the previous one starts it)."""
    out: list[dict[str, Any]] = []
    for r in recs:
        step = r.get(key)
        if step is not None:
            while out and out[-1].get(key) is not None and out[-1][key] >= step:
                out.pop()
        out.append(r)
    return out
