"""The priors: the action prior (where the action flow starts, learnt by regression, its
noise scale) and the pixel-space video prior of forward dynamics. CPU, tiny preset."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos3_robot.model import WorldBatch, preset


def test_action_prior_is_where_the_flow_starts_and_learns_by_regression(make_model, random_batch):
    """``action_prior``: an untrained generator outputs zero velocity, so a sample is exactly
    its starting point: ``prior + temperature * noise``. The prior starts at zero (the
    same samples as without it), is trained by regression to the clean chunk, and pinned
    action prefixes stay exact with it."""
    b = random_batch(D=10)
    state = torch.randn(2, 10)
    plain = make_model(state_input=True)
    m = make_model(state_input=True, action_prior=True)
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("parts.action_prior.") for k in missing)
    req = WorldBatch(**{**b.__dict__, "video": b.video[:, :1], "actions": None, "state": state})

    def act(model, temperature=1.0, steps=3, **kw):
        return model.generate("policy_actions", req, steps=steps, seed=5, n_actions=8, action_dim=10,
                              temperature=temperature, **kw)["actions"]

    noise = act(plain)
    assert torch.equal(act(m), noise)  # zero prior, zero velocity: the noise itself
    assert torch.equal(act(m, 0.0), torch.zeros(2, 8, 10))
    assert torch.allclose(act(plain, 0.5), 0.5 * noise)
    with torch.no_grad():
        m.parts.state.proj.w.normal_(std=0.3)
        m.parts.action_prior.head[-1].weight.normal_(std=0.1)
        m.parts.action_prior.bias[m.config.action_domains.index("single_arm")] += 0.25
    domain = m.domain_ids(b.embodiment, 2)
    mu = m.action_prior_mean(m.observe(req, 2, domain)[1], domain, 8, torch.ones(2, 64, dtype=torch.bool))
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
    assert m.parts.action_prior.head[0].weight.grad.abs().sum() > 0 and m.parts.action_prior.head[-1].weight.grad.abs().sum() > 0
    # the same regression alone (prior pretraining): the reported part, and only the prior's
    # parameters get a gradient (the towers never run)
    m.zero_grad(set_to_none=True)
    alone = m.prior_loss(WorldBatch(**{**b.__dict__, "state": state}))
    assert alone.item() == pytest.approx(parts["action_prior"], rel=1e-5)
    alone.backward()
    prior_ids = {id(p) for p in m.prior_parameters()}
    assert {id(p) for p in m.parameters() if p.grad is not None} <= prior_ids
    assert m.parts.action_prior.bias.grad.abs().sum() > 0 and m.parts.action_prior.head[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="prior_loss: the model has no prior"):
        plain.prior_loss(b)
    with pytest.raises(ValueError, match=r"temperature: expected a number in \[0, 1\]"):
        act(m, 1.5)
    assert not preset("tiny").action_prior


def test_prior_noise_scales_the_start_the_velocity_and_the_loss(make_model, random_batch):
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
    mu = unit.action_prior_mean(unit.observe(req, 2, domain)[1], domain, 8,
                                torch.ones(2, 64, dtype=torch.bool))[..., :10]
    step_unit, step_small = act(unit, 0.0) - mu, act(small, 0.0) - mu
    assert step_unit.abs().mean() > 1e-3
    assert torch.allclose(step_small, sigma * step_unit, atol=1e-5)
    assert torch.allclose(act(small, 0.0, steps=0), mu, atol=1e-6)  # the towers do not run
    with pytest.raises(ValueError, match=r"flow.prior_noise must be in \(0, 1\]"):
        preset("tiny", flow={"prior_noise": 0.0})


def test_relative_to_prior_the_towers_read_the_chunk_as_its_offset_from_the_prior(make_model, random_batch):
    """``flow.relative_to_prior``: the towers read ``x_t - prior``. Moving the prior's chunk
    and the data by the same offset then leaves every loss as it was and moves every sample
    by that offset, at any temperature; a model that reads the chunk itself does neither."""
    b = random_batch(D=10)
    state = torch.randn(2, 10)
    offset = 0.7 * torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
    req = WorldBatch(**{**b.__dict__, "video": b.video[:, :1], "actions": None, "state": state})
    data = WorldBatch(**{**b.__dict__, "state": state, "actions": b.actions[..., :10]})
    shifted = WorldBatch(**{**data.__dict__, "actions": data.actions + offset})

    def act(model, temperature):
        return model.generate("policy_actions", req, steps=3, seed=5, n_actions=8, action_dim=10,
                              temperature=temperature)["actions"]

    def losses(model, batch):
        return model.loss("policy_actions", batch, torch.Generator().manual_seed(3))[1]

    for relative in (True, False):
        m = make_model(wake=True, state_input=True, action_prior=True, flow={"relative_to_prior": relative})
        moved = make_model(wake=True, state_input=True, action_prior=True, flow={"relative_to_prior": relative})
        moved.load_state_dict(m.state_dict())
        with torch.no_grad():
            moved.parts.action_prior.bias[m.config.action_domains.index("single_arm"), :8, :10] += offset
        base, after = losses(m, data), losses(moved, shifted)
        assert after["action_prior"] == pytest.approx(base["action_prior"], rel=1e-5)
        gaps = [float((act(moved, t) - act(m, t) - offset).abs().max()) for t in (0.0, 1.0)]
        if relative:
            assert after["actions"] == pytest.approx(base["actions"], rel=1e-4)
            assert max(gaps) < 1e-4
        else:
            assert abs(after["actions"] - base["actions"]) > 1e-3 * base["actions"]
            assert min(gaps) > 1e-3


def test_video_prior_is_where_forward_dynamics_starts_and_learns_by_regression(make_model, random_batch):
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
    assert missing and all(k.startswith("parts.video_prior.") for k in missing)

    def fd(model, temperature=1.0, steps=3):
        return model.generate("forward_dynamics", b, steps=steps, seed=4, n_future_frames=2,
                              temperature=temperature)["video"]

    now = b.video[:, :1]
    assert (fd(m, steps=0) - now).abs().max() < 0.02  # the gate starts (nearly) shut
    with torch.no_grad():  # a prior that predicts something
        m.parts.video_prior.net.out.weight.normal_(std=0.05)
        m.parts.video_prior.net.out.bias[:2].normal_(std=0.2)
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
    vp = m.parts.video_prior.net
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


def test_video_prior_forward_dynamics_loss_is_in_units_of_the_prior_noise(make_model, random_batch):
    """With a zero prior and a zero video head, the forward-dynamics video loss is
    ``mean((x / sigma - n)^2)``: the unit-noise model's ``mean((x - n)^2)`` rescaled, the
    same units rule as the action flow's."""
    sigma = 0.25
    b = random_batch(D=10)
    unit = make_model(video_prior=True)
    small = make_model(video_prior=True, flow={"prior_noise": sigma})
    with torch.no_grad():  # the gate fully open onto a zero colour: a prior of zero frames
        for model in (unit, small):
            model.parts.video_prior.net.out.bias[2] = 50.0
    zero = WorldBatch(**{**b.__dict__, "video": torch.zeros_like(b.video)})

    def video_loss(model, batch):
        return model.loss("forward_dynamics", batch, torch.Generator().manual_seed(3))[1]["video_future"]

    n2 = video_loss(unit, zero)  # mean(n^2)
    x2 = float((b.video[:, 1:] ** 2).mean())
    xn = (x2 + n2 - video_loss(unit, b)) / 2
    assert video_loss(small, zero) == pytest.approx(n2, rel=1e-5)
    assert video_loss(small, b) == pytest.approx((x2 - 2 * sigma * xn + sigma ** 2 * n2) / sigma ** 2, rel=1e-4)


