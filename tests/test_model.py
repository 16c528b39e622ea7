"""The compact MoT: attention wall, block-causal caching, mRoPE timing, layouts, learning,
sampling, checkpoints and bad input. CPU, tiny preset."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos3_robot.model import MODES, Cosmos3, Mode, WorldBatch, load_model, preset, save_model
from cosmos3_robot.model.modes import get_mode
from cosmos3_robot.model import rope
from cosmos3_robot.model.flow import integrate, sample_time, shift_time
from cosmos3_robot.model.mot import PrefixCache
from cosmos3_robot.model.vae import ConvVideoAE, ExternalVAE


def make_model(wake: bool = False, **overrides) -> Cosmos3:
    """A tiny model; ``wake`` perturbs every weight so the zero-initialised (adaLN-Zero)
    generator blocks and heads are not the identity / zero."""
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny", **overrides))
    if wake:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return m


def random_batch(B=2, frames=3, n_actions=8, D=19, seed=0, embodiment="single_arm") -> WorldBatch:
    g = torch.Generator().manual_seed(seed)
    return WorldBatch(
        text=[f"task {i}" for i in range(B)], embodiment=[embodiment] * B,
        video=torch.rand(B, frames, 3, 32, 32, generator=g) * 2 - 1, n_context_frames=1,
        actions=torch.randn(B, n_actions, D, generator=g), fps=15.0, control_hz=15.0,
    )


def square_clips(B: int, frames: int = 3, size: int = 32, side: int = 10):
    """A coloured square moving with a per-sample velocity; actions are a fixed linear map
    of that velocity, so FD (video + actions -> future) and ID (video -> actions) are learnable."""
    g = torch.Generator().manual_seed(1)
    p0 = torch.tensor([[4.0, 4.0], [16.0, 6.0], [6.0, 16.0], [14.0, 14.0]])[:B]
    vel = torch.tensor([[4.0, 2.0], [-3.0, 4.0], [5.0, -2.0], [-4.0, -4.0]])[:B]
    video = -torch.ones(B, frames, 3, size, size)
    colour = torch.tensor([1.0, 0.2, -0.5])[:, None, None]
    for b in range(B):
        for i in range(frames):
            x, y = (p0[b] + i * vel[b]).round().long().tolist()
            video[b, i, :, y:y + side, x:x + side] = colour
    W = torch.randn(2, 10, generator=g) * 0.3
    actions = (vel @ W)[:, None, :].expand(B, 8, 10).contiguous()
    return video, actions


# ---- the attention rule -------------------------------------------------------------------
def test_ar_outputs_do_not_depend_on_dm_tokens():
    m = make_model(wake=True)
    core, c = m.core, m.config
    B, La, Ld = 2, 10, 12
    ar = torch.randn(B, La, c.dim, requires_grad=True)
    dm = torch.randn(B, Ld, c.dim, requires_grad=True)
    temb = torch.randn(B, Ld, c.dim)
    pos_a, pos_d = torch.rand(B, La, 3) * 10, torch.rand(B, Ld, 3) * 10
    ca, sa = m.rope.cos_sin(pos_a, ar.dtype)
    cd, sd = m.rope.cos_sin(pos_d, dm.dtype)
    valid_a = torch.ones(B, La, dtype=torch.bool)
    noisy = torch.zeros(B, Ld, dtype=torch.bool)
    noisy[:, 6:] = True
    ar_h, cache = core.forward_ar(ar, ca, sa, valid_a)
    dm_h, _, _ = core.forward_dm(dm, temb, cd, sd, cache, torch.ones(B, Ld, dtype=torch.bool), noisy)
    # No gradient path from any DM token into the AR outputs ...
    assert torch.autograd.grad(ar_h.sum(), dm, allow_unused=True)[0] is None
    # ... while DM outputs do read the AR keys/values (shared attention).
    assert torch.autograd.grad(dm_h.sum(), ar, retain_graph=True)[0].abs().sum() > 0
    # And through the public path: the prefix is the same whatever video/actions follow.
    b1, b2 = random_batch(seed=0), random_batch(seed=1)
    h1, c1, _ = m.encode_prefix(b1.text)
    h2, c2, _ = m.encode_prefix(b2.text)
    assert torch.equal(h1, h2) and all(torch.equal(a, b) for a, b in zip(c1.keys, c2.keys))


@pytest.mark.parametrize("block_causal", [True, False])
def test_block_causal_clean_tokens_ignore_noisy_targets(block_causal):
    m = make_model(wake=True, block_causal=block_causal)
    c = m.config
    B, La, Ld, n_clean = 2, 6, 10, 4
    _, cache = m.core.forward_ar(torch.randn(B, La, c.dim), *m.rope.cos_sin(torch.rand(B, La, 3), torch.float32),
                                 torch.ones(B, La, dtype=torch.bool))
    # Perturb and permute the noisy targets only.
    dm = torch.randn(B, Ld, c.dim)
    dm2 = dm.clone()
    dm2[:, n_clean:] = torch.randn(B, Ld - n_clean, c.dim)[:, torch.randperm(Ld - n_clean)]
    temb = torch.randn(B, Ld, c.dim)
    pos = torch.rand(B, Ld, 3) * 5
    noisy = torch.arange(Ld)[None].expand(B, Ld) >= n_clean
    valid = torch.ones(B, Ld, dtype=torch.bool)
    cs = m.rope.cos_sin(pos, torch.float32)
    h1, _, _ = m.core.forward_dm(dm, temb, *cs, cache, valid, noisy)
    h2, _, _ = m.core.forward_dm(dm2, temb, *cs, cache, valid, noisy)
    same = torch.allclose(h1[:, :n_clean], h2[:, :n_clean], atol=1e-6)
    assert same == block_causal


def test_block_causal_cached_generation_equals_recomputation():
    m = make_model(wake=True, block_causal=True)
    m.eval()
    b = random_batch()
    for mode in ("policy", "inverse_dynamics", "forward_dynamics"):
        kw = dict(steps=3, n_future_frames=2, n_actions=8, seed=3)
        fast = m.generate(mode, b, **kw)
        slow = m.generate(mode, b, plain=True, **kw)
        for k in fast:
            assert torch.allclose(fast[k].float(), slow[k].float(), atol=1e-5), (mode, k)


@pytest.mark.parametrize("block_causal,priors", [(False, False), (True, False), (True, True)])
def test_optimised_generation_equals_the_plain_path(block_causal, priors):
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


def test_grouped_modulation_equals_per_token_modulation():
    """One adaLN projection per stream (gathered, or broadcast for a single stream) gives the
    same Generator outputs as projecting every token's time embedding."""
    m = make_model(wake=True).eval()
    c = m.config
    B, Ld = 2, 10
    g = torch.Generator().manual_seed(0)
    _, cache, _ = m.encode_prefix(["a", "bb"])
    dm = torch.randn(B, Ld, c.dim, generator=g)
    pos = torch.arange(Ld, dtype=torch.float64)[None, :, None].expand(B, Ld, 3) + 50
    cos, sin = m.rope.cos_sin(pos, dm.dtype)
    stream_time = torch.tensor([[1.0, 0.3], [1.0, 0.7]])
    group = torch.tensor([0] * 4 + [1] * 6)
    temb_s = m.time_embed(stream_time)
    noisy = (group == 1)[None].expand(B, Ld)
    valid = torch.ones(B, Ld, dtype=torch.bool)
    with torch.no_grad():
        per_token, _, _ = m.core.forward_dm(dm, temb_s[:, group], cos, sin, cache, valid, noisy)
        grouped, _, _ = m.core.forward_dm(dm, temb_s, cos, sin, cache, valid, noisy, group)
        table = m.modulation_table(torch.tensor([1.0, 0.3]))
        mods = table.take([1.0, 0.3])[0]
        looked_up, _, _ = m.core.forward_dm(dm[:1], None, cos[:1], sin[:1], PrefixCache(
            [k[:1] for k in cache.keys], [v[:1] for v in cache.values], cache.valid[:1]),
            valid[:1], noisy[:1], group, mods)
        one_stream, _, _ = m.core.forward_dm(dm[:, 4:], temb_s, cos[:, 4:], sin[:, 4:], cache, valid[:, 4:],
                                             noisy[:, 4:], 1)
        ref_one, _, _ = m.core.forward_dm(dm[:, 4:], temb_s[:, group[4:]], cos[:, 4:], sin[:, 4:], cache,
                                          valid[:, 4:], noisy[:, 4:])
    assert torch.allclose(per_token, grouped, atol=1e-6)
    assert torch.allclose(looked_up, per_token[:1], atol=1e-6)
    assert torch.allclose(one_stream, ref_one, atol=1e-6)
    with pytest.raises(ValueError, match="flow times"):
        table.take([0.5])


