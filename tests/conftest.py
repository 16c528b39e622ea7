import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# CI runs the property tests with a fixed derandomised search, so a run is reproducible;
# locally hypothesis explores new examples each time.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# ---- model builders (tests/test_model*.py, test_cuda.py) -----------------------------------
import torch  # noqa: E402

from cosmos3_robot.model import Cosmos3, WorldBatch, preset  # noqa: E402


def _tiny_model(wake: bool = False, **overrides) -> Cosmos3:
    """A tiny model; ``wake`` perturbs every weight so the zero-initialised (adaLN-Zero)
    generator blocks and heads are not the identity / zero."""
    torch.manual_seed(0)
    m = Cosmos3(preset("tiny", **overrides))
    if wake:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return m


def _random_batch(B=2, frames=3, n_actions=8, D=19, seed=0, embodiment="single_arm") -> WorldBatch:
    g = torch.Generator().manual_seed(seed)
    return WorldBatch(
        text=[f"task {i}" for i in range(B)], embodiment=[embodiment] * B,
        video=torch.rand(B, frames, 3, 32, 32, generator=g) * 2 - 1, n_context_frames=1,
        actions=torch.randn(B, n_actions, D, generator=g), fps=15.0, control_hz=15.0,
    )


def _square_clips(B: int, frames: int = 3, size: int = 32, side: int = 10):
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


@pytest.fixture
def make_model():
    """``make_model(wake=False, **preset_overrides)`` -> a tiny :class:`Cosmos3`."""
    return _tiny_model


@pytest.fixture
def random_batch():
    """``random_batch(B=2, frames=3, n_actions=8, D=19, seed=0, embodiment=...)`` -> a
    :class:`WorldBatch` of noise clips (32 px) and actions."""
    return _random_batch


@pytest.fixture
def square_clips():
    """``square_clips(B, frames=3, size=32, side=10)`` -> ``(video (B, F, 3, S, S), actions (B, 8, 10))``
    of moving squares whose actions encode their velocity."""
    return _square_clips


def _flat_config(cfg) -> dict:
    """``cfg`` as checkpoints saved it before the config was grouped: one flat mapping
    (``{"name", "dim", ..., "video_prior", ..., "flow": {...}}``)."""
    d = cfg.to_dict()
    return {"name": d["name"], **d["transformer"], **d["video"], **d["action"], "flow": d["flow"]}


@pytest.fixture
def flat_config():
    """``flat_config(cfg)`` -> the config in the flat form of checkpoints saved before grouping."""
    return _flat_config
