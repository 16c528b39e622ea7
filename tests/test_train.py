"""Training from recipes: each format, DDP with two CPU processes, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cosmos3_robot.synthetic import write_libero_hdf5, write_umi_zarr
from safetensors.torch import load_file

from cosmos3_robot.cli import main as cli_main
from cosmos3_robot.model import load_model
from cosmos3_robot.train import TrainConfig, lr_at
from cosmos3_robot.train.recipe import run
from cosmos3_robot.train.state import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def libero_recipe(tmp: Path, **train) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    write_libero_hdf5(tmp / "libero_demo.hdf5", n_demos=2, T=30)
    recipe = {
        "model": {"preset": "tiny"},
        "window": {"embodiment": "libero", "camera": "agentview", "fps": 20, "n_context": 1,
                   "n_future": 2, "chunk": 8, "image_size": 32},
        "data": [{"format": "hdf5", "path": "libero_demo.hdf5", "layout": "libero"}],
        "train": {"steps": 4, "batch_size": 2, "lr": 1e-3, "warmup": 1, "log_every": 1, "ckpt_every": 2,
                  "ema": 0.9, **train},
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_from_libero_hdf5_writes_checkpoints_stats_and_metrics(tmp_path):
    out = tmp_path / "run"
    hist = run(libero_recipe(tmp_path), out, quiet=True)
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert {k for h in hist for k in h if k.startswith("loss/")} <= {"loss/policy", "loss/forward_dynamics", "loss/inverse_dynamics"}
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert ckpt.name == "step_0000004"
    m = load_model(ckpt / "model.safetensors")
    assert m.config.name == "tiny"
    assert set(load_file(str(ckpt / "ema.safetensors"))) == set(m.state_dict())
    stats = json.loads((out / "stats_0_libero.json").read_text())
    assert stats["type"] == "quantile" and len(stats["q01"]) == 7
    trainer_state = json.loads((ckpt / "trainer.json").read_text())
    assert trainer_state["position"] == 8
    assert trainer_state["normalizers"][0] == stats  # the checkpoint carries its statistics


def test_train_from_zarr_with_transforms_and_mixture(tmp_path):
    write_umi_zarr(tmp_path / "umi.zarr")
    write_libero_hdf5(tmp_path / "lib.hdf5", n_demos=1, T=30)
    recipe = {
        "model": {"preset": "tiny"},
        "window": {"camera": "cam0", "n_context": 1, "n_future": 0, "chunk": 8, "image_size": 32},
        "data": [
            {"format": "zarr", "path": "umi.zarr", "weight": 3.0, "window": {"embodiment": "single_arm_10d"},
             "layout": {"cameras": {"cam0": "camera0_rgb"}, "fps": 10, "text": "fold",
                        "state": {"pos": "robot0_eef_pos", "rot": "robot0_eef_rot_axis_angle",
                                  "gripper": "robot0_gripper_width"}},
             "transforms": [{"PoseFromPosRotation": {"pos": "pos", "rot": "rot", "out": "ee", "rotation": "axis_angle"}},
                            {"Squeeze": {"key": "gripper"}}]},
            {"format": "hdf5", "path": "lib.hdf5", "weight": 1.0, "layout": "libero",
             "window": {"embodiment": "libero", "camera": "agentview", "fps": 20}},
        ],
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "ckpt_every": 10,
                  "modes": {"policy_actions": 1.0}, "ema": 0.0},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    hist = run(tmp_path / "r.yaml", tmp_path / "run", quiet=True)
    assert len(hist) == 3 and all(h["loss/policy_actions"] > 0 for h in hist)


def test_recipe_errors_are_clear(tmp_path, capsys):
    path = libero_recipe(tmp_path)
    assert cli_main(["train", "--recipe", str(path), "--out", str(tmp_path / "r"), "--set", "train.stepz=3"]) == 2
    assert "unknown field(s) ['stepz']" in capsys.readouterr().err
    assert cli_main(["train", "--recipe", str(path), "--out", str(tmp_path / "r"),
                     "--set", "window.embodiment=nope"]) == 2
    assert "unknown embodiment 'nope'" in capsys.readouterr().err


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    assert lr_at(55, cfg) == pytest.approx(0.55)


def _train_cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cosmos3_robot", "train", "--recipe", str(recipe), "--out", str(out), *extra]


@pytest.mark.slow
def test_kill_and_resume_continues_the_loss_curve(tmp_path):
    recipe = libero_recipe(tmp_path, steps=8, ckpt_every=4, log_every=1)
    # Reference: one uninterrupted run.
    subprocess.run(_train_cmd(recipe, tmp_path / "ref"), check=True, timeout=600, capture_output=True)
    ref = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ref")}
    # Interrupted: kill the process once the step-4 checkpoint exists, then resume.
    out = tmp_path / "cut"
    proc = subprocess.Popen(_train_cmd(recipe, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "latest").read_text() == "step_0000004"
    subprocess.run(_train_cmd(recipe, out, "--resume"), check=True, timeout=600, capture_output=True)
    cut = {r["step"]: r["loss"] for r in read_metrics(out)}
    for step in range(5, 9):
        assert cut[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-6), step


@pytest.mark.slow
def test_ddp_two_cpu_processes_see_different_data_and_end_identical(tmp_path):
    recipe = libero_recipe(tmp_path, steps=3, ckpt_every=3, ema=0.0)
    out = tmp_path / "ddp"
    probe = tmp_path / "probe.py"
    code = f'''
import os, json, torch
from cosmos3_robot.train import trainer as T
seen = []
orig_batch = T.Trainer._batch
def spy(self):
    b = orig_batch(self)
    seen.append(round(float(b.actions.abs().sum()), 6))
    return b
T.Trainer._batch = spy
orig_close = T.Trainer.close
weights = {{}}
def close(self):
    weights["sum"] = [float(p.detach().double().sum()) for p in self.model.parameters()]
    orig_close(self)
T.Trainer.close = close
from cosmos3_robot.train.recipe import run
run({str(recipe)!r}, {str(out)!r}, quiet=True)
rank = os.environ["RANK"]
open({str(tmp_path)!r} + f"/rank{{rank}}.json", "w").write(json.dumps({{"seen": seen, "weights": weights["sum"]}}))
'''
    probe.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(probe)], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["seen"] != r1["seen"], "both ranks read the same batches"
    assert r0["weights"] == pytest.approx(r1["weights"], rel=1e-6, abs=1e-7)
    assert (out / "checkpoints" / "latest").read_text() == "step_0000003"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    """Every shipped recipe parses into a model config, windows, transforms and a schedule."""
    from cosmos3_robot import embodiments
    from cosmos3_robot.data.windows import WindowSpec
    from cosmos3_robot.model import preset
    from cosmos3_robot.train.recipe import load_recipe, parse_transforms, train_config_from

    r = load_recipe(path)
    preset(r["model"]["preset"], **(r["model"].get("overrides") or {}))
    train_config_from(r["train"])
    assert r["data"], "no data source"
    for entry in r["data"]:
        spec = WindowSpec(**{**r["window"], **entry.get("window", {})})
        embodiments.get(spec.embodiment)
        parse_transforms(entry.get("transforms"))
        assert entry["format"] in ("hdf5", "zarr", "lerobot", "rosbag")
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "recipes start with a header saying what data they expect"


def test_droid_19d_recipe_transforms_match_the_droid_embodiment():
    import numpy as np

    from cosmos3_robot import embodiments
    from cosmos3_robot.train.recipe import load_recipe, parse_transforms
    from cosmos3_robot.transforms import apply

    r = load_recipe(ROOT / "recipes" / "droid" / "droid_19d.yaml")
    rng = np.random.default_rng(0)
    raw = {"cartesian_position": np.c_[rng.normal(size=(5, 3)), rng.uniform(-3, 3, (5, 3))],
           "gripper_position": rng.uniform(0, 1, (5, 1))}
    via_recipe = apply(parse_transforms(r["data"][0]["transforms"]), raw)
    via_droid = embodiments.get("droid").from_raw(raw)
    np.testing.assert_allclose(via_recipe["ee"], via_droid["ee"], atol=1e-12)
    x19 = embodiments.get("single_arm").encode_raw(via_recipe)
    x10 = embodiments.get("droid").encode_raw(raw)
    np.testing.assert_allclose(x19[:, 9:], x10, atol=1e-12)  # fixed camera: same ee + gripper dims


def test_optional_wandb_logging_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional (installed with the lerobot extra)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    run(libero_recipe(tmp_path, steps=2, wandb_project="cosmos3-test", ckpt_every=2), out, quiet=True)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, "no offline wandb run was written"
    assert len(read_metrics(out)) == 2


@pytest.mark.slow
def test_fsdp_matches_ddp_and_resumes(tmp_path):
    """FSDP2 (sharded per MoT layer) on two CPU processes: the same losses as DDP, a full
    checkpoint that loads as a plain model, and a resume that continues."""
    recipe = libero_recipe(tmp_path, steps=3, ckpt_every=3, ema=0.9)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(out: Path, *extra: str) -> None:
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "-m", "cosmos3_robot", "train", "--recipe", str(recipe), "--out", str(out), *extra],
                             capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-3000:]

    launch(tmp_path / "ddp")
    launch(tmp_path / "fsdp", "--set", "train.strategy=fsdp")
    ddp = [r["loss"] for r in read_metrics(tmp_path / "ddp")]
    fsdp = [r["loss"] for r in read_metrics(tmp_path / "fsdp")]
    assert fsdp == pytest.approx(ddp, rel=1e-3)
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_0000003"
    plain = load_model(ckpt / "model.safetensors")
    ref = load_model(tmp_path / "ddp" / "checkpoints" / "step_0000003" / "model.safetensors")
    for (name, a), b in zip(plain.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name
    launch(tmp_path / "fsdp", "--set", "train.strategy=fsdp", "--set", "train.steps=5", "--resume")
    assert [r["step"] for r in read_metrics(tmp_path / "fsdp")] == [1, 2, 3, 4, 5]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("COSMOS3_COMPILE_TEST") != "1",
                    reason="torch.compile on CPU takes ~2 min of compilation; set COSMOS3_COMPILE_TEST=1 to run")
def test_torch_compile_matches_eager(tmp_path):
    eager = run(libero_recipe(tmp_path / "a", steps=3, ema=0.0), tmp_path / "a" / "run", quiet=True)
    compiled = run(libero_recipe(tmp_path / "b", steps=3, ema=0.0, compile=True), tmp_path / "b" / "run", quiet=True)
    assert [h["loss"] for h in compiled] == pytest.approx([h["loss"] for h in eager], rel=2e-2)


def lerobot_and_rosbag_recipe(tmp_path: Path, model: dict) -> Path:
    """Two sources in one recipe: a LeRobot dataset of LIBERO commands (no state blocks)
    and a rosbag of a 10D single arm (pose and gripper state); ``tmp_path / "r.yaml"``."""
    from cosmos3_robot.synthetic import write_lerobot_dataset, write_rosbag

    write_lerobot_dataset(tmp_path / "lr", n_episodes=2, T=24)
    write_rosbag(tmp_path / "bag")
    recipe = {
        "model": model,
        "window": {"n_context": 1, "n_future": 2, "chunk": 8, "image_size": 32},
        "data": [
            {"format": "lerobot", "repo_id": "local/cosmos3_test", "root": "lr",
             "window": {"embodiment": "libero", "camera": "front"},
             "layout": {"cameras": {"front": "observation.images.front"}, "commands": {"actions": "action"}}},
            {"format": "rosbag", "path": "bag", "window": {"embodiment": "single_arm_10d", "camera": "front", "fps": 10},
             "layout": {"cameras": {"front": "/camera/image_raw"},
                        "state": {"joints": "/joint_states", "ee": "/ee_pose"}, "fps": 10, "text": "wipe"},
             "transforms": [{"Split": {"key": "joints", "parts": [["gripper", 7, 8]]}}, {"Squeeze": {"key": "gripper"}}]},
        ],
        "train": {"steps": 2, "batch_size": 4, "log_every": 1, "ckpt_every": 2, "ema": 0.0},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "r.yaml"


def test_train_from_lerobot_and_rosbag_sources(tmp_path):
    lerobot_and_rosbag_recipe(tmp_path, {"preset": "tiny"})
    hist = run(tmp_path / "r.yaml", tmp_path / "run", quiet=True)
    assert len(hist) == 2 and all(h["loss"] > 0 for h in hist)
    assert (tmp_path / "run" / "stats_0_libero.json").exists() and (tmp_path / "run" / "stats_1_single_arm_10d.json").exists()


def test_gradient_accumulation_consumes_micro_batches(tmp_path):
    out = tmp_path / "run"
    hist = run(libero_recipe(tmp_path, steps=2, batch_size=2, grad_accum=3, ckpt_every=2, ema=0.0), out, quiet=True)
    assert len(hist) == 2
    ckpt = out / "checkpoints" / "step_0000002"
    assert json.loads((ckpt / "trainer.json").read_text())["position"] == 2 * 2 * 3


def test_time_budget_shortens_the_schedule(tmp_path):
    """With max_minutes the step count is fitted to the budget and the cosine schedule ends on it."""
    out = tmp_path / "run"
    hist = run(libero_recipe(tmp_path, steps=100_000, max_minutes=0.1, budget_probe=2, log_every=1,
                             ckpt_every=100_000), out, quiet=True)
    last = hist[-1]["step"]
    assert 2 < last < 100_000
    state = json.loads((out / "checkpoints" / (out / "checkpoints" / "latest").read_text() / "trainer.json").read_text())
    assert state["budget_steps"] == last and state["train"]["steps"] == last
    # the cosine schedule ran to its end within the budget: the last step's rate is the fitted
    # schedule's last, below the recipe's (how many steps fit depends on the machine's load)
    fitted, planned = (TrainConfig(lr=1e-3, warmup=1, steps=n) for n in (last, 100_000))
    assert hist[-1]["lr"] == pytest.approx(1e-3 * lr_at(last - 1, fitted))
    assert hist[-1]["lr"] < 1e-3 * lr_at(last - 1, planned) - 1e-4


def test_set_overrides_index_lists(tmp_path):
    from cosmos3_robot.train.recipe import load_recipe

    r = load_recipe(libero_recipe(tmp_path), ["data.0.path=other.hdf5", "train.modes={policy: 1.0}"])
    assert r["data"][0]["path"] == "other.hdf5" and r["train"]["modes"] == {"policy": 1.0}
    with pytest.raises(ValueError, match="not an index"):
        load_recipe(libero_recipe(tmp_path), ["data.3.path=x"])


def test_proprioception_statistics_reach_the_checkpoint_and_the_policy(tmp_path):
    """A model with ``state_input`` trained on a layout with state blocks (single_arm_10d) and
    one without (LIBERO's commands): state statistics for the first only, saved with the
    run, and the policy feeds the normalised proprioception of the current state."""
    from cosmos3_robot.data.windows import collate
    from cosmos3_robot.runtime import Cosmos3Policy

    lerobot_and_rosbag_recipe(tmp_path, {"preset": "tiny", "overrides": {"state_input": True}})
    out = tmp_path / "run"
    run(tmp_path / "r.yaml", out, quiet=True)
    assert not list(out.glob("state_stats_0_*")) and (out / "state_stats_1_single_arm_10d.json").exists()
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    norms = json.loads((ckpt / "trainer.json").read_text())["state_normalizers"]
    assert norms[0] is None and len(norms[1]["q01"]) == 10  # ee position + 6D rotation, gripper
    assert norms[1]["skip"] == [False] * 3 + [True] * 6 + [False]  # 6D rotation entries as they are
    pol = Cosmos3Policy.from_checkpoint(out, source=1)
    assert pol.state_normalizer is not None and float(pol.model.parts.state.proj.w.detach().abs().sum()) > 0  # trained
    from cosmos3_robot.train.recipe import build_datasets, load_recipe
    from cosmos3_robot.transforms import apply

    datasets, _ = build_datasets(load_recipe(tmp_path / "r.yaml"), out)
    ds = datasets[1]
    sample = ds[0]
    e, t = ds.index[0]
    raw = apply(ds.transforms, {k: v[t:t + 1] for k, v in ds.episodes[e].state.items()})
    start = ds.embodiment.start_state(ds.embodiment.from_raw(raw))
    expect = pol.state_normalizer.normalize(ds.embodiment.codec.proprio(start))
    np.testing.assert_allclose(sample["state"].numpy(), expect, atol=1e-5)
    batch = pol.processor.batch(sample["video"][:1], "wipe", start)
    np.testing.assert_allclose(batch.state[0].numpy(), expect, atol=1e-5)
    mixed = collate([datasets[0][0], sample])  # LIBERO has no state: an empty mask row
    assert mixed.state.shape == (2, 64) and mixed.state_mask.sum(1).tolist() == [0, 10]


def test_encoder_pretraining_then_frozen(tmp_path):
    """``encoder_steps``: the conv autoencoder trains alone first (its own records in
    metrics.jsonl), then stays fixed while the world model trains; EMA and checkpoints hold
    the trained encoder; a resumed run does not pretrain again; a model without a trainable
    encoder skips it."""
    from cosmos3_robot.train.recipe import build_model, load_recipe

    path = libero_recipe(tmp_path, steps=4, encoder_steps=5, log_every=1, ckpt_every=2)
    conv = ["model.overrides={video_encoder: conv_ae, latent_channels: 4, spatial_compression: 4, "
            "temporal_compression: 2, dm_patch: 2}"]
    out = tmp_path / "run"
    hist = run(path, out, overrides=conv, quiet=True)
    enc = read_metrics(out, "encoder")
    assert [r["encoder_step"] for r in enc] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss/video_recon"]) for r in enc)
    assert [h["step"] for h in hist] == [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    assert not any("loss/video_recon" in h for h in hist)  # no reconstruction pass once frozen
    init = build_model(load_recipe(path, conv)).video_encoder.state_dict()
    ckpts = out / "checkpoints"
    s2, s4 = (load_file(str(ckpts / f"step_000000{n}" / "model.safetensors")) for n in (2, 4))
    ema = load_file(str(ckpts / "step_0000004" / "ema.safetensors"))
    keys = [k for k in s4 if k.startswith("video_encoder.")]
    assert keys and any(not torch.equal(s4[k], init[k[len("video_encoder."):]]) for k in keys)  # trained
    assert all(torch.equal(s2[k], s4[k]) and torch.equal(ema[k], s4[k]) for k in keys)  # then frozen
    assert any(not torch.equal(s2[k], s4[k]) for k in s4 if not k.startswith("video_encoder."))

    run(path, out, overrides=[*conv, "train.steps=6"], resume=True, quiet=True)
    assert len(read_metrics(out, "encoder")) == 5 and read_metrics(out)[-1]["step"] == 6

    hist = run(path, tmp_path / "patchify", quiet=True)  # raw patches: nothing to pretrain
    assert read_metrics(tmp_path / "patchify", "encoder") == [] and hist[-1]["step"] == 4


def test_video_prior_pretrains_with_the_encoder_and_on_a_share_of_each_prior_batch(tmp_path):
    """``video_prior``: it learns alongside the encoder's pretraining (one record of both
    losses), then in the prior phase from ``video_prior_batch_size`` windows of each batch
    (it reads pixels: the encoder never runs there), its loss falling while nothing else
    moves."""
    from cosmos3_robot.train.recipe import build_datasets, build_model, load_recipe
    from cosmos3_robot.train.config import train_config_from
    from cosmos3_robot.train.trainer import Trainer

    path = libero_recipe(tmp_path, steps=1, encoder_steps=3, prior_steps=60, prior_lr=3e-3, warmup=5,
                         log_every=10, pretrain_batch_size=4, video_prior_batch_size=3)
    vp = ["model.overrides={video_encoder: conv_ae, latent_channels: 4, spatial_compression: 4, "
          "temporal_compression: 2, dm_patch: 2, video_anchored: true, video_prior: true}"]
    recipe = load_recipe(path, vp)
    torch.manual_seed(0)
    model = build_model(recipe)
    datasets, _ = build_datasets(recipe, tmp_path / "stats")
    calls: dict[str, list[int]] = {"encode": [], "prior": []}
    encode, prior = model.video_encoder.encode, model.parts.video_prior.net.forward

    def counting_encode(video):
        calls["encode"].append(video.shape[0])
        return encode(video)

    def counting_prior(frame, *args):
        calls["prior"].append(frame.shape[0])
        return prior(frame, *args)

    model.video_encoder.encode = counting_encode  # type: ignore[method-assign]
    model.parts.video_prior.net.forward = counting_prior  # type: ignore[method-assign]
    snapshot: dict[str, torch.Tensor] = {}
    pretrain = Trainer._pretrain

    def spy(self, phase, *args, **kw):
        if phase == "prior":
            for v in calls.values():
                v.clear()
            snapshot.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return pretrain(self, phase, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_pretrain", spy)
        Trainer(model, datasets[0], train_config_from(recipe["train"]), tmp_path / "run", quiet=True)
    enc = read_metrics(tmp_path / "run", "encoder")
    assert len(enc) == 1 and np.isfinite(enc[0]["loss/video_recon_and_prior"])
    recs = read_metrics(tmp_path / "run", "prior")
    assert [r["prior_step"] for r in recs] == [10, 20, 30, 40, 50, 60]
    assert recs[-1]["loss/video_prior"] < recs[0]["loss/video_prior"] - 1.0  # dB
    assert calls["encode"] == [] and calls["prior"] == [3] * 60
    state = model.state_dict()
    moved = {k for k in state if not torch.equal(state[k], snapshot[k])}
    assert moved and all(k.startswith("parts.video_prior.") for k in moved)
    with pytest.raises(ValueError, match="train.video_prior_batch_size: expected >= 1"):
        train_config_from({**recipe["train"], "video_prior_batch_size": 0})


def test_prior_pretraining_reads_the_camera_before_the_flow(tmp_path):
    """``prior_steps``: the action prior (keypoint stem and head) regresses the chunk alone
    first (its own records in metrics.jsonl, its loss falling) while the towers stay at
    their initial weights; the EMA starts from the pretrained prior; the prior keeps training
    with the flow afterwards; a resumed run does not pretrain again; a model without an
    action prior skips it."""
    from cosmos3_robot.train.recipe import build_datasets, build_model, load_recipe
    from cosmos3_robot.train.config import train_config_from
    from cosmos3_robot.train.trainer import Trainer

    path = libero_recipe(tmp_path, steps=2, prior_steps=60, prior_lr=3e-3, warmup=5, log_every=10)
    prior = ["model.overrides={visual_keypoints: 4, action_prior: true}"]
    recipe = load_recipe(path, prior)
    torch.manual_seed(0)
    model = build_model(recipe)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    datasets, _ = build_datasets(recipe, tmp_path / "stats")
    out = tmp_path / "run"
    trainer = Trainer(model, datasets[0], train_config_from(recipe["train"]), out, quiet=True)
    recs = read_metrics(out, "prior")
    assert [r["prior_step"] for r in recs] == [10, 20, 30, 40, 50, 60]
    assert recs[-1]["loss/action_prior"] < 0.7 * recs[0]["loss/action_prior"]  # L1: falls more slowly than MSE
    state = model.state_dict()
    moved = {k for k in state if not torch.equal(state[k], init[k])}
    assert moved and all(k.startswith(("parts.action_prior.", "parts.keypoints.")) for k in moved)
    assert any(k.startswith("parts.keypoints.stem.cameras") for k in moved)  # the camera path learned
    ema = trainer.ema.state_dict()
    assert all(torch.equal(ema[k], state[k]) for k in state)
    before = model.parts.action_prior.head[0].weight.detach().clone()
    hist = trainer.fit()
    assert [h["step"] for h in hist] == [2] and not torch.equal(model.parts.action_prior.head[0].weight, before)
    trainer.save()

    resumed = Trainer(build_model(recipe), datasets[0], train_config_from({**recipe["train"], "steps": 3}), out,
                      resume=True, quiet=True)
    assert len(read_metrics(out, "prior")) == 6 and resumed.step == 2

    plain = Trainer(build_model(load_recipe(path)), datasets[0], train_config_from(recipe["train"]),
                    tmp_path / "plain", quiet=True)
    assert read_metrics(tmp_path / "plain", "prior") == [] and plain.step == 0
    with pytest.raises(ValueError, match="prior_steps >= 0 and prior_lr > 0"):
        TrainConfig(prior_steps=-1)
