"""Model checkpoints: safetensors weights with the config in the file's metadata.

``save_model`` writes atomically (temporary file + rename). ``load_model`` rebuilds the
model from the stored config; given an explicit config it must match field by field, and a
mismatch names the differing fields instead of failing on a tensor shape deep inside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cosmos3_robot.model.config import Cosmos3Config
from cosmos3_robot.model.cosmos3 import Cosmos3

FORMAT = "cosmos3_robot.model/1"


def save_model(model: Cosmos3, path: str | os.PathLike[str], extra: dict[str, str] | None = None,
               state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model``'s weights (or a full ``state`` gathered from a sharded copy) with its config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in (state if state is not None else model.state_dict()).items()}
    meta = {"format": FORMAT, "config": model.config.to_json(), **(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_config(path: str | os.PathLike[str]) -> tuple[Cosmos3Config, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path}: not a cosmos3_robot model checkpoint (metadata format {meta.get('format')!r})")
    return Cosmos3Config.from_dict(json.loads(meta["config"])), meta


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: checkpoint {va!r} vs requested {vb!r}")
    return out


def load_model(path: str | os.PathLike[str], config: Cosmos3Config | None = None,
               map_location: str | torch.device = "cpu", **model_kwargs: Any) -> Cosmos3:
    saved, _ = read_config(path)
    if config is not None:
        diff = [d for d in _diff(saved.to_dict(), config.to_dict()) if not d.startswith("name:")]
        if diff:
            raise ValueError(f"{path}: checkpoint config does not match the requested one:\n  " + "\n  ".join(diff))
    model = Cosmos3(config or saved, **model_kwargs)
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(map_location)


# ---- run folders: which checkpoint to load -------------------------------------------------
def _step_of(path: Path) -> int | None:
    name = path.name
    return int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else None


def _complete(path: Path) -> bool:
    """A training checkpoint folder with every file written (see ``cosmos3_robot.train.state``)."""
    return all((path / f).exists() for f in ("trainer.json", "model.safetensors", "optimizer.safetensors"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; when it is missing or names no complete checkpoint
    (a kill between the rename and the marker's write), the highest-numbered complete one."""
    root = run_dir / "checkpoints"
    marker = root / "latest"
    if marker.exists():
        path = root / marker.read_text().strip()
        if marker.read_text().strip() and _complete(path):
            return path
    found = sorted((p for p in root.glob("step_*") if _step_of(p) is not None and _complete(p)), key=_step_of)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder -> the checkpoint folder."""
    p = Path(path)
    if (p / "trainer.json").exists():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise ValueError(f"checkpoint: {p} is neither a checkpoint folder (with trainer.json) nor a run folder "
                         f"with checkpoints/latest")
    return latest