# ---- FPS-modulated mRoPE --------------------------------------------------------------------
def test_joint_qk_norm_rope_and_folded_scale_equal_separate_ones():
    """``qkv_heads`` normalises and rotates q and k together with the attention scale folded
    into the q weight; attention then equals the textbook form (separate q/k RMSNorm, RoPE
    on each, SDPA's default 1/sqrt(d) scale), also under ONNX export's explicit form."""
    import torch.nn.functional as F

    from cosmos3_robot.model import attention
    from cosmos3_robot.model.mot import TowerBlock

    torch.manual_seed(0)
    blk = TowerBlock(64, 4, 128, adaln=False)
    with torch.no_grad():
        blk.q_norm.weight.uniform_(0.5, 1.5)
        blk.k_norm.weight.uniform_(0.5, 1.5)
    h = torch.randn(2, 7, 64)
    angles = torch.randn(2, 7, 8) * 3
    cos, sin = angles.cos(), angles.sin()
    q, k, v = blk.qkv_heads(h, cos, sin)
    ref_q, ref_k, ref_v = blk.qkv(h).view(2, 7, 3, 4, 16).permute(2, 0, 3, 1, 4)
    ref_q = rope.apply_rope(blk.q_norm(ref_q), cos[:, None], sin[:, None])
    ref_k = rope.apply_rope(blk.k_norm(ref_k), cos[:, None], sin[:, None])
    assert torch.allclose(q * 16 ** 0.5, ref_q, atol=1e-5) and torch.allclose(k, ref_k, atol=1e-6)
    assert torch.equal(v, ref_v)
    mask = torch.rand(2, 1, 7, 7) > 0.3
    mask |= torch.eye(7, dtype=torch.bool)
    ref = F.scaled_dot_product_attention(ref_q, ref_k, ref_v, attn_mask=mask)
    assert torch.allclose(attention.attend(q, k, v, mask), ref, atol=1e-5)
    explicit = attention.attend_explicit(q, k, v, attention.attention_bias(mask, q.dtype))
    assert torch.allclose(explicit, ref, atol=1e-5)


def test_same_physical_time_same_temporal_position():
    # Raw frames (no temporal compression): the frame one second in, at 16, 24 and 30 fps.
    for fps in (16, 24, 30):
        pos = rope.video_positions(fps + 1, 1, 1, fps, 1)
        assert pos[fps, 0].item() == pytest.approx(6.0)
    # After 4x temporal compression: two seconds in, at 16 and 24 fps (latent frames 8 and 12).
    for fps, j in ((16, 8), (24, 12)):
        pos = rope.video_positions(j + 1, 1, 1, fps, 4)
        assert pos[j, 0].item() == pytest.approx(12.0)
    # 24 fps after 4x compression is TPS 6: one position unit per latent frame (the base).
    assert rope.temporal_step(24 / 4) == pytest.approx(1.0)
    # Audio at 25 tokens/s lines up: token 25 is one second.
    assert rope.audio_positions(26)[25, 0].item() == pytest.approx(6.0)
    assert rope.AUDIO_TPS == 25


def test_action_step_zero_aligns_with_video_frame_one():
    for hz in (10.0, 15.0, 20.0):
        video = rope.video_positions(3, 2, 2, hz, 1, t0=7.0)
        acts = rope.action_positions(2, hz, t_now=7.0)
        assert acts[0, 0].item() == pytest.approx(video[4, 0].item())  # frame 1 = tokens 4..7
        assert acts[1, 0].item() == pytest.approx(video[8, 0].item())
    # Text uses the same index on all three axes; video carries its grid on h and w.
    t = rope.text_positions(5)
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])
    v = rope.video_positions(1, 2, 3, 15, 1)
    assert v[:, 1].tolist() == [0, 0, 0, 1, 1, 1] and v[:, 2].tolist() == [0, 1, 2, 0, 1, 2]


