"""Learning and sampling: every mode overfits a small problem, the optimised sampler equals
the plain path, generation is seeded, the samplers and timestep schedules, the cached
instruction prefix. CPU, tiny preset."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos3_robot.model import Cosmos3, WorldBatch, preset
from cosmos3_robot.model.flow import integrate, sample_time, shift_time
from cosmos3_robot.model.mot import PrefixCache


def _overfit(square_clips, mode: str, steps: int, lr: float = 5e-3):
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny", flow={"text_dropout": 0.0}))
    video, actions = square_clips(4)
    b = WorldBatch(text=["a", "b", "c", "d"], embodiment=["single_arm_10d"] * 4, video=video,
                   n_context_frames=1, actions=actions)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    hist = []
    for _ in range(steps):
        loss, _ = m.loss(mode, b, generator=g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
    m.eval()
    return m, b, video, actions, sum(hist[:10]) / 10, sum(hist[-20:]) / 20


@pytest.mark.slow
def test_overfit_inverse_dynamics_recovers_actions(square_clips):
    m, b, _, actions, first, last = _overfit(square_clips, "inverse_dynamics", 400)
    assert last < first / 10, (first, last)
    out = m.generate("inverse_dynamics", b, steps=10, n_actions=8)
    err = float(((out["actions"] - actions) ** 2).mean())
    assert err < 0.05 * float(actions.var()), err


@pytest.mark.slow
def test_overfit_forward_dynamics_predicts_future_frames(square_clips):
    m, b, video, _, first, last = _overfit(square_clips, "forward_dynamics", 600)
    assert last < first / 10, (first, last)
    pred = m.generate("forward_dynamics", b, steps=10, n_future_frames=2)["video"]
    err = float(((pred - video[:, 1:]) ** 2).mean())
    copy_last = float(((video[:, :1] - video[:, 1:]) ** 2).mean())
    assert err < copy_last / 2, (err, copy_last)


@pytest.mark.slow
def test_overfit_policy_co_generates_video_and_actions(square_clips):
    m, b, video, actions, first, last = _overfit(square_clips, "policy", 600)
    assert last < first / 10, (first, last)
    out = m.generate("policy", b, steps=10, n_future_frames=2, n_actions=8, action_dim=10)
    assert float(((out["actions"] - actions) ** 2).mean()) < 0.1 * float(actions.var())


@pytest.mark.parametrize("block_causal,priors", [(False, False), (True, False), (True, True)])
def test_optimised_generation_equals_the_plain_path(make_model, random_batch, block_causal, priors):
    """Per-request precomputation (positions, RoPE, the adaLN modulation table, the
    block-causal clean K/V) changes no sample: same outputs as recomputing at every step
    (also with the action and video priors, whose starts and scaled heads both paths share)."""
    extra = {"action_prior": True, "video_prior": True, "flow": {"prior_noise": 0.5}} if priors else {}
    m = make_model(wake=True, block_causal=block_causal, **extra).eval()
    b = random_batch()
    cache: dict = {}
    for mode in ("policy_actions", "policy", "forward_dynamics", "inverse_dynamics"):
        for guidance, sampler in ((1.0, "euler"), (2.0, "heun")):
            kw = dict(steps=3, n_future_frames=2, n_actions=8, action_dim=19, seed=3, guidance=guidance,
                      sampler=sampler, shift=3.0)
            fast = m.generate(mode, b, prefix_cache=cache, **kw)
            again = m.generate(mode, b, prefix_cache=cache, **kw)  # table from the cache
            slow = m.generate(mode, b, plain=True, **kw)
            for k in slow:
                assert torch.allclose(fast[k].float(), slow[k].float(), atol=1e-5), (mode, guidance, k)
                assert torch.equal(fast[k], again[k])
    assert any(k[0] == "modulation" for k in cache)


def test_generation_is_deterministic_under_a_seed_and_guidance_mixes(make_model, random_batch):
    m = make_model(wake=True)
    b = random_batch()
    kw = dict(steps=4, n_actions=8, action_dim=19)
    a = m.generate("policy_actions", b, seed=7, **kw)["actions"]
    assert torch.equal(a, m.generate("policy_actions", b, seed=7, **kw)["actions"])
    assert not torch.allclose(a, m.generate("policy_actions", b, seed=8, **kw)["actions"])
    # guidance 0 keeps only the unconditional (empty-text) velocity
    uncond = m.generate("policy_actions", WorldBatch(**{**b.__dict__, "text": ["", ""]}), seed=7, **kw)["actions"]
    assert torch.allclose(m.generate("policy_actions", b, seed=7, guidance=0.0, **kw)["actions"], uncond, atol=1e-5)
    heun = m.generate("policy_actions", b, seed=7, sampler="heun", **kw)["actions"]
    assert heun.shape == a.shape and torch.isfinite(heun).all()


def test_samplers_on_a_known_ode():
    # dx/dt = -x * cos(t) has x(1) = x0 * exp(-sin(1)); Heun is second order, Euler first.
    x0 = torch.ones(1, 1, dtype=torch.float64)

    def v(x, t):
        return -x * torch.cos(t.double())

    exact = math.exp(-math.sin(1.0))
    e4 = abs(float(integrate(v, x0, 4, method="euler")) - exact)
    e8 = abs(float(integrate(v, x0, 8, method="euler")) - exact)
    h4 = abs(float(integrate(v, x0, 4, method="heun")) - exact)
    assert e8 < e4 * 0.6 and h4 < e4 / 3
    with pytest.raises(ValueError, match="sampling steps"):
        integrate(v, x0, 0)


def test_timestep_sampling_and_shift():
    from cosmos3_robot.model.config import FlowConfig

    g = torch.Generator().manual_seed(0)
    for kind in ("logit_normal", "uniform", "beta"):
        t = sample_time((20000,), FlowConfig(timestep_sampling=kind), g)
        assert 0 < float(t.min()) and float(t.max()) < 1
    beta = sample_time((200000,), FlowConfig(timestep_sampling="beta"), g)
    # GR00T: noise level (0.999 - Beta(1.5, 1)) / 0.999, mean (0.999 - 0.6) / 0.999
    assert float(1 - beta.mean()) == pytest.approx((0.999 - 0.6) / 0.999, abs=0.01)
    t = torch.linspace(0, 1, 11)
    assert torch.equal(shift_time(t, 1.0), t)
    shifted = shift_time(t, 5.0)
    assert torch.all(shifted <= t + 1e-7) and shifted[0] == 0 and shifted[-1] == 1


def test_shared_instruction_prefix_equals_one_pass_per_sample(make_model):
    """Samples with the same text share one Reasoner pass: the same hidden states, K/V and
    gradients as running every sample on its own."""
    texts = ["pick the cube", "open the drawer", "pick the cube", "pick the cube"]
    grads = []
    for dedupe in (True, False):
        m = make_model(wake=True)
        if dedupe:
            h, cache, tok = m.encode_prefix(texts)
        else:  # the reference: one pass per sample
            outs = [m.encode_prefix([t]) for t in texts]
            h = torch.cat([o[0] for o in outs])
            cache = PrefixCache([torch.cat([o[1].keys[i] for o in outs]) for i in range(m.config.n_layers)],
                                [torch.cat([o[1].values[i] for o in outs]) for i in range(m.config.n_layers)],
                                torch.cat([o[1].valid for o in outs]))
            tok = torch.cat([o[2] for o in outs])
        (h.square().mean() + sum(k.mean() for k in cache.keys) + cache.values[-1].square().mean()).backward()
        grads.append((h.detach(), [k.detach() for k in cache.keys], cache.valid, tok,
                      [p.grad.clone() for p in m.core.parameters() if p.grad is not None]))
    (h1, k1, v1, t1, g1), (h2, k2, v2, t2, g2) = grads
    assert torch.allclose(h1, h2, atol=1e-5) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(k1, k2))
    assert torch.equal(v1, v2) and torch.equal(t1, t2)
    assert len(g1) == len(g2) > 0 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


def test_prefix_cache_across_requests_gives_the_same_samples():
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny")).eval()
    for p in m.parameters():  # non-degenerate heads
        torch.nn.init.normal_(p, std=0.05)
    b = WorldBatch(text=["reach the red target"], embodiment=["sim_arm"], video=torch.rand(1, 1, 3, 32, 32) * 2 - 1,
                   n_context_frames=1, fps=10.0, control_hz=10.0)
    kw = {"steps": 3, "n_actions": 8, "action_dim": 10, "seed": 4}
    cache: dict = {}
    with torch.inference_mode():
        plain = m.generate("policy_actions", b, **kw)["actions"]
        first = m.generate("policy_actions", b, prefix_cache=cache, **kw)["actions"]
        again = m.generate("policy_actions", b, prefix_cache=cache, **kw)["actions"]
        guided = m.generate("policy_actions", b, prefix_cache=cache, guidance=2.0, **kw)["actions"]
        other = m.generate("policy_actions", WorldBatch(**{**b.__dict__, "text": ["reach the blue target"]}),
                           prefix_cache=cache, **kw)["actions"]
    assert torch.equal(plain, first) and torch.equal(first, again)
    prefixes = [k for k in cache if k[0] != "modulation"]
    assert len(prefixes) == 3  # one entry per distinct (text, guidance) prefix
    assert torch.allclose(guided, m.generate("policy_actions", b, guidance=2.0, **kw)["actions"])
    assert not torch.allclose(other, plain)


def test_vlm_mode_learns_and_generates_text():
    """The Reasoner alone: next-byte cross-entropy on the text, then greedy continuation."""
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny", flow={"text_dropout": 0.0}))
    b = WorldBatch(text=["pick red", "push blue"])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = float(m.loss("vlm", b)[0])
    for _ in range(150):
        loss, _ = m.loss("vlm", b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first / 10
    m.eval()
    assert m.generate("vlm", WorldBatch(text=["pick", "push"]))["text"] == [" red", " blue"]
