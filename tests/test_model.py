"""The compact MoT as a whole: checkpoints, bad input, preset sizes, precision and devices.
CPU, tiny preset (builders in ``conftest.py``; the parts in ``test_model_*.py``)."""

from __future__ import annotations


import pytest
import torch

from cosmos3_robot.model import Cosmos3, WorldBatch, load_model, preset, save_model


def test_save_load_round_trip_and_config_mismatch(make_model, random_batch, tmp_path):
    m = make_model(wake=True)
    path = save_model(m, tmp_path / "model.safetensors")
    m2 = load_model(path)
    b = random_batch()
    kw = dict(steps=2, n_actions=8, action_dim=19, seed=1)
    assert torch.equal(m.generate("policy_actions", b, **kw)["actions"], m2.generate("policy_actions", b, **kw)["actions"])
    with pytest.raises(ValueError, match=r"does not match the requested one:\n  transformer.dim: checkpoint 64 vs requested 96"):
        load_model(path, preset("tiny", dim=96))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        load_model(tmp_path / "junk.safetensors")


def test_config_groups_and_checkpoints_saved_with_flat_keys(make_model, random_batch, flat_config, tmp_path):
    """The config is grouped (transformer, video, action, flow); a field reads flat too, and
    flat keys (recipes' overrides, checkpoints saved before the grouping) name one field each."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from cosmos3_robot.model.config import Cosmos3Config

    cfg = preset("small")
    assert cfg.transformer.dim == cfg.dim == 320 and cfg.video.video_prior is cfg.video_prior is False
    assert set(cfg.to_dict()) == {"name", "transformer", "video", "action", "flow"}
    assert Cosmos3Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert Cosmos3Config.from_dict(flat_config(cfg)) == cfg
    grouped = cfg.replace(video={"video_prior": True}, flow={"prior_noise": 0.5})
    assert grouped == cfg.replace(video_prior=True, flow={"prior_noise": 0.5}) and grouped.video.video_prior
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nope'\]"):
        cfg.replace(nope=1)
    with pytest.raises(ValueError, match=r"unknown video field\(s\) \['dim'\]"):
        cfg.replace(video={"dim": 8})
    with pytest.raises(AttributeError, match="no field 'nope'"):
        cfg.nope  # noqa: B018
    # A checkpoint whose metadata holds the flat config loads with the same weights.
    m = make_model(wake=True)
    path = save_model(m, tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps(flat_config(m.config))
    old = tmp_path / "flat.safetensors"
    save_file(state, str(old), metadata=meta)
    m_old = load_model(old)
    assert m_old.config == m.config
    b = random_batch()
    kw = dict(steps=2, n_actions=8, action_dim=19, seed=1)
    assert torch.equal(m.generate("policy_actions", b, **kw)["actions"],
                       m_old.generate("policy_actions", b, **kw)["actions"])


def test_optional_parts_are_modules_and_checkpoints_of_before_them_load(make_model, tmp_path):
    """The state input, keypoint stem and priors live in ``model.parts``; a checkpoint saved
    when they were attributes of the model (``state_in.*``, ``keypoints.*``, ``prior_bias``,
    ``prior_head.*``, ``video_prior.*``) loads with the same weights and gives the same actions."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    m = make_model(wake=True, state_input=True, visual_keypoints=4, action_prior=True, video_prior=True)
    assert list(m.parts) == ["state", "keypoints", "action_prior", "video_prior"]
    assert m.part("keypoints") is m.parts.keypoints and make_model().part("keypoints") is None
    path = save_model(m, tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    before = {"parts.state.proj.": "state_in.", "parts.keypoints.stem.": "keypoints.",
              "parts.action_prior.bias": "prior_bias", "parts.action_prior.head.": "prior_head.",
              "parts.video_prior.net.": "video_prior."}
    old = {}
    for k, v in state.items():
        new = next((k.replace(a, b, 1) for a, b in before.items() if k.startswith(a)), k)
        old[new] = v
    assert {"prior_bias", "state_in.w", "prior_head.0.weight", "keypoints.out.weight",
            "video_prior.out.bias"} <= set(old) and not any(k.startswith("parts.") for k in old)
    save_file(old, str(tmp_path / "old.safetensors"), metadata=meta)
    m_old = load_model(tmp_path / "old.safetensors")
    assert all(torch.equal(v, m_old.state_dict()[k]) for k, v in m.state_dict().items())
    g = torch.Generator().manual_seed(3)
    b = WorldBatch(text=["a", "b"], embodiment=["single_arm"] * 2, video=torch.rand(2, 1, 3, 32, 32, generator=g) * 2 - 1,
                   state=torch.randn(2, 8, generator=g), fps=10.0, control_hz=10.0)
    kw = dict(steps=0, n_actions=8, action_dim=8, seed=1, temperature=0.0)
    m.eval(), m_old.eval()  # (a training stem shifts its camera frames at random)
    assert torch.equal(m.generate("policy_actions", b, **kw)["actions"],
                       m_old.generate("policy_actions", b, **kw)["actions"])
    assert json.loads(meta["config"]) == json.loads(m_old.config.to_json())


def test_input_checks_are_plain_functions_of_a_batch_and_the_model_sizes():
    """The checks the model runs on a batch work without a model: padding and masks on the
    requested device and dtype, and errors that name the field and the expected shape."""
    from cosmos3_robot.model.inputs import check_images, domain_indices, padded_actions, padded_state

    a, mask = padded_actions(torch.ones(2, 4, 3), None, 2, max_actions=8, W=5, dtype=torch.float64)
    assert a.shape == (2, 4, 5) and a.dtype == torch.float64 and a[..., 3:].abs().sum() == 0
    assert mask.tolist() == [[True] * 3 + [False] * 2] * 2
    with pytest.raises(ValueError, match="actions: chunk of 9 steps exceeds max_actions 8"):
        padded_actions(torch.ones(2, 9, 3), None, 2, max_actions=8, W=5)
    x, present = padded_state(torch.ones(2, 2), torch.tensor([[True, False], [False, False]]), 2, W=4)
    assert x.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]] and present.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"state: expected \(2, P\) normalised proprioception with P <= 4"):
        padded_state(torch.ones(2, 6), None, 2, W=4)
    assert domain_indices(["b", "a"], 2, ["a", "b"]) == [1, 0]
    with pytest.raises(ValueError, match=r"embodiment 'c' has no action domain in this model; known: \['a', 'b'\]"):
        domain_indices(["a", "c"], 2, ["a", "b"])
    with pytest.raises(ValueError, match=r"video: expected shape \(1, N, 3, 8, 8\)"):
        check_images(torch.zeros(1, 2, 3, 8, 9), "video", 1, 8)