def test_rope_relative_property():
    """Rotary attention scores depend only on position differences, also fractional ones."""
    r = rope.MRoPE(16, (4, 2, 2))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        cq, sq = r.cos_sin(torch.tensor([[pq]]), torch.float64)
        ck, sk = r.cos_sin(torch.tensor([[pk]]), torch.float64)
        return (rope.apply_rope(q.double(), cq, sq) * rope.apply_rope(k.double(), ck, sk)).sum()

    a = score([1.5, 2.0, 3.0], [0.25, 1.0, 1.0])
    b = score([11.5, 7.0, 5.0], [10.25, 6.0, 3.0])
    assert torch.allclose(a, b, atol=1e-10)


# ---- layouts and losses ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODES))
def test_layout_clean_before_noisy_and_loss_covers_exactly_noisy(name):
    m = make_model()
    mode = MODES[name]
    b = random_batch()
    if not mode.has("video_context"):
        b.n_context_frames = 0
    _, parts = m.loss(mode, b)
    expected = set(mode.noisy) | ({"text"} if mode.text_loss else set())
    assert set(parts) == expected
    if mode.streams:
        # Assemble the layout the loss uses and check the ordering rule on the tokens.
        B = b.batch_size
        clean, noise, inputs, domain, mask, n_ctx, _ = m._clean_streams(mode, b, B, None)
        times = {s: torch.full((B,), 0.5) for s in mode.noisy}
        lay = m._layout(mode, B, 50.0, torch.full((B,), 15.0), torch.full((B,), 15.0),
                        {k: v for k, v in inputs.items() if k != "actions"}, n_ctx, inputs.get("actions"), domain, times)
        flags = lay.noisy[0].tolist()
        first_noisy = flags.index(True)
        assert all(flags[first_noisy:]) and not any(flags[:first_noisy])
        assert torch.all(lay.time[:, :first_noisy] == 1.0) and torch.all(lay.time[:, first_noisy:] == 0.5)


def test_mode_rules():
    with pytest.raises(ValueError, match="clean stream 'actions' after a noisy one"):
        Mode("bad", (("video_future", True), ("actions", False)))
    with pytest.raises(ValueError, match="unknown stream"):
        Mode("bad", (("audio", True),))  # type: ignore[arg-type]


# ---- learning and sampling ------------------------------------------------------------------
def _overfit(mode: str, steps: int, lr: float = 5e-3):
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
def test_overfit_inverse_dynamics_recovers_actions():
    m, b, _, actions, first, last = _overfit("inverse_dynamics", 400)
    assert last < first / 10, (first, last)
    out = m.generate("inverse_dynamics", b, steps=10, n_actions=8)
    err = float(((out["actions"] - actions) ** 2).mean())
    assert err < 0.05 * float(actions.var()), err


@pytest.mark.slow
def test_overfit_forward_dynamics_predicts_future_frames():
    m, b, video, _, first, last = _overfit("forward_dynamics", 600)
    assert last < first / 10, (first, last)
    pred = m.generate("forward_dynamics", b, steps=10, n_future_frames=2)["video"]
    err = float(((pred - video[:, 1:]) ** 2).mean())
    copy_last = float(((video[:, :1] - video[:, 1:]) ** 2).mean())
    assert err < copy_last / 2, (err, copy_last)


@pytest.mark.slow
def test_overfit_policy_co_generates_video_and_actions():
    m, b, video, actions, first, last = _overfit("policy", 600)
    assert last < first / 10, (first, last)
    out = m.generate("policy", b, steps=10, n_future_frames=2, n_actions=8, action_dim=10)
    assert float(((out["actions"] - actions) ** 2).mean()) < 0.1 * float(actions.var())


def test_generation_is_deterministic_under_a_seed_and_guidance_mixes():
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


# ---- encoders -------------------------------------------------------------------------------
def fit_autoencoder(ae: ConvVideoAE, video: torch.Tensor, steps: int = 100) -> tuple[float, float]:
    """Adam on the reconstruction loss of one batch; the loss before and after."""
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = float(ae.reconstruction_loss(video).detach())
    for _ in range(steps):
        loss = ae.reconstruction_loss(video)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, float(loss.detach())


def test_conv_autoencoder_shapes_and_frame_rule():
    torch.manual_seed(0)
    ae = ConvVideoAE(latent_channels=4, spatial_compression=4, temporal_compression=4, width=16)
    video, _ = square_clips(2, frames=9, side=8)
    z = ae.encode(video)
    assert z.shape == (2, 3, 4, 8, 8)
    assert ae.decode(z).shape == video.shape
    with pytest.raises(ValueError, match=r"8 frames do not fit the temporal compression 4; expected 1 \+ k \* 4"):
        ae.encode(video[:, :8])
    first, last = fit_autoencoder(ae, video)
    assert last < first / 2


def test_anchored_autoencoder_codes_later_frames_as_differences_from_the_first():
    torch.manual_seed(0)
    ae = ConvVideoAE(latent_channels=4, spatial_compression=4, temporal_compression=4, width=16, anchored=True)
    video = torch.rand(2, 9, 3, 16, 16) * 0.6 - 0.3
    z = ae.encode(video)
    assert z.shape == (2, 3, 4, 4, 4)
    # A brightness shift of the whole clip changes the first latent only: later groups see
    # differences from the first frame.
    z2 = ae.encode(video + 0.2)
    assert torch.allclose(z[:, 1:], z2[:, 1:], atol=1e-5) and not torch.allclose(z[:, :1], z2[:, :1])
    # Later frames are decoded onto the given anchor (the real first frame), else the decoded one.
    out = ae.decode(z, anchor=video[:, 0])
    moved = ae.decode(z, anchor=video[:, 0] + 0.05)
    inside = (out[:, 1:].abs() < 0.9) & (moved[:, 1:].abs() < 0.9)
    assert inside.float().mean() > 0.5
    assert torch.allclose((moved - out)[:, 1:][inside], torch.full_like(out[:, 1:][inside], 0.05), atol=1e-5)
    assert torch.equal(out[:, :1], moved[:, :1]) and torch.equal(ae.decode(z)[:, :1], out[:, :1])
    assert out.shape == video.shape and float(out.abs().max()) <= 1
    # The presets that deploy use it; a config saved before the field existed loads unanchored.
    assert preset("small").video_anchored and not preset("tiny").video_anchored
    from cosmos3_robot.model.config import Cosmos3Config

    old = {k: v for k, v in preset("small").to_dict().items() if k not in ("video_anchored", "video_gated")}
    assert not Cosmos3Config.from_dict(old).video_anchored


