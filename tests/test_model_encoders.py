"""Video encoders: the conv autoencoder (plain, anchored, gated), reconstruction on a
sub-batch, an external VAE through its adapter. CPU, tiny preset."""

from __future__ import annotations


import pytest
import torch

from cosmos3_robot.model import Cosmos3, WorldBatch, preset
from cosmos3_robot.model.vae import ConvVideoAE, ExternalVAE


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


def test_conv_autoencoder_shapes_and_frame_rule(square_clips):
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


def test_anchored_autoencoder_codes_later_frames_as_differences_from_the_first(flat_config):
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

    old = {k: v for k, v in flat_config(preset("small")).items() if k not in ("video_anchored", "video_gated")}
    assert not Cosmos3Config.from_dict(old).video_anchored


def test_reconstruction_on_a_sub_batch_keeps_every_clips_latents(random_batch):
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


def test_gated_autoencoder_copies_the_anchor_until_trained_and_learns_motion(flat_config, square_clips):
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
    old = {k: v for k, v in flat_config(preset("small")).items() if k != "video_gated"}
    assert not Cosmos3Config.from_dict(old).video_gated  # checkpoints from before load ungated
    with pytest.raises(ValueError, match="video_gated needs video_anchored"):
        preset("small", video_anchored=False)


def test_model_with_conv_ae_and_external_vae_adapter(random_batch):
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