def test_bad_inputs_have_clear_errors(make_model, random_batch):
    m = make_model()
    b = random_batch()
    with pytest.raises(ValueError, match=r"embodiment 'spot_arm' has no action domain in this model; known: \["):
        m.loss("policy", WorldBatch(**{**b.__dict__, "embodiment": ["spot_arm"] * 2}))
    with pytest.raises(ValueError, match="actions: width 70 exceeds the padded maximum 64"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "actions": torch.zeros(2, 8, 70)}))
    with pytest.raises(ValueError, match=r"text\[1\]: 102 tokens \(BOS \+ 100 UTF-8 bytes \+ EOS\) exceed the text context of 48"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "text": ["ok", "x" * 100]}))
    with pytest.raises(ValueError, match=r"video: expected shape \(2, N, 3, 32, 32\)"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "video": torch.zeros(2, 3, 3, 64, 64)}))
    with pytest.raises(ValueError, match="actions: non-finite"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "actions": torch.full((2, 8, 19), float("nan"))}))
    with pytest.raises(ValueError, match="exceeds max_actions 32"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "actions": torch.zeros(2, 40, 19)}))
    with pytest.raises(ValueError, match="unknown mode 'dream'"):
        m.loss("dream", b)
    with pytest.raises(ValueError, match="fps: rates must be > 0"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "fps": 0.0}))
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")


def test_presets_sizes():
    sizes = {name: Cosmos3(preset(name)).num_parameters() for name in ("tiny", "small")}
    assert sizes["tiny"] < 2e6
    assert 10e6 <= sizes["small"] <= 30e6


def test_bf16_autocast_on_cpu(make_model, random_batch):
    """The bf16 path (as used on CUDA) runs: losses finite, generation finite."""
    m = make_model(wake=True)
    b = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = m.loss("policy", b)
        out = m.generate("policy", b, steps=2, n_future_frames=2, n_actions=8)
    assert torch.isfinite(loss) and all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_bf16_matches_cpu_float32(make_model, random_batch):
    m = make_model(wake=True)
    b = random_batch()
    kw = dict(steps=4, n_actions=8, action_dim=19, seed=0)
    ref = m.generate("policy_actions", b, **kw)["actions"]
    m_gpu = m.to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m_gpu.generate("policy_actions", b, **kw)["actions"].float().cpu()
    assert (out - ref).abs().max() < 0.1