def test_action_loss_leaves_out_padded_dimensions_and_steps(monkeypatch):
    from cosmos3_robot.model import cosmos3 as cosmos3_module
    from cosmos3_robot.model.cosmos3 import masked_mean

    err = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    dims = torch.tensor([[True, True, False, False], [True, True, True, True]])
    steps = torch.tensor([[True, False, True], [False, False, True]])
    expect = torch.cat([err[0, [0, 2], :2].flatten(), err[1, 2].flatten()]).mean()
    assert torch.equal(masked_mean(err, dims, steps), expect)
    assert torch.equal(masked_mean(err, dims), torch.cat([err[0, :, :2].flatten(), err[1].flatten()]).mean())
    nothing = masked_mean(err.requires_grad_(), dims, torch.zeros(2, 3, dtype=torch.bool))
    assert float(nothing) == 0 and nothing.requires_grad  # a batch of padding only
    # The model hands WorldBatch.action_valid to that reduction.
    m = make_model(wake=True)
    seen = []
    monkeypatch.setattr(cosmos3_module, "masked_mean", lambda e, d, s=None: seen.append(s) or masked_mean(e, d, s))
    b = random_batch()
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[1, 6:] = False
    m.loss("policy_actions", WorldBatch(**{**b.__dict__, "action_valid": valid}))
    m.loss("policy_actions", b)
    assert torch.equal(seen[0], valid) and seen[1] is None
    with pytest.raises(ValueError, match=r"action_valid: expected \(2, 8\) bool"):
        m.loss("policy_actions", WorldBatch(**{**b.__dict__, "action_valid": valid[:, :4]}))


def test_state_input_conditions_the_actions_and_is_optional():
    """``state_input``: the proprioception reaches every action token through a zero-
    initialised per-domain projection; a sample without state (empty mask) is the same as
    no state at all."""
    b = random_batch()
    state = torch.randn(2, 10)
    plain = make_model(wake=True)
    m = make_model(state_input=True)
    assert float(m.state_in.w.abs().sum() + m.state_in.b.abs().sum()) == 0  # zero-initialised
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)  # the same weights otherwise
    assert sorted(missing) == ["state_in.b", "state_in.w"]

    def act(model, st, mask=None, seed=0):
        return model.generate("policy_actions", WorldBatch(**{**b.__dict__, "state": st, "state_mask": mask}),
                              steps=2, seed=seed, n_actions=8)["actions"]

    assert torch.equal(act(m, state), act(plain, None))  # zero-initialised: no effect until trained
    with torch.no_grad():
        m.state_in.w.normal_(std=0.3)
    with_state, other = act(m, state), act(m, state + 1.0)
    assert not torch.allclose(with_state, other, atol=1e-4)
    none = torch.zeros(2, 10, dtype=torch.bool)
    assert torch.equal(act(m, state, none), act(m, None))
    # one sample with state, one without: each as if alone
    mixed = none.clone()
    mixed[0] = True
    got = act(m, state, mixed)
    assert torch.allclose(got[0], with_state[0], atol=1e-5) and torch.allclose(got[1], act(m, None)[1], atol=1e-5)
    # the loss reads it too, and trains the projection
    m.loss("policy_actions", WorldBatch(**{**b.__dict__, "state": state}))[0].backward()
    assert m.state_in.w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"state: expected \(2, P\) normalised proprioception"):
        act(m, torch.randn(3, 10))
    with pytest.raises(ValueError, match="state: non-finite"):
        act(m, torch.full((2, 10), float("nan")))
    assert plain.state_in is None and preset("small").state_input and not preset("tiny").state_input


def test_spatial_softmax_gives_the_coordinates_of_a_peak():
    """Each channel's expected (x, y) in [-1, 1]: a sharp peak at column 6, row 1 of an 8 x 8
    map reads as its grid coordinates; a flat map reads as the centre."""
    from cosmos3_robot.model.keypoints import SpatialSoftmax

    sm = SpatialSoftmax()
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, 1, 6] = 50.0
    xy = sm(x)
    assert xy.shape == (1, 2, 2)
    assert torch.allclose(xy[0, 0], torch.tensor([-1 + 2 * 6 / 7, -1 + 2 * 1 / 7]), atol=1e-4)
    assert torch.allclose(xy[0, 1], torch.zeros(2), atol=1e-6)


def test_visual_keypoints_read_the_current_frame_into_the_actions():
    """``visual_keypoints``: the last context frame reaches every action token through the
    keypoint stem, zero-initialised (no effect until trained); afterwards the actions move
    with that frame, and the action loss trains the stem."""
    b = random_batch(frames=1)
    plain = make_model(wake=True)
    m = make_model(visual_keypoints=8)
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("keypoints.") for k in missing)

    def act(model, video, seed=0):
        return model.generate("policy_actions", WorldBatch(**{**b.__dict__, "video": video}),
                              steps=2, seed=seed, n_actions=8)["actions"]

    assert torch.equal(act(m, b.video), act(plain, b.video))
    with torch.no_grad():
        m.keypoints.out.weight.normal_(std=0.3)
    other = torch.roll(b.video, 1, 0)
    assert not torch.allclose(act(m, b.video), act(m, other), atol=1e-4)
    # only the stem's view changed: without it, the same swap moves the actions far less
    stem_change = (act(m, b.video) - act(m, other)).abs().mean()
    m.keypoints = None
    assert (act(m, b.video) - act(m, other)).abs().mean() < stem_change
    learner = make_model(wake=True, visual_keypoints=8)
    learner.loss("policy_actions", random_batch(frames=1))[0].backward()
    assert learner.keypoints.cameras[0].conv1.weight.grad.abs().sum() > 0
    assert learner.keypoints.out.weight.grad.abs().sum() > 0
    assert not preset("tiny").visual_keypoints