@pytest.mark.slow
def test_video_prior_learns_motion_from_actions(make_model, square_clips):
    """Trained by :meth:`~Cosmos3.encoder_loss` alone on squares that move by their actions,
    the prior's forward dynamics (``steps=0``) beats copying the last frame, and only the
    prior's parameters learn (a raw-pixel model has no encoder weights)."""
    video, actions = square_clips(4, frames=2)
    b = WorldBatch(text=["move"] * 4, embodiment=["single_arm"] * 4, video=video, n_context_frames=1,
                   actions=actions, fps=15.0, control_hz=15.0)
    m = make_model(video_prior=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW(m.parts.video_prior.net.parameters(), lr=3e-3, weight_decay=0)
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
    assert changed and all(k.startswith("parts.video_prior.") for k in changed)


def test_encoder_loss_adds_the_video_prior(make_model, random_batch):
    """``encoder_loss``: the conv autoencoder's reconstruction loss plus the prior's weighted
    regression; the prior reads pixels, so the encoder's gradient is the reconstruction's
    alone."""
    b = random_batch(frames=5, D=10)
    kw = {"video_encoder": "conv_ae", "latent_channels": 4, "spatial_compression": 4, "temporal_compression": 4,
          "dm_patch": 2, "video_anchored": True, "video_gated": True}
    plain, m = make_model(**kw), make_model(video_prior=True, **kw)
    m.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():  # a prior whose output reads its inputs
        m.parts.video_prior.net.out.weight.normal_(std=0.05)
    recon = plain.video_encoder.reconstruction_loss(b.video)
    assert float(plain.encoder_loss(b)) == pytest.approx(float(recon), rel=1e-6)
    total = m.encoder_loss(b)
    w = m.config.flow.prior_loss_weight
    assert float(total) == pytest.approx(float(recon) + w * float(m.video_prior_loss(b)), rel=1e-5)
    total.backward()
    recon.backward()
    for (name, p), q in zip(m.video_encoder.named_parameters(), plain.video_encoder.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert m.parts.video_prior.net.down[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="video: the encoder's pretraining needs video"):
        m.encoder_loss(WorldBatch(**{**b.__dict__, "video": None}))
