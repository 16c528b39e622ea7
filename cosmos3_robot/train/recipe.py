"""Recipes: YAML files that say what to train on, with which model and schedule.

A recipe has four sections (see ``recipes/`` for complete, commented examples)::

    model:   {preset: small, overrides: {block_causal: true}}
    window:  {embodiment: libero, camera: agentview, fps: 20, n_context: 1, n_future: 4,
              chunk: 16, image_size: 64}
    data:    - {format: hdf5, path: data/libero_10/*.hdf5, layout: libero, weight: 1.0,
                transforms: [{PoseFromPosRotation: {pos: p, rot: r, out: ee, rotation: axis_angle}}]}
    train:   {steps: 2000, batch_size: 16, lr: 3e-4, modes: {policy: 0.5, ...}}

``--set section.key=value`` overrides any field (values parsed as YAML; a number picks a
list item, e.g. ``--set data.0.root=/data/demos``). A data entry may
carry its own ``window`` mapping, merged over the recipe's, e.g. for another embodiment.
"""

from __future__ import annotations

import copy
import glob
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from torch.utils.data import ConcatDataset

from cosmos3_robot.data.episode import DataError, Episode
from cosmos3_robot.data.windows import WindowDataset, WindowSpec, mixture_weights
from cosmos3_robot.model import Cosmos3, preset
from cosmos3_robot.normalize import QuantileNormalizer
from cosmos3_robot.train.config import train_config_from
from cosmos3_robot.train.trainer import Trainer

SECTIONS = ("model", "window", "data", "train")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"recipe {path}: cannot be read ({exc})") from None
    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise ValueError(f"recipe {path}: unknown section(s) {unknown}; sections: {list(SECTIONS)}")
    for ov in overrides:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ValueError(f"--set {ov!r}: expected section.key=value")
        key, value = ov.split("=", 1)
        node: Any = recipe
        *parents, leaf = key.split(".")
        for p in parents:  # a number indexes a list: data.0.root=...
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    raise ValueError(f"--set {ov!r}: {p!r} is not an index of a {len(node)}-item list")
                node = node[int(p)]
            else:
                node = node.setdefault(p, {})
        if isinstance(node, list):
            if not leaf.isdigit() or int(leaf) >= len(node):
                raise ValueError(f"--set {ov!r}: {leaf!r} is not an index of a {len(node)}-item list")
            node[int(leaf)] = yaml.safe_load(value)
        else:
            node[leaf] = yaml.safe_load(value)
    recipe["_path"] = str(path)
    return recipe


def read_source(entry: dict[str, Any], base: Path, skipped: list[str] | None = None) -> list[Episode]:
    """Episodes of one ``data`` entry (paths relative to the recipe's folder may be globs).

    With a ``skipped`` list (``on_error: skip`` in the recipe) bad episodes are recorded
    there and left out; otherwise the first one raises :class:`DataError`."""
    fmt = entry.get("format")
    path = entry.get("path", entry.get("repo_id", ""))
    pattern = str(base / path) if not Path(path).is_absolute() else path
    paths = sorted(glob.glob(pattern)) or [pattern]
    episodes: list[Episode] = []
    for p in paths:
        if fmt == "hdf5":
            from cosmos3_robot.data.sources.hdf5 import LAYOUTS, HDF5Layout, read_hdf5

            layout = entry.get("layout", "libero")
            lay = LAYOUTS[layout] if isinstance(layout, str) else HDF5Layout(**layout)
            episodes += list(read_hdf5(p, lay, text=entry.get("text"), skipped=skipped))
        elif fmt == "zarr":
            from cosmos3_robot.data.sources.zarr_store import ZarrLayout, read_zarr

            episodes += list(read_zarr(p, ZarrLayout(**entry.get("layout", {})), skipped=skipped))
        elif fmt == "rosbag":
            from cosmos3_robot.data.episode import guarded
            from cosmos3_robot.data.sources.rosbag import RosbagLayout, read_rosbag

            layout = RosbagLayout(**entry.get("layout", {}))
            episodes += list(guarded([lambda p=p, layout=layout: next(iter(read_rosbag(p, layout)))], skipped))
        elif fmt == "lerobot":
            from cosmos3_robot.data.sources.lerobot import LeRobotLayout, read_lerobot

            root = entry.get("root")
            root = str(base / root) if root and not Path(root).is_absolute() else root
            episodes += list(read_lerobot(entry["repo_id"], LeRobotLayout(**entry.get("layout", {})), root=root,
                                          episodes=entry.get("episodes"), skipped=skipped))
            break  # a LeRobot entry names one dataset, not files
        else:
            raise ValueError(f"data entry {entry}: format must be one of hdf5, zarr, lerobot, rosbag; got {fmt!r}")
    if not episodes:
        raise DataError(f"data entry {entry}: no episodes found")
    return episodes