def test_observation_stem_reads_every_view_and_the_instruction():
    """With ``n_views`` 2 the stem reads ``WorldBatch.views`` ``(B, 2, 3, S, S)``: changing
    either camera's frame, or only the instruction (FiLM on the convs), changes its
    keypoints; a batch without views, or with the wrong number, is refused by name."""
    torch.manual_seed(0)
    m = make_model(visual_keypoints=4, n_views=2, action_prior=True).eval()
    b = random_batch(frames=1)
    B, S = b.batch_size, m.config.image_size
    views = torch.rand(B, 2, 3, S, S) * 2 - 1

    def feats(v, text=None):
        batch = WorldBatch(**{**b.__dict__, "views": v, "text": text or b.text})
        return m.keypoints(m._views(batch, B), list(batch.text))[0]

    base = feats(views)
    assert base.shape == (B, m.keypoints.features) == (B, 64 + 2 * 4 * 2)
    for cam in (0, 1):
        other = views.clone()
        other[:, cam] = torch.roll(views[:, cam], 1, 0)
        changed = (feats(other) - base).abs().amax(1)
        assert bool((changed > 1e-6).all()), f"camera {cam} does not reach the stem"
    kp = slice(64, None)  # the keypoints, after the text vector
    assert not torch.allclose(feats(views, ["reach the blue target"] * B)[:, kp], base[:, kp], atol=1e-6)
    with pytest.raises(ValueError, match=r"views: a model with visual_keypoints reads 2"):
        m.generate("policy_actions", b, steps=0, n_actions=8)
    with pytest.raises(ValueError, match=r"views: expected \(\d+, 2, 3"):
        m.generate("policy_actions", WorldBatch(**{**b.__dict__, "views": views[:, :1]}), steps=0, n_actions=8)
    out = m.generate("policy_actions", WorldBatch(**{**b.__dict__, "views": views}), steps=0, n_actions=8)
    assert out["actions"].shape[:2] == (B, 8)


