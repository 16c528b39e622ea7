"""Speed paths give the same outputs as the plain torch path: the ONNX export of the
Generator step (run by onnxruntime, fp32 and int8), the policy runtime's backends and
settings, and torch.compile of the Generator. CPU, tiny preset, nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos3_robot.model import Cosmos3, WorldBatch, preset
from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

ort = pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

from cosmos3_robot.runtime.export import OrtGeneratorStep, export_generator_step  # noqa: E402
from cosmos3_robot.synthetic import sim_state, tiny_sim_policy  # noqa: E402


def woken(block_causal: bool = False) -> Cosmos3:
    """A tiny model with every weight perturbed, so zero-initialised gates and heads act."""
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny", block_causal=block_causal)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def batch(B: int = 2) -> WorldBatch:
    g = torch.Generator().manual_seed(0)
    return WorldBatch(text=["push the red cube", "stack the blue cube"][:B], embodiment=["sim_arm"] * B,
                      video=torch.rand(B, 3, 3, 32, 32, generator=g) * 2 - 1, n_context_frames=1,
                      actions=torch.randn(B, 8, 10, generator=g), fps=10.0, control_hz=10.0)


@pytest.mark.parametrize("block_causal", [False, True])
def test_onnx_generator_step_matches_torch(tmp_path, block_causal):
    m = woken(block_causal)
    report = export_generator_step(m, tmp_path / "step.onnx")
    print(f"\nONNX fp32 step (block_causal={block_causal}): max abs error {report.max_abs_error:.2e} "
          f"on outputs up to {report.max_abs_reference:.2f}")
    assert report.max_abs_error < 1e-4 and report.max_abs_reference > 0.1
    step = OrtGeneratorStep(tmp_path / "step.onnx")
    b = batch()
    for mode in ("policy_actions", "policy", "forward_dynamics", "inverse_dynamics"):
        kw = dict(steps=3, n_actions=8, action_dim=10, n_future_frames=2, seed=1, prefix_cache={})
        ref = m.generate(mode, b, plain=True, **kw)
        got = m.generate(mode, b, backend=step, **kw)
        for k in ref:
            err = float((got[k].float() - ref[k].float()).abs().max())
            assert err < 1e-4, (mode, k, err)


def test_int8_export_is_close_and_smaller(tmp_path):
    m = woken()
    fp32 = export_generator_step(m, tmp_path / "fp32.onnx")
    int8 = export_generator_step(m, tmp_path / "int8.onnx", int8=True)
    print(f"\nONNX int8 step: max abs error {int8.max_abs_error:.2e} on outputs up to {int8.max_abs_reference:.2f}; "
          f"{int8.size_mb:.2f} MB vs {fp32.size_mb:.2f} MB")
    assert 0 < int8.max_abs_error < 0.05 * int8.max_abs_reference
    assert (tmp_path / "int8.fp32.onnx").exists() and (tmp_path / "int8.json").exists()
    ref = m.generate("policy_actions", batch(), plain=True, steps=3, n_actions=8, action_dim=10)["actions"]
    got = m.generate("policy_actions", batch(), backend=OrtGeneratorStep(tmp_path / "int8.onnx"), steps=3,
                     n_actions=8, action_dim=10, prefix_cache={})["actions"]
    assert float((got - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_ort_step_refuses_another_graph(tmp_path):
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),), str(tmp_path / "other.onnx"), dynamo=False)
    with pytest.raises(ValueError, match="not a Generator step export"):
        OrtGeneratorStep(tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="plain reference path"):
        woken().generate("policy_actions", batch(), plain=True, backend=object(), n_actions=8, action_dim=10)


def test_policy_backends_agree_and_the_export_is_cached(tmp_path):
    base = tiny_sim_policy()
    with torch.no_grad():
        for p in base.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    frames = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    args = (frames, {"state": sim_state()}, "reach the red target")
    ref = base.infer(*args)
    ort_policy = Cosmos3Policy(base.model, "sim_arm", base.normalizer, base.window,
                               InferenceConfig(backend="onnxruntime"), export_dir=tmp_path, weights_source="w1")
    got = ort_policy.infer(*args)
    for k in ref:
        assert np.allclose(got[k], ref[k], atol=1e-4), k
    path = tmp_path / "generator_step.onnx"
    mtime = path.stat().st_mtime_ns
    Cosmos3Policy(base.model, "sim_arm", base.normalizer, base.window, InferenceConfig(backend="onnxruntime"),
                  export_dir=tmp_path, weights_source="w1")
    assert path.stat().st_mtime_ns == mtime  # same weights: the export is reused
    Cosmos3Policy(base.model, "sim_arm", base.normalizer, base.window, InferenceConfig(backend="onnxruntime"),
                  export_dir=tmp_path, weights_source="w2")
    assert path.stat().st_mtime_ns != mtime  # other weights: exported again


def test_backend_without_an_export_folder_leaves_no_file(tmp_path, monkeypatch):
    import tempfile

    from cosmos3_robot.runtime.policy import generator_backend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    m = woken()
    step = generator_backend(m, InferenceConfig(backend="onnxruntime"))
    assert list(tmp_path.iterdir()) == []  # exported, loaded, removed
    kw = dict(steps=2, n_actions=8, action_dim=10, seed=0)
    ref = m.generate("policy_actions", batch(), plain=True, **kw)["actions"]
    got = m.generate("policy_actions", batch(), backend=step, prefix_cache={}, **kw)["actions"]
    assert torch.allclose(got, ref, atol=1e-4)


def test_steps_0_exports_no_generator(tmp_path):
    """The prior's chunk runs neither tower: nothing to export or load for onnxruntime."""
    base = tiny_sim_policy()
    pol = Cosmos3Policy(base.model, "sim_arm", base.normalizer, base.window,
                        InferenceConfig(backend="onnxruntime", steps=0), export_dir=tmp_path, weights_source="w")
    assert pol.backend is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, match", [
    (dict(backend="tensorrt"), "backend"),
    (dict(dtype="float16"), "dtype"),
    (dict(int8=True), "int8"),
    (dict(backend="onnxruntime", device="cuda"), "onnxruntime"),
    (dict(steps=-1), r"steps: expected 0..1000"),
    (dict(steps=1001), r"steps: expected 0..1000"),
])
def test_inference_config_is_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        InferenceConfig(**kw)


def test_compiled_generator_matches_eager():
    """torch.compile of the Generator tower (inductor C++ on the CPU; ~30 s to compile)."""
    m = woken(block_causal=True)
    b = batch(1)
    kw = dict(steps=3, n_actions=8, action_dim=10, seed=2, prefix_cache={})
    ref = m.generate("policy_actions", b, **kw)["actions"]
    from cosmos3_robot.runtime.policy import generator_backend

    generator_backend(m, InferenceConfig(compile=True))
    got = m.generate("policy_actions", b, **kw)["actions"]
    assert torch.allclose(got, ref, atol=1e-4)
