"""Padding to the shared action width, so embodiments mix in one batch."""

import numpy as np
import pytest
import torch

from cosmos3_robot import embodiments
from cosmos3_robot.padding import MAX_ACTION_WIDTH, pad_actions, stack_padded, unpad_actions


def test_pad_and_unpad_numpy_and_torch():
    x = np.arange(2 * 16 * 19, dtype=np.float32).reshape(2, 16, 19)
    p, m = pad_actions(x)
    assert p.shape == (2, 16, MAX_ACTION_WIDTH) and m.sum() == 19 and m[:19].all()
    assert np.all(p[..., 19:] == 0)
    np.testing.assert_array_equal(unpad_actions(p, 19), x)
    pt, mt = pad_actions(torch.from_numpy(x), 32)
    assert pt.shape == (2, 16, 32) and mt.dtype == torch.bool and int(mt.sum()) == 19


def test_mixed_embodiment_batch():
    widths = [embodiments.get(n).width for n in ("single_arm", "humanoid", "libero")]
    chunks = [np.ones((16, w)) for w in widths]
    batch, mask = stack_padded(chunks)
    assert batch.shape == (3, 16, 64) and mask.shape == (3, 64)
    assert mask.sum(1).tolist() == widths
    assert float(batch[1, :, 57:].abs().sum()) == 0.0


def test_too_wide_or_ragged_is_an_error():
    with pytest.raises(ValueError, match="width 65 exceeds the padded maximum 64"):
        pad_actions(np.zeros((3, 65)))
    with pytest.raises(ValueError, match="differ in leading shape"):
        stack_padded([np.zeros((16, 7)), np.zeros((8, 7))])
