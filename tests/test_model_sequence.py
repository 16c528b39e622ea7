"""The compact MoT's sequence: the attention wall between AR and DM tokens, block-causal
caching, fused and grouped kernels equal to the plain ones, FPS-modulated mRoPE timing,
layouts and the tokens the loss covers. CPU, tiny preset."""

from __future__ import annotations


import pytest
import torch

from cosmos3_robot.model import MODES, Mode, WorldBatch
from cosmos3_robot.model import rope
from cosmos3_robot.model.mot import PrefixCache


def test_ar_outputs_do_not_depend_on_dm_tokens(make_model, random_batch):
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
def test_block_causal_clean_tokens_ignore_noisy_targets(make_model, block_causal):
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


def test_block_causal_cached_generation_equals_recomputation(make_model, random_batch):
    m = make_model(wake=True, block_causal=True)
    m.eval()
    b = random_batch()
    for mode in ("policy", "inverse_dynamics", "forward_dynamics"):
        kw = dict(steps=3, n_future_frames=2, n_actions=8, seed=3)
        fast = m.generate(mode, b, **kw)
        slow = m.generate(mode, b, plain=True, **kw)
        for k in fast:
            assert torch.allclose(fast[k].float(), slow[k].float(), atol=1e-5), (mode, k)


def test_grouped_modulation_equals_per_token_modulation(make_model):
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


@pytest.mark.parametrize("name", sorted(MODES))
def test_layout_clean_before_noisy_and_loss_covers_exactly_noisy(make_model, random_batch, name):
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


def test_action_loss_leaves_out_padded_dimensions_and_steps(make_model, random_batch, monkeypatch):
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
