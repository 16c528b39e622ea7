"""The LeRobot plugins (``plugins/lerobot_policy_cosmos3``, ``plugins/lerobot_env_cosmos3_sim``):
LeRobot's own factory, training loop (``lerobot-train``, evaluating on our env during
training) and evaluation loop (``lerobot-eval`` over our built-in tasks, with its video) run
the cosmos3 policy. Data is recorded here with the scripted expert through
``LeRobotDataset.create``; nothing is downloaded."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")

for _dist in ("lerobot_policy_cosmos3", "lerobot_env_cosmos3_sim"):
    try:
        importlib.metadata.distribution(_dist)
    except importlib.metadata.PackageNotFoundError:  # installed with the lerobot extra by scripts/setup.sh
        pytest.fail(f"lerobot is installed but the {_dist} plugin is not: pip install -e plugins/{_dist}",
                    pytrace=False)

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.utils.import_utils import register_third_party_plugins  # noqa: E402

BIN = Path(sys.executable).parent


def features(size: int = 48):
    return ({"observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, size, size)),
             "observation.state": PolicyFeature(FeatureType.STATE, (8,))},
            {"action": PolicyFeature(FeatureType.ACTION, (8,))})


def test_lerobot_discovers_both_plugins_by_distribution_name():
    from lerobot.envs.configs import EnvConfig
    from lerobot.envs.factory import make_env_config

    register_third_party_plugins()
    cfg = make_env_config("cosmos3_sim", task="push", image_size=32)
    assert type(cfg).__module__ == "lerobot_env_cosmos3_sim" and cfg.fps == 10
    assert "cosmos3_sim" in EnvConfig.get_known_choices()


def test_lerobot_factory_builds_cosmos3_from_its_type_name():
    register_third_party_plugins()  # what lerobot-train / lerobot-eval do at start-up
    from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors

    inputs, outputs = features()
    cfg = make_policy_config("cosmos3", preset="tiny", device="cpu", chunk_size=8, n_action_steps=4,
                             input_features=inputs, output_features=outputs)
    policy_cls = get_policy_class("cosmos3")
    assert type(cfg).__name__ == "Cosmos3Config" and policy_cls.__name__ == "Cosmos3Policy"
    assert cfg.get_scheduler_preset().peak_lr == cfg.optimizer_lr
    policy = policy_cls(cfg)
    stats = {k: {"mean": torch.zeros(8), "std": torch.ones(8) * 2} for k in ("observation.state", "action")}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    obs = {"observation.images.front": torch.rand(3, 48, 48), "observation.state": torch.rand(8),
           "task": "reach the red target"}
    chunk = policy.predict_action_chunk(pre(obs))
    assert chunk.shape == (1, 8, 8)
    # select_action serves n_action_steps of one chunk through the chunk scheduler, then samples anew
    calls = []
    predict = policy.predict_action_chunk
    policy.predict_action_chunk = lambda b, **kw: calls.append(1) or predict(b, **kw)
    first = [policy.select_action(pre(obs)) for _ in range(6)]
    assert all(a.shape == (1, 8) for a in first) and len(calls) == 2  # steps 0 and 4
    assert torch.allclose(first[0], chunk[:, 0]) and torch.allclose(first[3], chunk[:, 3])  # the same seed
    assert post(first[0]).shape == (1, 8)
    policy.predict_action_chunk = predict
    # training: the world-model mixture when future frames are loaded
    cfg_wm = make_policy_config("cosmos3", preset="tiny", device="cpu", chunk_size=8, future_frames=2,
                                input_features=inputs, output_features=outputs)
    assert cfg_wm.observation_delta_indices == [0, 1, 2]
    wm = policy_cls(cfg_wm)
    batch = {"observation.images.front": torch.rand(2, 3, 3, 48, 48), "action": torch.randn(2, 8, 8),
             "task": ["a", "b"]}
    parts = [wm.forward(batch)[1] for _ in range(4)]
    assert "video_future" in parts[1] and "actions" in parts[3] and "video_future" not in parts[3]
    # Chunk steps past an episode's end (LeRobot's action_is_pad) reach the model as invalid
    # steps, which its action loss leaves out (as ACT does; tests/test_model_sequence.py).
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[:, 5:] = True
    padded = {"observation.images.front": torch.rand(2, 3, 48, 48), "action": torch.randn(2, 8, 8),
              "task": ["a", "b"], "action_is_pad": pad}
    assert torch.equal(policy._world_batch(padded, with_actions=True).action_valid, ~pad)
    assert policy._world_batch({k: v for k, v in padded.items() if k != "action_is_pad"}, True).action_valid is None
    with pytest.raises(ValueError, match="action_is_pad"):
        policy.forward({**padded, "action_is_pad": pad[:, :4]})
    # observation.state is the proprioceptive input of presets that read it (tiny does not)
    assert policy._world_batch({**padded, "observation.state": torch.randn(2, 8)}, True).state is None
    small = policy_cls(make_policy_config("cosmos3", preset="small", device="cpu", chunk_size=8, future_frames=4,
                                          input_features=features(64)[0], output_features=outputs))
    st = torch.randn(2, 5, 8)  # (B, 1 + future_frames, S) when future frames are loaded: now is index 0
    wb = small._world_batch({"observation.images.front": torch.rand(2, 5, 3, 64, 64), "action": torch.randn(2, 8, 8),
                             "task": ["a", "b"], "observation.state": st}, True)
    assert torch.equal(wb.state, st[:, 0])
    with pytest.raises(ValueError, match="observation.images.front"):
        policy.forward({"action": torch.randn(2, 8, 8)})
    with pytest.raises(ValueError, match="future_frames"):
        type(cfg)(preset="small", future_frames=3, input_features=inputs, output_features=outputs)
    # the camera keypoints, action prior and its noise scale reach the model; steps 0 at
    # temperature 0 is the prior's chunk
    cfg_p = make_policy_config("cosmos3", preset="tiny", device="cpu", chunk_size=8, visual_keypoints=4,
                               action_prior=True, prior_noise=0.5, num_inference_steps=0, temperature=0.0,
                               input_features=inputs, output_features=outputs)
    prior = policy_cls(cfg_p)
    mc = prior.model.config
    assert (mc.visual_keypoints, mc.action_prior, mc.flow.prior_noise) == (4, True, 0.5)
    with torch.no_grad():
        prior.model.parts.action_prior.bias[0, :8, :8] = torch.linspace(-1, 1, 64).reshape(8, 8)
    assert torch.allclose(prior.predict_action_chunk(pre(obs)), prior.model.parts.action_prior.bias[0, :8, :8][None])
    with pytest.raises(ValueError, match="num_inference_steps: expected 1..1000"):
        type(cfg)(preset="tiny", num_inference_steps=0, input_features=inputs, output_features=outputs)
    with pytest.raises(ValueError, match="prior_noise"):
        type(cfg)(preset="tiny", action_prior=True, prior_noise=0.0, input_features=inputs, output_features=outputs)


@pytest.mark.slow
def test_lerobot_train_and_eval_run_the_cosmos3_policy(tmp_path):
    from cosmos3_robot.sim.record import record

    root = tmp_path / "data"
    stats = record(["reach"], 2, root, repo_id="local/reach", use_videos=False, image_size=48, cameras=("front",))
    assert stats.kept["reach"] == 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    out = tmp_path / "train"
    cmd = [str(BIN / "lerobot-train"), "--dataset.repo_id=local/reach", f"--dataset.root={root}",
           "--policy.type=cosmos3", "--policy.preset=tiny", "--policy.device=cpu", "--policy.push_to_hub=false",
           "--policy.chunk_size=8", "--policy.n_action_steps=8", "--steps=4", "--batch_size=2", "--num_workers=0",
           "--save_freq=4", "--log_freq=2", "--wandb.enable=false", f"--output_dir={out}",
           # evaluation during training on our env plugin (LeRobot 0.6: env_eval_freq)
           "--env.type=cosmos3_sim", "--env.task=reach", "--env.image_size=48", "--env_eval_freq=4",
           "--eval.n_episodes=1", "--eval.batch_size=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model_dir = out / "checkpoints" / "last" / "pretrained_model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["type"] == "cosmos3" and config["fps"] == 10

    ev = tmp_path / "eval"
    cmd = [str(BIN / "lerobot-eval"), f"--policy.path={model_dir}", "--policy.device=cpu", "--env.type=cosmos3_sim",
           "--env.task=reach", "--env.image_size=48", "--eval.n_episodes=1", "--eval.batch_size=1",
           f"--output_dir={ev}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((ev / "eval_info.json").read_text())
    episodes = info["per_episode"] if "per_episode" in info else info["overall"]
    assert episodes  # LeRobot's rollout ran select_action on our env to the episode's end
    videos = sorted(ev.rglob("*.mp4"))  # its video writer takes our env's (integer) render_fps
    assert videos and videos[0].stat().st_size > 1000, proc.stdout[-2000:]
