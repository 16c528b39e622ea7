"""CUDA paths against the CPU's float32: generation in every mode, the deployed policy in
bf16 and with CUDA graphs, training steps with bf16 autocast. Skipped without a GPU (CI has
none); the lent GPU machine runs them (docs/speed.md, "On a GPU")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosmos3_robot.synthetic import sim_state, tiny_sim_policy
from test_train import libero_recipe

from cosmos3_robot.model import load_model
from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig
from cosmos3_robot.train.recipe import run

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")]


@pytest.fixture(autouse=True)
def exact_float32():
    """Plain float32 on the GPU (no TF32 in matmuls or convolutions), so CUDA float32 can be
    held to the CPU's within rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


MODES = [("policy_actions", "actions", {}), ("policy", "video", {"n_future_frames": 2}),
         ("forward_dynamics", "video", {"n_future_frames": 2}), ("inverse_dynamics", "actions", {})]


@pytest.mark.parametrize("mode,key,extra", MODES)
def test_every_mode_on_cuda_matches_the_cpu(make_model, random_batch, mode, key, extra):
    m = make_model(wake=True).eval()
    b = random_batch()
    kw = dict(steps=3, n_actions=8, action_dim=19, seed=5, **extra)
    ref = m.generate(mode, b, **kw)[key]
    out = m.to("cuda").generate(mode, b, **kw)[key]
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), ref, atol=2e-4, rtol=1e-4)


def test_prior_chunk_and_keypoints_on_cuda_match_the_cpu(make_model, random_batch):
    m = make_model(wake=True, visual_keypoints=8, action_prior=True, state_input=True,
                   flow={"prior_noise": 0.3}).eval()
    b = random_batch()
    b.state = torch.randn(2, 10)
    for steps in (0, 2):
        kw = dict(steps=steps, n_actions=8, action_dim=19, seed=1, temperature=0.5)
        ref = m.cpu().generate("policy_actions", b, **kw)["actions"]
        out = m.to("cuda").generate("policy_actions", b, **kw)["actions"]
        torch.testing.assert_close(out.cpu(), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("compile_", [False, True], ids=["bf16", "bf16+cuda-graphs"])
def test_policy_bf16_on_cuda_tracks_float32_on_the_cpu(compile_):
    ref_policy = tiny_sim_policy()
    with torch.no_grad():  # non-degenerate heads (a fresh model's adaLN-zero blocks output 0)
        for p in ref_policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = {"state": sim_state()}
    img = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ref = ref_policy.infer(img, state, "reach the red target", seed=3)["state"]
    gpu = Cosmos3Policy(ref_policy.model, "sim_arm", ref_policy.normalizer, ref_policy.window,
                        InferenceConfig(device="cuda", dtype="bfloat16", compile=compile_))
    assert gpu.model.device.type == "cuda" and next(gpu.model.parameters()).dtype == torch.bfloat16
    outs = [gpu.infer(img, state, "reach the red target", seed=3)["state"] for _ in range(4)]
    for out in outs:  # bf16 keeps ~3 significant digits: millimetres on a metre-scale pose
        assert np.isfinite(out).all()
        assert np.abs(out[:, :3] - ref[:, :3]).max() < 5e-3
    assert all(np.array_equal(outs[0], o) for o in outs[1:])  # graph replays are deterministic


def test_training_on_cuda_with_bf16_autocast_then_loading_on_the_cpu(tmp_path):
    history = run(libero_recipe(tmp_path, steps=6, amp=True, ema=0.0), tmp_path / "run", quiet=True)
    losses = [h["loss"] for h in history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    model = load_model(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1] / "model.safetensors",
                       map_location="cpu")
    assert model.device.type == "cpu"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_video_prior_forward_dynamics_and_pretraining_on_cuda(make_model, random_batch, tmp_path):
    """The video prior's start (steps 0 and a few flow steps) on CUDA matches the CPU, and a
    recipe with it pretrains (encoder and prior phases) and trains there with bf16 autocast."""
    m = make_model(wake=True, video_prior=True, action_prior=True, flow={"prior_noise": 0.3}).eval()
    b = random_batch()
    for steps in (0, 2):
        kw = dict(steps=steps, n_future_frames=2, seed=1, temperature=0.5)
        ref = m.cpu().generate("forward_dynamics", b, **kw)["video"]
        out = m.to("cuda").generate("forward_dynamics", b, **kw)["video"]
        torch.testing.assert_close(out.cpu(), ref, atol=2e-4, rtol=1e-4)
    vp = ["model.overrides={video_encoder: conv_ae, latent_channels: 4, spatial_compression: 4, "
          "temporal_compression: 2, dm_patch: 2, video_anchored: true, video_prior: true}"]
    history = run(libero_recipe(tmp_path, steps=4, encoder_steps=3, prior_steps=20, amp=True, ema=0.0),
                  tmp_path / "run", overrides=vp, quiet=True)
    assert len(history) == 4 and all(np.isfinite([h["loss"] for h in history]))