def test_action_prior_is_where_the_flow_starts_and_learns_by_regression():
    """``action_prior``: an untrained generator outputs zero velocity, so a sample is exactly
    its starting point: ``prior + temperature * noise``. The prior starts at zero (the
    same samples as without it), is trained by regression to the clean chunk, and pinned
    action prefixes stay exact with it."""
    b = random_batch(D=10)
    state = torch.randn(2, 10)
    plain = make_model(state_input=True)
    m = make_model(state_input=True, action_prior=True)
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("prior_") for k in missing)
    req = WorldBatch(**{**b.__dict__, "video": b.video[:, :1], "actions": None, "state": state})

    def act(model, temperature=1.0, steps=3, **kw):
        return model.generate("policy_actions", req, steps=steps, seed=5, n_actions=8, action_dim=10,
                              temperature=temperature, **kw)["actions"]

    noise = act(plain)
    assert torch.equal(act(m), noise)  # zero prior, zero velocity: the noise itself
    assert torch.equal(act(m, 0.0), torch.zeros(2, 8, 10))
    assert torch.allclose(act(plain, 0.5), 0.5 * noise)
    with torch.no_grad():
        m.state_in.w.normal_(std=0.3)
        m.prior_head[-1].weight.normal_(std=0.1)
        m.prior_bias[m.config.action_domains.index("single_arm")] += 0.25
    domain = m.domain_ids(b.embodiment, 2)
    mu = m.action_prior_mean(m._action_side(req, 2, domain)[1], domain, 8, torch.ones(2, 64, dtype=torch.bool))
    assert mu.abs().mean() > 0.1
    assert torch.allclose(act(m, 0.0), mu[..., :10], atol=1e-6)
    assert torch.allclose(act(m), mu[..., :10] + noise, atol=1e-5)
    prefix = torch.randn(2, 3, 10)
    assert torch.allclose(act(m, action_prefix=prefix)[:, :3], prefix, atol=1e-5)
    # steps=0: the starting point without the towers (the prior's chunk at temperature 0),
    # the same noise as the sampler's; a pinned prefix stays in place
    assert torch.allclose(act(m, 0.0, steps=0), mu[..., :10], atol=1e-6)
    assert torch.allclose(act(m, steps=0), mu[..., :10] + noise, atol=1e-5)
    pinned = act(m, 0.0, steps=0, action_prefix=prefix)
    assert torch.equal(pinned[:, :3], prefix) and torch.allclose(pinned[:, 3:], mu[:, 3:, :10], atol=1e-6)
    with pytest.raises(ValueError, match="steps: 0 returns a prior's output"):
        act(plain, steps=0)
    with pytest.raises(ValueError, match="steps: 0 returns a prior's output"):
        m.generate("policy", WorldBatch(**{**req.__dict__, "state": state}), steps=0, n_actions=8,
                   action_dim=10, n_future_frames=2)
    # regression: the prior's loss is reported and trains its head on the observation
    loss, parts = m.loss("policy_actions", WorldBatch(**{**b.__dict__, "state": state}))
    assert parts["action_prior"] > 0
    loss.backward()
    assert m.prior_head[0].weight.grad.abs().sum() > 0 and m.prior_head[-1].weight.grad.abs().sum() > 0
    # the same regression alone (prior pretraining): the reported part, and only the prior's
    # parameters get a gradient (the towers never run)
    m.zero_grad(set_to_none=True)
    alone = m.prior_loss(WorldBatch(**{**b.__dict__, "state": state}))
    assert alone.item() == pytest.approx(parts["action_prior"], rel=1e-5)
    alone.backward()
    prior_ids = {id(p) for p in m.prior_parameters()}
    assert {id(p) for p in m.parameters() if p.grad is not None} <= prior_ids
    assert m.prior_bias.grad.abs().sum() > 0 and m.prior_head[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prior_loss: the model has no prior"):
        plain.prior_loss(b)
    with pytest.raises(ValueError, match=r"temperature: expected a number in \[0, 1\]"):
        act(m, 1.5)
    assert not preset("tiny").action_prior


def test_prior_noise_scales_the_start_the_velocity_and_the_loss():
    """``flow.prior_noise`` (sigma): a sample starts at ``prior + temperature * sigma * noise``,
    the action velocity is the head's output times sigma (one Euler step from the prior moves
    sigma times as far as with unit noise), and the action loss is the velocity error in
    units of sigma: with a zero head and prior, ``mean((a / sigma - n)^2)``."""
    b = random_batch(D=10)
    state = torch.randn(2, 10)
    req = WorldBatch(**{**b.__dict__, "video": b.video[:, :1], "actions": None, "state": state})
    sigma = 0.25

    def act(model, temperature, steps=1):
        return model.generate("policy_actions", req, steps=steps, seed=5, n_actions=8, action_dim=10,
                              temperature=temperature)["actions"]

    # untrained (zero velocity, zero prior): the scaled noise itself
    unit, small = make_model(state_input=True, action_prior=True), make_model(
        state_input=True, action_prior=True, flow={"prior_noise": sigma})
    assert torch.allclose(act(small, 1.0), sigma * act(unit, 1.0), atol=1e-6)
    # the loss is measured in units of sigma: with a zero head and zero prior the velocity
    # error is (a - sigma n) / sigma; a zero-action batch gives mean(n^2) and the identity
    # below recovers mean(a n) from the unit-noise model
    full = WorldBatch(**{**b.__dict__, "state": state})
    zero = WorldBatch(**{**full.__dict__, "actions": torch.zeros_like(b.actions[..., :10])})
    full = WorldBatch(**{**full.__dict__, "actions": b.actions[..., :10]})

    def action_loss(model, batch):
        return model.loss("policy_actions", batch, torch.Generator().manual_seed(3))[1]["actions"]

    n2, a2 = action_loss(unit, zero), float((full.actions ** 2).mean())
    an = (a2 + n2 - action_loss(unit, full)) / 2
    assert action_loss(small, zero) == pytest.approx(n2, rel=1e-5)
    assert action_loss(small, full) == pytest.approx((a2 - 2 * sigma * an + sigma ** 2 * n2) / sigma ** 2, rel=1e-4)
    # a trained-looking model: the same weights, one Euler step from the prior at temperature 0
    unit, small = make_model(wake=True, state_input=True, action_prior=True), make_model(
        wake=True, state_input=True, action_prior=True, flow={"prior_noise": sigma})
    domain = unit.domain_ids(b.embodiment, 2)
    mu = unit.action_prior_mean(unit._action_side(req, 2, domain)[1], domain, 8,
                                torch.ones(2, 64, dtype=torch.bool))[..., :10]
    step_unit, step_small = act(unit, 0.0) - mu, act(small, 0.0) - mu
    assert step_unit.abs().mean() > 1e-3
    assert torch.allclose(step_small, sigma * step_unit, atol=1e-5)
    assert torch.allclose(act(small, 0.0, steps=0), mu, atol=1e-6)  # the towers do not run
    with pytest.raises(ValueError, match=r"flow.prior_noise must be in \(0, 1\]"):
        preset("tiny", flow={"prior_noise": 0.0})


def test_video_prior_is_where_forward_dynamics_starts_and_learns_by_regression():
    """``video_prior``: an untrained prior (nearly) copies the current frame; ``steps=0``
    returns its frames without the towers; with steps forward dynamics starts at its
    frames' latents ``+ temperature * prior_noise * noise`` (an untrained video head has
    zero velocity, so a sample is that start decoded); its regression loss appears in
    every mode that holds the clip and its actions, and only forward dynamics starts from it."""
    sigma = 0.5
    b = random_batch(D=10)
    plain = make_model()
    m = make_model(video_prior=True, flow={"prior_noise": sigma})
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("video_prior.") for k in missing)

    def fd(model, temperature=1.0, steps=3):
        return model.generate("forward_dynamics", b, steps=steps, seed=4, n_future_frames=2,
                              temperature=temperature)["video"]

    now = b.video[:, :1]
    assert (fd(m, steps=0) - now).abs().max() < 0.02  # the gate starts (nearly) shut
    with torch.no_grad():  # a prior that predicts something
        m.video_prior.out.weight.normal_(std=0.05)
        m.video_prior.out.bias[:2].normal_(std=0.2)
    prior_video = m.video_prior_frames(b, 2)
    assert prior_video.shape == (2, 2, 3, 32, 32) and (prior_video - now).abs().mean() > 0.05
    assert torch.equal(fd(m, steps=0), prior_video)  # the towers do not run; no noise either
    assert torch.equal(fd(m, 0.0, steps=0), prior_video)
    # raw patches: the latents are the pixels, so the sampler starts at the prior's frames
    assert torch.allclose(fd(m, 0.0), prior_video, atol=1e-6)
    noise = fd(plain)  # raw patches, zero velocity: a sample of the plain model is its noise
    assert torch.allclose(fd(m) - prior_video, sigma * noise, atol=1e-5)
    with pytest.raises(ValueError, match="steps: 0 returns a prior's output"):
        fd(plain, steps=0)
    # policy co-generation has noisy actions: its video starts from unit noise as before
    pol = {"steps": 2, "seed": 4, "n_future_frames": 2, "n_actions": 8}
    assert torch.allclose(m.generate("policy", b, **pol)["video"], plain.generate("policy", b, **pol)["video"])
    # regression: a part of every mode that holds the clip and its actions, and it trains the
    # prior on both its inputs
    for name, has in (("forward_dynamics", True), ("inverse_dynamics", True), ("policy", True),
                      ("policy_actions", False), ("image_to_video", False)):
        _, parts = m.loss(name, b, torch.Generator().manual_seed(1))
        assert ("video_prior" in parts) == has, name
    m.zero_grad(set_to_none=True)
    loss, parts = m.loss("inverse_dynamics", b)
    loss.backward()
    vp = m.video_prior
    assert vp.down[0].weight.grad.abs().sum() > 0 and vp.action_in[0].weight.grad.abs().sum() > 0
    assert vp.relative_in[0].weight.grad.abs().sum() > 0
    # prior pretraining: the regression alone, on the first windows when asked; a clip
    # without future frames has nothing for it
    assert m.prior_loss(b).item() == pytest.approx(m.video_prior_loss(b).item(), rel=1e-6)
    assert m.prior_loss(b, 1).item() == pytest.approx(m.video_prior_loss(b.head(1)).item(), rel=1e-6)
    assert m.prior_loss(b, 1).item() != pytest.approx(m.prior_loss(b).item(), rel=1e-6)
    with pytest.raises(ValueError, match="the video prior needs clips with context and future frames"):
        m.prior_loss(WorldBatch(**{**b.__dict__, "video": b.video[:, :1]}))
    with pytest.raises(ValueError, match="video_prior_batch_size"):
        m.prior_phase(0)
    assert not preset("tiny").video_prior


