"""Quantile normaliser: the reference formula, rotation skipping, clamping, JSON persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cosmos3_robot.synthetic import random_episode

from cosmos3_robot import embodiments
from cosmos3_robot.normalize import QuantileNormalizer


def test_formula_matches_reference(rng):
    x = rng.normal(size=(5000, 4)) * [1, 10, 0.1, 3] + [0, 5, -1, 2]
    n = QuantileNormalizer.from_data(x)
    q01, q99 = np.quantile(x, 0.01, axis=0), np.quantile(x, 0.99, axis=0)
    np.testing.assert_allclose(n.offset, (q99 + q01) / 2)
    np.testing.assert_allclose(n.scale, (q99 - q01) / 2)
    y = n.normalize(x)
    np.testing.assert_allclose(y, (x - (q99 + q01) / 2) / ((q99 - q01) / 2))
    inside = np.mean((y >= -1) & (y <= 1), axis=0)
    assert np.all(inside > 0.97)
    np.testing.assert_allclose(n.unnormalize(y), x, atol=1e-10)


def test_rotation_entries_skipped_and_clamp(rng):
    emb = embodiments.get("single_arm_10d")
    x = emb.encode(random_episode(emb.codec, 500, rng))
    n = emb.normalizer(x, clamp=True)
    y = n.normalize(x)
    rot = emb.codec.rotation_mask()
    np.testing.assert_array_equal(y[:, rot], x[:, rot])  # quantile_rot: untouched
    assert y[:, ~rot].min() >= -1 and y[:, ~rot].max() <= 1
    assert n.names == tuple(emb.dim_names())


def test_numpy_and_torch_agree(rng):
    x = rng.normal(size=(100, 3)).astype(np.float32)
    n = QuantileNormalizer.from_data(x, clamp=True)
    yt = n.normalize(torch.from_numpy(x))
    assert yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), n.normalize(x), atol=1e-6)
    np.testing.assert_allclose(n.unnormalize(yt).numpy(), n.unnormalize(n.normalize(x)), atol=1e-5)


def test_constant_dimension_is_only_centred():
    x = np.c_[np.linspace(-1, 1, 100), np.full(100, 3.0)]
    n = QuantileNormalizer.from_data(x)
    assert n.constant == [1]
    np.testing.assert_allclose(n.normalize(x)[:, 1], 0)
    assert np.isfinite(n.normalize(x)).all()


def test_save_load_round_trip(tmp_path, rng):
    x = rng.normal(size=(200, 3))
    n = QuantileNormalizer.from_data(x, skip=np.array([False, True, False]), clamp=True, names=["a", "b", "c"])
    path = tmp_path / "stats.json"
    n.save(path)
    assert json.loads(path.read_text())["type"] == "quantile"
    m = QuantileNormalizer.load(path, names=["a", "b", "c"])
    np.testing.assert_array_equal(m.normalize(x), n.normalize(x))
    with pytest.raises(ValueError, match="saved for dimensions"):
        QuantileNormalizer.load(path, names=["x", "y", "z"])


def test_bad_input():
    with pytest.raises(ValueError, match=r"non-finite value in row 1, dimension 0"):
        QuantileNormalizer.from_data(np.array([[0.0, 1], [np.nan, 2]]))
    n = QuantileNormalizer.from_data(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match=r"expected last dimension 3"):
        n.normalize(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="q99 < q01"):
        QuantileNormalizer(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="expected type 'quantile'"):
        QuantileNormalizer.from_dict({"type": "minmax"})


def _save_many(path: str, n: int, start) -> None:
    norm = QuantileNormalizer.from_data(np.random.default_rng(0).normal(size=(100, 3)))
    start.wait()  # all processes save at the same time
    for _ in range(n):
        norm.save(path)


def test_concurrent_saves_of_the_same_statistics_do_not_collide(tmp_path):
    """Data-parallel ranks compute the same statistics and save them to one file at once."""
    import multiprocessing as mp

    path = tmp_path / "stats_0_sim_arm.json"
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_save_many, args=(str(path), 1000, start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert QuantileNormalizer.load(path).dim == 3 and not list(tmp_path.glob("*.tmp"))