def _transform_class(name: str) -> type:
    """A transform class by name: one of :mod:`cosmos3_robot.transforms`, or a plugin's by
    import path (``my_package.adapters:MyStep`` or ``my_package.adapters.MyStep``)."""
    import importlib

    from cosmos3_robot import transforms as T

    cls = getattr(T, name, None)
    if cls is None and ("." in name or ":" in name):
        module, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr, None)
        except ImportError as exc:
            raise ValueError(f"transforms: cannot import {module!r} for {name!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, T.Transform)):
        builtin = sorted(n for n, c in vars(T).items() if isinstance(c, type) and issubclass(c, T.Transform)
                         and c is not T.Transform)
        raise ValueError(f"transforms: unknown transform {name!r}; built-in: {builtin}, or a subclass of "
                         "cosmos3_robot.transforms.Transform by import path ('package.module:Class')")
    return cls


def parse_transforms(items: list[dict[str, Any]] | None) -> list:
    """``[{ClassName: {field: value}}]`` -> transform objects (see :func:`_transform_class`)."""
    out = []
    for item in items or []:
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"transforms: expected one {{ClassName: {{...}}}} mapping per item, got {item!r}")
        (name, kwargs), = item.items()
        cls = _transform_class(name)
        kwargs = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                  for k, v in (kwargs or {}).items()}
        out.append(cls(**kwargs))
    return out


def _statistics(stats_dir: Path | None, name: str, compute: Callable[[], QuantileNormalizer | None],
                names: Sequence[str] | None = None) -> QuantileNormalizer | None:
    """``stats_dir / name`` when it is there (a resumed run), else ``compute()``, saved
    there for the resumption."""
    path = stats_dir / name if stats_dir else None
    if path is not None and path.exists():
        return QuantileNormalizer.load(path, names=names)
    norm = compute()
    if path is not None and norm is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        norm.save(path)
    return norm


def build_datasets(recipe: dict[str, Any], stats_dir: Path | None = None,
                   ) -> tuple[list[WindowDataset], list[float]]:
    """One :class:`WindowDataset` per data entry, normalisers loaded from ``stats_dir`` when
    present there (a resumed run) or computed and saved to it."""
    base = Path(recipe["_path"]).parent
    datasets, weights = [], []
    reads_state = model_config(recipe).state_input
    for i, entry in enumerate(recipe.get("data") or []):
        spec = WindowSpec(**{**recipe.get("window", {}), **entry.get("window", {})})
        on_error = entry.get("on_error", "raise")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data entry {i}: on_error must be 'raise' or 'skip', got {on_error!r}")
        skipped: list[str] | None = [] if on_error == "skip" else None
        ds = WindowDataset(read_source(entry, base, skipped), spec,
                           transforms=parse_transforms(entry.get("transforms")), skip_bad=on_error == "skip")
        if skipped is not None:
            ds.skipped = skipped + ds.skipped
            if ds.skipped:
                print(f"[data] entry {i}: skipped {len(ds.skipped)} bad episode(s)/window(s), first: {ds.skipped[0]}")
        ds.normalizer = _statistics(stats_dir, f"stats_{i}_{spec.embodiment}.json", ds.action_statistics,
                                    names=ds.embodiment.dim_names())
        if reads_state and ds.embodiment.codec.state_blocks:  # the model reads proprioception
            ds.state_normalizer = _statistics(stats_dir, f"state_stats_{i}_{spec.embodiment}.json",
                                              ds.state_statistics)
        datasets.append(ds)
        weights.append(float(entry.get("weight", 1.0)))
    if not datasets:
        raise ValueError(f"recipe {recipe['_path']}: the data section lists no source")
    return datasets, weights


