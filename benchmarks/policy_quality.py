"""Learning quality side by side: our policy vs LeRobot's ACT and Diffusion Policy, and the
world model against simple baselines. CPU by default; everything is made here.

1. Scripted-expert demonstrations of the built-in tasks (one LeRobot dataset, front
   camera, 64 px, 10 Hz) and held-out expert episodes (other seeds) for the world model.
2. The same wall-clock training budget for each policy on this machine:
   - cosmos3: our trainer and recipe (``recipes/sim/builtin_tasks.yaml``: ``sim_arm``
     relative pseudo-actions, the policy / FD / ID mixture, EMA), cosine fitted to the budget;
   - LeRobot ACT and Diffusion Policy (and, with ``--plugin``, our model through the
     LeRobot plugin): their configs, processors and optimiser presets, trained by the loop
     below with the schedule fitted to the budget the same way. No pretrained backbones.
3. Closed-loop success on the same evaluation seeds (``100000 + i``) with Wilson 95%
   intervals (:mod:`cosmos3_robot.sim.evaluate`).
4. World model on held-out windows: forward dynamics (PSNR / SSIM of the imagined future
   frames vs copying the last frame, and the real future frames through the video
   autoencoder as the ceiling of the flow's decoded frames) and inverse dynamics (error of the actions the future
   frames pin down vs ground truth, against a ridge regression on the two frames' pixels and
   against predicting the mean action). And whether the policy reads its camera: each
   held-out request (instruction, state, seed) is answered once with its own frame and once
   with the frame of a window from another episode (another layout), and the action error
   against the true chunk is compared. A policy blind to its camera scores the same on both
   (ratio 1.00); one that reads it gets worse with the wrong frame. (Windows of the same
   episode show the same layout, so swapping among them tells nothing.)

    .venv/bin/python benchmarks/policy_quality.py --tasks reach push --minutes 10 --episodes 20
    .venv/bin/python benchmarks/policy_quality.py --quick      # a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos3_robot.recipes import recipe_path

RECIPE = recipe_path("sim/builtin_tasks.yaml")
REPO_ID = "local/cosmos3_sim"
CAMERA = "front"  # the world model's video camera
CAMERAS = ("front", "wrist")  # every policy (ours, ACT, Diffusion) sees both
HELD_OUT_SEED = 500_000
RECORD_NOISE = 0.004  # expert position noise (m) of the demonstrations and of the held-out episodes


def log(msg: str) -> None:
    print(f"[quality] {msg}", flush=True)


# ---- 1. data ------------------------------------------------------------------------------
def record_data(out: Path, tasks: list[str], demos: int, image_size: int) -> dict[str, Any]:
    from cosmos3_robot.sim.record import record

    data = out / "data"
    if (data / "meta" / "info.json").exists():
        log(f"demonstrations already at {data}")
        return json.loads((out / "record.json").read_text())
    shutil.rmtree(data, ignore_errors=True)
    st = record(tasks, demos, data, repo_id=REPO_ID, use_videos=False, image_size=image_size, cameras=CAMERAS,
                noise=RECORD_NOISE)
    info = {"kept": st.kept, "failed": st.failed, "frames": st.frames}
    (out / "record.json").write_text(json.dumps(info))
    return info


# ---- 2. training on a wall-clock budget ---------------------------------------------------
def train_cosmos3(data: Path, run: Path, preset: str, minutes: float, batch: int,
                  overrides: list[str] = ()) -> dict[str, Any]:
    """Our recipe on the demonstrations; ``overrides`` are extra ``KEY=VALUE`` recipe settings
    (``--set``), applied last."""
    from cosmos3_robot.model import preset as model_preset
    from cosmos3_robot.train.recipe import run as train_run
    from cosmos3_robot.train.state import read_metrics

    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    train_run(RECIPE, run, overrides=[
        f"data.0.root={data.resolve()}", f"data.0.repo_id={REPO_ID}",
        "data.0.layout.cameras={" + ", ".join(f"{c}: observation.images.{c}" for c in CAMERAS) + "}",
        f"window.camera={CAMERA}",
        f"model.preset={preset}", f"window.image_size={model_preset(preset).image_size}",
        f"train.max_minutes={minutes}", f"train.batch_size={batch}", *overrides])
    metrics = read_metrics(run)
    return {"steps": metrics[-1]["step"] if metrics else 0, "seconds": time.perf_counter() - t0,
            "first_loss": metrics[0]["loss"] if metrics else None, "last_loss": metrics[-1]["loss"] if metrics else None}


def lerobot_config(kind: str, chunk: int, n_action_steps: int, preset: str):
    """ACT / Diffusion / cosmos3 configs for 64 px frames, no pretrained weights."""
    from lerobot.policies.factory import make_policy_config

    if kind == "act":
        return make_policy_config("act", device="cpu", push_to_hub=False, chunk_size=chunk,
                                  n_action_steps=n_action_steps, pretrained_backbone_weights=None)
    if kind == "diffusion":
        # LeRobot's defaults crop 84 px from 96; our frames are 64 px: crop 56 (random at
        # training, centre at inference), horizon = chunk. DDIM with 10 inference steps (the
        # default 100 DDPM steps take ~20 s per chunk on 2 cores).
        return make_policy_config("diffusion", device="cpu", push_to_hub=False, horizon=chunk,
                                  n_action_steps=n_action_steps, crop_shape=(56, 56), pretrained_backbone_weights=None,
                                  noise_scheduler_type="DDIM", num_inference_steps=10)
    return make_policy_config("cosmos3", device="cpu", push_to_hub=False, preset=preset, chunk_size=chunk,
                              n_action_steps=n_action_steps)


def train_lerobot(kind: str, data: Path, out: Path, minutes: float, batch: int, chunk: int, n_action_steps: int,
                  preset: str, seed: int = 0, repo_id: str = REPO_ID,
                  cameras: tuple[str, ...] = CAMERAS) -> dict[str, Any]:
    """LeRobot's policy, processors and optimiser preset on the LeRobot dataset ``data``
    (``observation.images.<camera>`` for each of ``cameras``, ``observation.state``,
    ``action``); steps until the budget is spent, with the scheduler (if the policy has one)
    fitted to the steps the budget allows, as ``train.max_minutes`` does for ours (rate
    measured over the first steps)."""
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.utils.feature_utils import dataset_to_policy_features
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    torch.manual_seed(seed)
    meta = LeRobotDatasetMetadata(repo_id, root=data)
    cfg = lerobot_config(kind, chunk, n_action_steps, preset)
    feats = dataset_to_policy_features(meta.features)
    cfg.output_features = {k: f for k, f in feats.items() if f.type is FeatureType.ACTION}
    cfg.input_features = {k: f for k, f in feats.items()
                          if k in (*(f"observation.images.{c}" for c in cameras), "observation.state")}
    policy = make_policy(cfg, ds_meta=meta)
    ds = LeRobotDataset(repo_id, root=data, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    pre, post = make_pre_post_processors(cfg, dataset_stats=ds.meta.stats)
    opt_cfg = cfg.get_optimizer_preset()
    opt = opt_cfg.build(policy.get_optim_params())
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    budget = 60 * minutes
    t0 = time.perf_counter()
    steps, sched, losses = 0, None, []
    policy.train()
    while time.perf_counter() - t0 < budget:
        for item in loader:
            loss, _ = policy.forward(pre(item))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), opt_cfg.grad_clip_norm)
            opt.step()
            if sched is not None:
                sched.step()
            steps += 1
            losses.append(float(loss.detach()))
            elapsed = time.perf_counter() - t0
            if steps == 5 and cfg.get_scheduler_preset() is not None:
                # fit the schedule to the steps the rest of the budget allows (rate of the first 5)
                sched = cfg.get_scheduler_preset().build(opt, max(1, int((budget - elapsed) / (elapsed / steps))))
            if elapsed >= budget:
                break
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    return {"steps": steps, "seconds": time.perf_counter() - t0, "first_loss": float(first), "last_loss": float(last)}


# ---- 3. closed loop -----------------------------------------------------------------------
def closed_loop(spec: str, tasks: list[str], episodes: int, out: Path, workers: int, replan: int,
                temperature: float = 1.0, steps: int = 4) -> dict[str, Any]:
    from cosmos3_robot.sim.evaluate import EvalConfig, evaluate
    from cosmos3_robot.sim.report import write_report

    cfg = EvalConfig(tasks=tuple(tasks), episodes=episodes, workers=workers, replan=replan, videos=1,
                     image_size=64, policy_kwargs={"steps": steps, "temperature": temperature})
    res = evaluate(spec, cfg, out)
    return write_report(res, out, title=spec)


# ---- 4. world model -----------------------------------------------------------------------
def held_out_windows(run: Path, tasks: list[str], episodes: int, seed: int, normalizer, state_normalizer=None):
    from cosmos3_robot.data.windows import WindowDataset, WindowSpec
    from cosmos3_robot.model.checkpoint import resolve_checkpoint
    from cosmos3_robot.sim.record import RecordStats, expert_episodes

    w = json.loads((resolve_checkpoint(run) / "trainer.json").read_text())["windows"][0]
    spec = WindowSpec(embodiment=w["embodiment"], camera=w["camera"], views=tuple(w.get("views") or ()),
                      fps=w.get("fps"), n_context=1,
                      n_future=int(w["n_future"]), chunk=int(w["chunk"]), image_size=int(w["image_size"]),
                      stride=int(w["n_future"]), pad_end=bool(w.get("pad_end")))
    eps = list(expert_episodes(tasks, episodes, RecordStats(), seed=seed, image_size=int(w["image_size"]),
                               cameras=tuple(dict.fromkeys((w["camera"], *spec.views))), noise=RECORD_NOISE))
    ds = WindowDataset(eps, spec, normalizer=normalizer, state_normalizer=state_normalizer).drop_padded_future()
    return ds, spec


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form ridge regression on standardised features (a few lines of numpy; the
    project carries no scikit-learn): returns (mean, scale, weights with bias row)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    reg = lam * np.eye(z.shape[1])
    reg[-1, -1] = 0
    return mu, sd, np.linalg.solve(z.T @ z + reg, z.T @ y)


def id_features(video: torch.Tensor) -> np.ndarray:
    """``(B, F, 3, S, S)`` clips -> the context frame and the last future frame at 16 px."""
    pair = torch.stack([video[:, 0], video[:, -1]], 1).flatten(0, 1)
    small = torch.nn.functional.interpolate(pair, size=(16, 16), mode="area")
    return small.reshape(video.shape[0], -1).numpy()


def frame_psnr(real: np.ndarray, fake: np.ndarray) -> float:
    """PSNR in dB of one uint8 frame against another, 99 when identical (held frames at an
    episode's end copy exactly; the means stay finite)."""
    from cosmos3_robot.sim.report import psnr

    return psnr(real, fake, identical=99.0)


def world_model(run: Path, tasks: list[str], episodes: int, steps: int, temperature: float = 1.0) -> dict[str, Any]:
    from skimage.metrics import structural_similarity

    from cosmos3_robot.data.windows import collate
    from cosmos3_robot.processor import frames_to_uint8
    from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

    pol = Cosmos3Policy.from_checkpoint(run, InferenceConfig(steps=steps))
    model = pol.model
    temp = {"temperature": temperature}
    test, spec = held_out_windows(run, tasks, episodes, HELD_OUT_SEED, pol.normalizer, pol.state_normalizer)
    fit, _ = held_out_windows(run, tasks, episodes, HELD_OUT_SEED + 50_000, pol.normalizer)

    def batches(ds, n=8):  # (window indices, their batch)
        for i in range(0, len(ds), n):
            rows = list(range(i, min(len(ds), i + n)))
            yield rows, collate([ds[j] for j in rows])

    k = spec.n_future  # the actions the future frames pin down

    def targets(b) -> torch.Tensor:  # (B, k, D): collated actions are padded to the model's width
        return b.actions[:, :k, : int(b.action_mask[0].sum())]

    fx, fy = [], []
    for _, b in batches(fit):
        fx.append(id_features(b.video))
        fy.append(targets(b).flatten(1).numpy())
    fx_a, fy_a = np.concatenate(fx), np.concatenate(fy)
    mu, sd, w = ridge(fx_a, fy_a, lam=float(len(fx_a)))
    mean_action = fy_a.mean(0)
    # "autoencoder": the real future frames through the video autoencoder, the ceiling of
    # what the flow's decoded frames can score (the encoder is trained within the same
    # budget); the video prior's frames (steps 0) do not pass through it.
    # "still": a clip in which nothing moves (the context frame repeated) through the
    # autoencoder, what a model that predicts no motion at all scores after decoding.
    # "prior": with a video prior, its predicted frames alone (steps 0), whose latents the
    # flow starts from.
    has_prior = model.config.video_prior
    names = ("model", "copy_last", "autoencoder", "still") + (("prior",) if has_prior else ())
    psnrs: dict[str, list[float]] = {n: [] for n in names}
    ssim: dict[str, list[float]] = {n: [] for n in names}
    per_frame: dict[str, list[list[float]]] = {n: [[] for _ in range(k)] for n in names}
    err = {"model": [], "model_other_future": [], "policy": [], "ridge": [], "mean": []}
    # does the policy read its camera? each request again with a frame of another episode
    episode = np.array([e for e, _ in test.index])
    pick = np.random.default_rng(HELD_OUT_SEED)
    others = [np.flatnonzero(episode != e) for e in episode]
    other = [int(pick.choice(o)) if len(o) else -1 for o in others]
    swap: dict[str, list[np.ndarray]] = {"change": [], "mae_own": [], "mae_other": []}
    with torch.inference_mode():
        for i, (rows, b) in enumerate(batches(test)):
            fut = model.generate("forward_dynamics", b, steps=steps, seed=i, n_future_frames=k, **temp)["video"]
            video = b.video.to(model.device)
            enc = model.video_encoder
            rec = enc.decode(enc.encode(video), anchor=video[:, 0])[:, 1:].cpu()
            still = enc.decode(enc.encode(video[:, :1].expand_as(video).contiguous()), anchor=video[:, 0])[:, 1:].cpu()
            outputs = {"model": fut, "copy_last": b.video[:, :1].expand(-1, k, -1, -1, -1), "autoencoder": rec,
                       "still": still}
            if has_prior:
                outputs["prior"] = fut if steps == 0 else model.generate(
                    "forward_dynamics", b, steps=0, n_future_frames=k, temperature=0.0)["video"]
            gt = targets(b)
            # at steps 0 the action prior would answer from the present alone (the "policy" row
            # below): inverse dynamics is the flow, with 4 steps
            id_steps = steps or 4
            ida = model.generate("inverse_dynamics", b, steps=id_steps, seed=i, n_actions=spec.chunk,
                                 **temp)["actions"][:, :k]
            if all(other[r] >= 0 for r in rows):
                # does inverse dynamics read the future? the same clip with another window's future frames
                foreign = collate([test[other[r]] for r in rows])
                mixed = dataclasses.replace(b, video=torch.cat([b.video[:, :1], foreign.video[:, 1:]], 1))
                idb = model.generate("inverse_dynamics", mixed, steps=id_steps, seed=i, n_actions=spec.chunk,
                                     **temp)["actions"][:, :k]
                err["model_other_future"].append((idb - targets(b)).abs().mean((1, 2)).numpy())
                kw = {"steps": steps, "seed": i, "n_actions": spec.chunk, **temp}
                pa = model.generate("policy_actions", b, **kw)["actions"]
                # every camera of the other window (a model with several views reads `views`)
                pb = model.generate("policy_actions", dataclasses.replace(b, video=foreign.video, views=foreign.views),
                                    **kw)["actions"]
                full = b.actions[..., : pa.shape[-1]]
                err["policy"].append((pa[:, :k] - targets(b)).abs().mean((1, 2)).numpy())  # no future frames
                swap["change"].append((pb - pa).abs().mean((1, 2)).numpy())
                swap["mae_own"].append((pa - full).abs().mean((1, 2)).numpy())
                swap["mae_other"].append((pb - full).abs().mean((1, 2)).numpy())
            err["model"].append((ida - gt).abs().mean((1, 2)).numpy())
            pred = np.c_[(id_features(b.video) - mu) / sd, np.ones(len(gt))] @ w
            err["ridge"].append(np.abs(pred - gt.flatten(1).numpy()).mean(1))
            err["mean"].append(np.abs(mean_action[None] - gt.flatten(1).numpy()).mean(1))
            for j in range(len(gt)):
                real = frames_to_uint8(b.video[j, 1:])
                for name in names:
                    frames = frames_to_uint8(outputs[name][j].cpu())
                    for t, (r, f) in enumerate(zip(real, frames)):
                        psnrs[name].append(frame_psnr(r, f))
                        per_frame[name][t].append(psnrs[name][-1])
                        ssim[name].append(structural_similarity(r, f, channel_axis=-1, data_range=255))
    return {"windows": len(test), "fit_windows": len(fit), "future_frames": k,
            "fd_psnr_db": {n: float(np.mean(v)) for n, v in psnrs.items()},
            "fd_ssim": {n: float(np.mean(v)) for n, v in ssim.items()},
            "fd_psnr_db_per_frame": {n: [float(np.mean(x)) for x in v] for n, v in per_frame.items()},
            "id_mae_normalised": {n: float(np.mean(np.concatenate(v))) for n, v in err.items() if v},
            "camera_swap": ({n: float(np.mean(np.concatenate(v))) for n, v in swap.items()}
                            if swap["change"] else None)}


# ---- report -------------------------------------------------------------------------------
def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    cfg = results["config"]
    tasks = cfg["tasks"]
    t = Table(title=f"Closed-loop success, {cfg['episodes']} episodes per task, seeds 100000+i "
                    f"({cfg['minutes']:g} min of training each on {cfg['threads']} CPU threads)")
    for col in ["policy", "train steps", *tasks, "overall"]:
        t.add_column(col, justify="left" if col == "policy" else "right")
    for name, r in results["policies"].items():
        s = r["eval"]
        cells = []
        for task in [*tasks, "overall"]:
            x = s["overall"] if task == "overall" else s["tasks"][task]
            lo, hi = x["ci95"]
            cells.append(f"{100 * x['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]")
        t.add_row(name, str(r["train"].get("steps", "-")), *cells)
    console.print(t)
    if results.get("world_model"):
        print_world_model(results["world_model"], console)


def print_world_model(wm: dict[str, Any], console=None) -> None:
    """The world-model table of :func:`world_model`'s result."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 120))
    w = Table(title=f"World model on {wm['windows']} held-out windows ({wm['future_frames']} future frames)")
    for col in ("metric", "cosmos3", "baseline", "baseline value", "ratio"):
        w.add_column(col, justify="left" if col in ("metric", "baseline") else "right")
    p, s, e = wm["fd_psnr_db"], wm["fd_ssim"], wm["id_mae_normalised"]
    w.add_row("FD PSNR (dB, higher better)", f"{p['model']:.2f}", "copy last frame", f"{p['copy_last']:.2f}",
              f"{p['model'] - p['copy_last']:+.2f} dB")
    w.add_row("FD SSIM (higher better)", f"{s['model']:.3f}", "copy last frame", f"{s['copy_last']:.3f}",
              f"{s['model'] / max(s['copy_last'], 1e-9):.2f}x")
    if "autoencoder" in p:  # real future frames through the autoencoder: the flow's ceiling
        w.add_row("FD PSNR (dB)", f"{p['model']:.2f}", "autoencoder round trip (the flow's ceiling)",
                  f"{p['autoencoder']:.2f}", f"{p['model'] - p['autoencoder']:+.2f} dB")
    if "still" in p:  # has the model learned motion, or does it decode "nothing moves"?
        w.add_row("FD PSNR (dB)", f"{p['model']:.2f}", "autoencoder, nothing moves",
                  f"{p['still']:.2f}", f"{p['model'] - p['still']:+.2f} dB")
    if "prior" in p:  # the flow's starting point: the video prior's regression alone
        w.add_row("FD PSNR (dB)", f"{p['model']:.2f}", "video prior alone (steps 0)",
                  f"{p['prior']:.2f}", f"{p['model'] - p['prior']:+.2f} dB")
    if "fd_psnr_db_per_frame" in wm:
        pf = wm["fd_psnr_db_per_frame"]
        w.add_row("FD PSNR per future frame (dB)", " / ".join(f"{x:.1f}" for x in pf["model"]),
                  "copy last frame", " / ".join(f"{x:.1f}" for x in pf["copy_last"]), "")
    for base, label in (("ridge", "ridge on pixels"), ("mean", "mean action"),
                        ("policy", "the policy (no future frames)")):
        if base in e:
            w.add_row("ID action MAE (normalised, lower better)", f"{e['model']:.3f}", label, f"{e[base]:.3f}",
                      f"{e['model'] / max(e[base], 1e-9):.2f}x")
    if "model_other_future" in e:  # 1.00x: inverse dynamics ignores the future frames
        w.add_row("ID action MAE, another window's future frames", f"{e['model_other_future']:.3f}",
                  "own future frames", f"{e['model']:.3f}", f"{e['model_other_future'] / max(e['model'], 1e-9):.2f}x")
    if wm.get("camera_swap"):  # 1.00x: the policy ignores its camera
        cs = wm["camera_swap"]
        w.add_row("policy action MAE, frame of another episode", f"{cs['mae_other']:.3f}",
                  "own frame", f"{cs['mae_own']:.3f}", f"{cs['mae_other'] / max(cs['mae_own'], 1e-9):.2f}x")
    console.print(w)


def train_and_evaluate(args: argparse.Namespace, data: Path, out: Path, minutes: float) -> dict[str, Any]:
    """Train each of ``args.policies`` for ``minutes`` on ``data`` into ``out/<name>`` (kept:
    a second run evaluates what is there unless ``--retrain``) and evaluate them closed loop;
    returns ``{policy: {"train": ..., "eval": ...}}``."""
    policies: dict[str, Any] = {}
    specs = {}
    for name in args.policies:
        info = out / name / "train_info.json"
        specs[name] = str(out / name) if name == "cosmos3" else f"lerobot:{out / name}"
        if info.exists() and not args.retrain:
            train = json.loads(info.read_text())
            log(f"{name}: trained already ({info}); --retrain to train again")
        else:
            log(f"training {name} for {minutes:g} min")
            if name == "cosmos3":
                train = train_cosmos3(data, out / name, args.preset, minutes, args.batch, args.cosmos3_set)
            else:
                kind = "cosmos3" if name == "cosmos3-lerobot" else name
                train = train_lerobot(kind, data, out / name, minutes, args.batch, args.chunk, args.replan,
                                      args.preset)
            train["minutes"] = minutes
            info.parent.mkdir(parents=True, exist_ok=True)
            info.write_text(json.dumps(train))
        policies[name] = {"train": train}
        log(f"{name}: {train['steps']} steps, loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}")
    sampling = {name: (args.temperature, args.steps) if name == "cosmos3" else (1.0, 4) for name in specs}
    if args.prior_row and "cosmos3" in specs:
        specs["cosmos3 (prior)"], sampling["cosmos3 (prior)"] = specs["cosmos3"], (0.0, 0)
        policies["cosmos3 (prior)"] = {"train": policies["cosmos3"]["train"]}
    for name, spec in specs.items():
        log(f"evaluating {name} ({minutes:g} min)")
        temperature, steps = sampling[name]
        policies[name]["eval"] = closed_loop(spec, args.tasks, args.episodes,
                                             out / "eval" / name.replace(" (", "_").rstrip(")"),
                                             args.workers, args.replan, temperature, steps)
    return policies


def print_curve(results: dict[str, Any]) -> None:
    """Success per task against the training budget, one row per policy and budget."""
    from rich.console import Console
    from rich.table import Table

    cfg = results["config"]
    t = Table(title=f"Success against training time ({cfg['episodes']} episodes per task, seeds 100000+i, "
                    f"{cfg['threads']} CPU threads)")
    for col in ["policy", "minutes", "train steps", *cfg["tasks"], "overall"]:
        t.add_column(col, justify="left" if col == "policy" else "right")
    names = list(next(iter(results["budgets"].values())))
    for name in names:
        for minutes, policies in results["budgets"].items():
            r = policies[name]
            cells = []
            for task in [*cfg["tasks"], "overall"]:
                x = r["eval"]["overall"] if task == "overall" else r["eval"]["tasks"][task]
                lo, hi = x["ci95"]
                cells.append(f"{x['successes']}/{x['episodes']} [{100 * lo:.0f}-{100 * hi:.0f}%]")
            t.add_row(name, minutes, str(r["train"].get("steps", "-")), *cells)
    Console(width=max(Console().width, 140)).print(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--tasks", nargs="+", default=["reach", "push"])
    ap.add_argument("--demos", type=int, default=40, help="expert demonstrations per task")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0],
                    help="training budget per policy (minutes); several, e.g. 5 10 20 40, give a "
                         "success-vs-training-time table (each budget trains every policy afresh)")
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--replan", type=int, default=8, help="actions executed per chunk (all policies)")
    ap.add_argument("--workers", type=int, default=2, help="evaluation worker processes")
    ap.add_argument("--policies", nargs="+", default=["cosmos3", "act", "diffusion"],
                    choices=["cosmos3", "act", "diffusion", "cosmos3-lerobot"])
    ap.add_argument("--wm-episodes", type=int, default=4, help="held-out expert episodes per task for the world model")
    ap.add_argument("--steps", type=int, default=4,
                    help="our sampler's denoising steps closed loop (0: the action prior's chunk, what the demo "
                         "ships; with --temperature 0)")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="our sampler's starting-noise scale in [0, 1], closed loop and world model")
    ap.add_argument("--prior-row", action="store_true",
                    help="also evaluate our trained policy's action prior alone (steps 0, temperature 0: "
                         "the prior's chunk, the towers not run) as the row 'cosmos3 (prior)'")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny preset, reach only, 1 min each")
    ap.add_argument("--wm-run", metavar="RUN",
                    help="only score the world model of this trained run (e.g. runs/demo/run) on --wm-episodes "
                         "held-out episodes of --tasks, forward dynamics at --steps (0: the video prior)")
    ap.add_argument("--retrain", action="store_true", help="train again even where a trained policy is in --out")
    ap.add_argument("--set", dest="cosmos3_set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for cosmos3 (repeatable), e.g. window.embodiment=sim_arm_absolute")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.demos, args.minutes, args.episodes, args.preset, args.batch = ["reach"], 6, [1.0], 4, "tiny", 8
        args.wm_episodes = 2
    if args.wm_run:
        wm = world_model(Path(args.wm_run), args.tasks, args.wm_episodes, steps=args.steps,
                         temperature=args.temperature)
        print_world_model(wm)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "world_model.json").write_text(json.dumps(wm, indent=1))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted(set(args.minutes))
    results: dict[str, Any] = {"config": {**vars(args), "minutes": budgets[-1], "budgets": budgets,
                                          "threads": torch.get_num_threads()}, "budgets": {}}
    log(f"recording {args.demos} demos x {args.tasks}")
    results["record"] = record_data(out, args.tasks, args.demos, 64)
    for minutes in budgets:  # each budget trains every policy afresh: a success-vs-training-time curve
        where = out if len(budgets) == 1 else out / f"budget_{minutes:g}min"
        results["budgets"][f"{minutes:g}"] = train_and_evaluate(args, out / "data", where, minutes)
    results["policies"] = results["budgets"][f"{budgets[-1]:g}"]
    where = out if len(budgets) == 1 else out / f"budget_{budgets[-1]:g}min"
    if "cosmos3" in results["policies"]:
        log("world model: forward and inverse dynamics on held-out episodes")
        results["world_model"] = world_model(where / "cosmos3", args.tasks, args.wm_episodes, steps=4,
                                              temperature=args.temperature)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_tables(results)
    if len(budgets) > 1:
        print_curve(results)
    log(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