def test_video_prior_checks_its_inputs_and_scores_frames_in_decibels():
    """The prior names the tensor and the shape it expects; its loss is the negative PSNR
    of each frame averaged in dB, so halving one frame's error gains 10 log10(2) / F."""
    from cosmos3_robot.model.video_prior import VideoPrior, frame_log_error

    vp = VideoPrior(max_actions=8, max_action_width=4, n_domains=2)
    f, a, st, d = torch.zeros(1, 3, 16, 16), torch.zeros(1, 8, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)
    assert vp(f, a, st, d, 3).shape == (1, 3, 3, 16, 16)
    for args, match in (((torch.zeros(1, 3, 18, 16), a, st, d, 1), "divisible by 4"),
                        ((f, torch.zeros(1, 9, 4), st, d, 1), r"actions \(B, T<=8, 4\)"),
                        ((f, a, torch.zeros(1, 5), d, 1), r"state \(1, 4\)"),
                        ((f, a, st, d, 0), "n_frames must be >= 1")):
        with pytest.raises(ValueError, match=match):
            vp(*args)
    target = torch.zeros(1, 2, 3, 4, 4)
    pred = torch.full_like(target, 0.5)
    better = pred.clone()
    better[:, 0] *= 2 ** -0.5  # frame 0's MSE halves
    gain = float(frame_log_error(pred, target) - frame_log_error(better, target))
    assert gain == pytest.approx(10 * math.log10(2) / 2, rel=1e-3)


def test_video_prior_forward_dynamics_loss_is_in_units_of_the_prior_noise():
    """With a zero prior and a zero video head, the forward-dynamics video loss is
    ``mean((x / sigma - n)^2)``: the unit-noise model's ``mean((x - n)^2)`` rescaled, the
    same units rule as the action flow's."""
    sigma = 0.25
    b = random_batch(D=10)
    unit = make_model(video_prior=True)
    small = make_model(video_prior=True, flow={"prior_noise": sigma})
    with torch.no_grad():  # the gate fully open onto a zero colour: a prior of zero frames
        for model in (unit, small):
            model.video_prior.out.bias[2] = 50.0
    zero = WorldBatch(**{**b.__dict__, "video": torch.zeros_like(b.video)})

    def video_loss(model, batch):
        return model.loss("forward_dynamics", batch, torch.Generator().manual_seed(3))[1]["video_future"]

    n2 = video_loss(unit, zero)  # mean(n^2)
    x2 = float((b.video[:, 1:] ** 2).mean())
    xn = (x2 + n2 - video_loss(unit, b)) / 2
    assert video_loss(small, zero) == pytest.approx(n2, rel=1e-5)
    assert video_loss(small, b) == pytest.approx((x2 - 2 * sigma * xn + sigma ** 2 * n2) / sigma ** 2, rel=1e-4)


@pytest.mark.slow
def test_video_prior_learns_motion_from_actions():
    """Trained by :meth:`~Cosmos3.encoder_loss` alone on squares that move by their actions,
    the prior's forward dynamics (``steps=0``) beats copying the last frame, and only the
    prior's parameters learn (a raw-pixel model has no encoder weights)."""
    video, actions = square_clips(4, frames=2)
    b = WorldBatch(text=["move"] * 4, embodiment=["single_arm"] * 4, video=video, n_context_frames=1,
                   actions=actions, fps=15.0, control_hz=15.0)
    m = make_model(video_prior=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW(m.video_prior.parameters(), lr=3e-3, weight_decay=0)
    first = float(m.encoder_loss(b))
    for _ in range(150):
        loss = m.encoder_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first - 5.0  # dB
    pred = m.generate("forward_dynamics", b, steps=0, n_future_frames=1)["video"]
    mse_model = float(((pred - video[:, 1:]) ** 2).mean())
    mse_copy = float(((video[:, :1] - video[:, 1:]) ** 2).mean())
    assert mse_model < 0.3 * mse_copy
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("video_prior.") for k in changed)