def recipe_embodiments(recipe: dict[str, Any]) -> list[str]:
    """The embodiment each data entry trains (its own ``window`` over the recipe's), in order."""
    names = []
    for i, entry in enumerate(recipe.get("data") or []):
        name = {**recipe.get("window", {}), **(entry.get("window") or {})}.get("embodiment")
        if not name:
            raise ValueError(f"data entry {i}: no window.embodiment (in the recipe's window or the entry's)")
        names.append(str(name))
    return names


def _init_weights(recipe: dict[str, Any]) -> Path | None:
    """``model.init`` (a run or checkpoint folder to fine-tune, relative to the recipe) ->
    its weights file (the EMA copy when there is one)."""
    init = (recipe.get("model") or {}).get("init")
    if not init:
        return None
    from cosmos3_robot.model.checkpoint import resolve_checkpoint

    p = Path(init)
    ckpt = resolve_checkpoint(p if p.is_absolute() else Path(recipe["_path"]).parent / p)
    ema = ckpt / "ema.safetensors"
    return ema if ema.exists() else ckpt / "model.safetensors"


def _model_source(recipe: dict[str, Any]):
    """``(config, weights to load or None)`` of the model a recipe trains (see :func:`model_config`)."""
    from cosmos3_robot.model.checkpoint import read_config

    m = recipe.get("model") or {}
    weights = _init_weights(recipe)
    if weights is not None:
        extra = sorted(set(m) & {"preset", "overrides"})
        if extra:
            raise ValueError(f"model: {extra} cannot be combined with model.init (the checkpoint's own config "
                             "is fine-tuned)")
        cfg = read_config(weights)[0]
    else:
        cfg = preset(m.get("preset", "tiny"), **(m.get("overrides") or {}))
    return cfg.with_domains(recipe_embodiments(recipe)), weights


def model_config(recipe: dict[str, Any]):
    """The model config a recipe trains: ``preset`` + ``overrides``, or (``model.init``) the
    checkpoint's own; either way with an action domain for every embodiment the data
    entries name (a plugin's embodiment needs no setting of its own)."""
    return _model_source(recipe)[0]


def build_model(recipe: dict[str, Any]) -> Cosmos3:
    """A fresh model, or (``model.init``) a checkpoint's weights with domains added for new
    embodiments (their projections start as the fresh model's)."""
    cfg, weights = _model_source(recipe)
    torch.manual_seed(int(recipe.get("train", {}).get("seed", 0)))
    model = Cosmos3(cfg)
    if weights is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
    return model


def run(recipe_path: str | Path, out: str | Path, overrides: Sequence[str] = (), resume: bool = False,
        quiet: bool = False, device: str | None = None) -> list[dict[str, Any]]:
    """Train from a recipe into ``out`` (on ``device``, default: CUDA when there is one);
    returns the logged metrics."""
    recipe = load_recipe(recipe_path, overrides)
    out = Path(out)
    datasets, weights = build_datasets(recipe, out)
    cfg = train_config_from(recipe.get("train"))
    model = build_model(recipe)
    concat = ConcatDataset(datasets)
    trainer = Trainer(model, concat, cfg, out, sample_weights=mixture_weights(datasets, weights),
                      run_info={"recipe": {k: v for k, v in copy.deepcopy(recipe).items() if k != "_path"},
                                "windows": [asdict(d.spec) for d in datasets],
                                "skipped": [d.skipped for d in datasets],
                                "normalizers": [d.normalizer.to_dict() for d in datasets],
                                "state_normalizers": [None if d.state_normalizer is None else
                                                      d.state_normalizer.to_dict() for d in datasets]},
                      resume=resume, quiet=quiet, device=device)
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.json").write_text(json.dumps({k: v for k, v in recipe.items()}, indent=1, default=str))
        if not quiet:
            n = sum(len(d) for d in datasets)
            print(f"[train] {model.config.name}: {model.num_parameters() / 1e6:.2f}M parameters; "
                  f"{n} windows from {sum(len(d.episodes) for d in datasets)} episodes; "
                  f"{trainer.world} process(es) on {trainer.device}")
    try:
        return trainer.fit()
    finally:
        trainer.close()
