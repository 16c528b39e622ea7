"""What the action side reads besides the video: proprioception (``state_input``) and the
instruction-conditioned keypoint stem over every camera. CPU, tiny preset."""

from __future__ import annotations


import pytest
import torch

from cosmos3_robot.model import WorldBatch, preset


def test_state_input_conditions_the_actions_and_is_optional(make_model, random_batch):
    """``state_input``: the proprioception reaches every action token through a zero-
    initialised per-domain projection; a sample without state (empty mask) is the same as
    no state at all."""
    b = random_batch()
    state = torch.randn(2, 10)
    plain = make_model(wake=True)
    m = make_model(state_input=True)
    assert float(m.parts.state.proj.w.abs().sum() + m.parts.state.proj.b.abs().sum()) == 0  # zero-initialised
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)  # the same weights otherwise
    assert sorted(missing) == ["parts.state.proj.b", "parts.state.proj.w"]

    def act(model, st, mask=None, seed=0):
        return model.generate("policy_actions", WorldBatch(**{**b.__dict__, "state": st, "state_mask": mask}),
                              steps=2, seed=seed, n_actions=8)["actions"]

    assert torch.equal(act(m, state), act(plain, None))  # zero-initialised: no effect until trained
    with torch.no_grad():
        m.parts.state.proj.w.normal_(std=0.3)
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
    assert m.parts.state.proj.w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"state: expected \(2, P\) normalised proprioception"):
        act(m, torch.randn(3, 10))
    with pytest.raises(ValueError, match="state: non-finite"):
        act(m, torch.full((2, 10), float("nan")))
    assert plain.part("state") is None and preset("small").state_input and not preset("tiny").state_input


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


def test_visual_keypoints_read_the_current_frame_into_the_actions(make_model, random_batch):
    """``visual_keypoints``: the last context frame reaches every action token through the
    keypoint stem, zero-initialised (no effect until trained); afterwards the actions move
    with that frame, and the action loss trains the stem."""
    b = random_batch(frames=1)
    plain = make_model(wake=True)
    m = make_model(visual_keypoints=8)
    missing, _ = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("parts.keypoints.") for k in missing)

    def act(model, video, seed=0):
        return model.generate("policy_actions", WorldBatch(**{**b.__dict__, "video": video}),
                              steps=2, seed=seed, n_actions=8)["actions"]

    assert torch.equal(act(m, b.video), act(plain, b.video))
    with torch.no_grad():
        m.parts.keypoints.stem.out.weight.normal_(std=0.3)
    other = torch.roll(b.video, 1, 0)
    assert not torch.allclose(act(m, b.video), act(m, other), atol=1e-4)
    # only the stem's view changed: without it, the same swap moves the actions far less
    stem_change = (act(m, b.video) - act(m, other)).abs().mean()
    del m.parts["keypoints"]
    assert (act(m, b.video) - act(m, other)).abs().mean() < stem_change
    learner = make_model(wake=True, visual_keypoints=8)
    learner.loss("policy_actions", random_batch(frames=1))[0].backward()
    assert learner.parts.keypoints.stem.cameras[0].conv1.weight.grad.abs().sum() > 0
    assert learner.parts.keypoints.stem.out.weight.grad.abs().sum() > 0
    assert not preset("tiny").visual_keypoints


def test_observation_stem_reads_every_view_and_the_instruction(make_model, random_batch):
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
        return m.parts.keypoints.stem(m._views(batch, B), list(batch.text))[0]

    base = feats(views)
    assert base.shape == (B, m.parts.keypoints.stem.features) == (B, 64 + 2 * 4 * 2)
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


def test_keypoint_film_on_two_layers_conditions_the_second_conv(make_model):
    """``keypoint_film_layers`` 2: the instruction also scales and shifts the second conv
    layer (its own FiLM projection, trained by the action loss); 1 (the default) keeps the
    stem, and so older checkpoints, as they were; other values are refused by name."""
    from cosmos3_robot.model.keypoints import CameraStem

    one = make_model(visual_keypoints=4, n_views=2, action_prior=True)
    two = make_model(visual_keypoints=4, n_views=2, action_prior=True, keypoint_film_layers=2)
    assert one.parts.keypoints.stem.cameras[0].film2 is None
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