def test_encoder_loss_adds_the_video_prior():
    """``encoder_loss``: the conv autoencoder's reconstruction loss plus the prior's weighted
    regression; the prior reads pixels, so the encoder's gradient is the reconstruction's
    alone."""
    b = random_batch(frames=5, D=10)
    kw = {"video_encoder": "conv_ae", "latent_channels": 4, "spatial_compression": 4, "temporal_compression": 4,
          "dm_patch": 2, "video_anchored": True, "video_gated": True}
    plain, m = make_model(**kw), make_model(video_prior=True, **kw)
    m.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():  # a prior whose output reads its inputs
        m.video_prior.out.weight.normal_(std=0.05)
    recon = plain.video_encoder.reconstruction_loss(b.video)
    assert float(plain.encoder_loss(b)) == pytest.approx(float(recon), rel=1e-6)
    total = m.encoder_loss(b)
    w = m.config.flow.prior_loss_weight
    assert float(total) == pytest.approx(float(recon) + w * float(m.video_prior_loss(b)), rel=1e-5)
    total.backward()
    recon.backward()
    for (name, p), q in zip(m.video_encoder.named_parameters(), plain.video_encoder.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert m.video_prior.down[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="video: the encoder's pretraining needs video"):
        m.encoder_loss(WorldBatch(**{**b.__dict__, "video": None}))


def test_shared_instruction_prefix_equals_one_pass_per_sample():
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


def test_reconstruction_on_a_sub_batch_keeps_every_clips_latents():
    """``recon_samples``: the autoencoder trains on the first clips only, and the flow still
    sees every clip's latents (the same as encoding the whole batch)."""
    cfg = preset("tiny", video_encoder="conv_ae", latent_channels=4, spatial_compression=4,
                 temporal_compression=4, dm_patch=2, flow={"recon_samples": 2})
    torch.manual_seed(0)
    m = Cosmos3(cfg).train()
    b = random_batch(B=5, frames=9)
    b.n_context_frames = 5
    lat, _, recon = m._split_video(b, 5)
    with torch.no_grad():
        assert torch.allclose(lat, m.video_encoder.encode(b.video), atol=1e-5)
        expect = m.video_encoder.reconstruction_loss(b.video[:2])
    assert torch.allclose(recon, expect, atol=1e-6) and recon.requires_grad and not lat.requires_grad
    full = Cosmos3(cfg.replace(flow={"recon_samples": 0}))
    full.load_state_dict(m.state_dict())
    _, _, recon_all = full.train()._split_video(b, 5)
    assert torch.allclose(recon_all, m.video_encoder.reconstruction_loss(b.video), atol=1e-6)


def test_gated_autoencoder_copies_the_anchor_until_trained_and_learns_motion():
    torch.manual_seed(0)
    ae = ConvVideoAE(latent_channels=4, spatial_compression=4, temporal_compression=4, width=16, anchored=True,
                     gated=True)
    video, _ = square_clips(2, frames=9, side=8)
    out = ae.decode(ae.encode(video), anchor=video[:, 0])
    # Nearly shut gates: later frames are the anchor to within the gate's opening (< 2%
    # of the largest difference, 2), static background included.
    assert (out[:, 1:] - video[:, :1]).abs().max() < 0.04
    first, last = fit_autoencoder(ae, video)
    assert last < first / 2  # the gates opened where the square moved
    with pytest.raises(ValueError, match="gated needs anchored"):
        ConvVideoAE(anchored=False, gated=True)
    from cosmos3_robot.model.config import Cosmos3Config

    assert preset("small").video_gated and preset("compact").video_gated
    old = {k: v for k, v in preset("small").to_dict().items() if k != "video_gated"}
    assert not Cosmos3Config.from_dict(old).video_gated  # checkpoints from before load ungated
    with pytest.raises(ValueError, match="video_gated needs video_anchored"):
        preset("small", video_anchored=False)


def test_model_with_conv_ae_and_external_vae_adapter():
    cfg = preset("tiny", video_encoder="conv_ae", latent_channels=4, spatial_compression=4,
                 temporal_compression=4, dm_patch=2)
    m = Cosmos3(cfg)
    b = random_batch(frames=9)
    b.n_context_frames = 5
    _, parts = m.loss("policy", b)
    assert set(parts) == {"video_future", "actions", "video_recon"}  # the trainable AE learns by reconstruction
    # Flow gradients do not reach the encoder (it would collapse the latents); only the
    # reconstruction term trains it.
    m_flow_only = Cosmos3(cfg.replace(flow={"recon_loss_weight": 0.0}))
    m_flow_only.loss("forward_dynamics", b)[0].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m_flow_only.video_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m_flow_only.video_out.parameters())
    m.loss("forward_dynamics", b)[0].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.video_encoder.parameters())
    m.eval()
    _, eval_parts = m.loss("forward_dynamics", b)
    assert "video_recon" not in eval_parts
    m.train()
    out = m.generate("forward_dynamics", b, steps=2, n_future_frames=4)
    assert out["video"].shape == (2, 4, 3, 32, 32)
    with pytest.raises(ValueError, match="video context: 2 frames do not fit the temporal compression 4"):
        m.loss("policy", WorldBatch(**{**b.__dict__, "n_context_frames": 2}))

    class DiffusersStyleVAE(torch.nn.Module):
        """The interface of a diffusers video VAE: (B, C, F, H, W), .latent_dist / .sample."""

        def __init__(self, ae):
            super().__init__()
            self.ae = ae

        def encode(self, x):
            z = self.ae.encode(x.transpose(1, 2)).transpose(1, 2)
            return type("Out", (), {"latent_dist": type("Dist", (), {"mean": z})()})()

        def decode(self, z):
            return type("Out", (), {"sample": self.ae.decode(z.transpose(1, 2)).transpose(1, 2)})()

    ext = ExternalVAE(DiffusersStyleVAE(m.video_encoder), 4, 4, 4, scaling_factor=0.5, shift_factor=0.1)
    m_ext = Cosmos3(cfg.replace(video_encoder="external"), video_encoder=ext)
    z = ext.encode(b.video)
    assert torch.allclose(z, (m.video_encoder.encode(b.video) - 0.1) * 0.5, atol=1e-6)
    assert not any(p.requires_grad for p in ext.parameters())
    assert set(m_ext.loss("policy", b)[1]) == {"video_future", "actions"}


# ---- checkpoints ------------------------------------------------------------------------------
def test_save_load_round_trip_and_config_mismatch(tmp_path):
    m = make_model(wake=True)
    path = save_model(m, tmp_path / "model.safetensors")
    m2 = load_model(path)
    b = random_batch()
    kw = dict(steps=2, n_actions=8, action_dim=19, seed=1)
    assert torch.equal(m.generate("policy_actions", b, **kw)["actions"], m2.generate("policy_actions", b, **kw)["actions"])
    with pytest.raises(ValueError, match=r"does not match the requested one:\n  dim: checkpoint 64 vs requested 96"):
        load_model(path, preset("tiny", dim=96))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        load_model(tmp_path / "junk.safetensors")


# ---- bad input --------------------------------------------------------------------------------
def test_bad_inputs_have_clear_errors():
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


# ---- precision / devices -------------------------------------------------------------------
def test_bf16_autocast_on_cpu():
    """The bf16 path (as used on CUDA) runs: losses finite, generation finite."""
    m = make_model(wake=True)
    b = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = m.loss("policy", b)
        out = m.generate("policy", b, steps=2, n_future_frames=2, n_actions=8)
    assert torch.isfinite(loss) and all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_bf16_matches_cpu_float32():
    m = make_model(wake=True)
    b = random_batch()
    kw = dict(steps=4, n_actions=8, action_dim=19, seed=0)
    ref = m.generate("policy_actions", b, **kw)["actions"]
    m_gpu = m.to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m_gpu.generate("policy_actions", b, **kw)["actions"].float().cpu()
    assert (out - ref).abs().max() < 0.1


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


def test_keypoint_film_on_two_layers_conditions_the_second_conv():
    """``keypoint_film_layers`` 2: the instruction also scales and shifts the second conv
    layer (its own FiLM projection, trained by the action loss); 1 (the default) keeps the
    stem, and so older checkpoints, as they were; other values are refused by name."""
    from cosmos3_robot.model.keypoints import CameraStem

    one = make_model(visual_keypoints=4, n_views=2, action_prior=True)
    two = make_model(visual_keypoints=4, n_views=2, action_prior=True, keypoint_film_layers=2)
    assert one.keypoints.cameras[0].film2 is None
    missing, unexpected = two.load_state_dict(one.state_dict(), strict=False)
    assert not unexpected and missing and all(".film2." in k for k in missing)
    stem = CameraStem(4, 8, width=8, film_layers=2)
    x, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 8)
    seen = {}
    stem.conv3.register_forward_hook(lambda mod, inp, out: seen.setdefault("conv3_in", inp[0]))
    stem(x, t)
    first = seen.pop("conv3_in")
    stem(x, t.flip(0))
    assert not torch.allclose(seen["conv3_in"], first)  # the text reaches the layer before conv3
    stem(x, t)[0].sum().backward()
    assert stem.film2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="keypoint_film_layers"):
        make_model(visual_keypoints=4, keypoint_film_layers=3)
