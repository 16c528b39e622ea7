"""Training bookkeeping across kills and resumes: checkpoint pruning by number, resuming when
the ``latest`` marker was never written, metrics without the steps trained twice."""

from __future__ import annotations

import json

import torch

from cosmos3_robot.train.state import latest_checkpoint, save_checkpoint
from cosmos3_robot.train.state import read_metrics


_MODEL = None


def _save(run, step):
    global _MODEL
    from cosmos3_robot.model import Cosmos3, preset

    if _MODEL is None:
        torch.manual_seed(0)
        _MODEL = Cosmos3(preset("tiny"))
    model = _MODEL
    opt = torch.optim.AdamW(model.parameters())
    return save_checkpoint(run, step, model, None, opt, {"position": 0}, keep=2)


def test_pruning_orders_checkpoints_by_step_number(tmp_path):
    _save(tmp_path, 9_999_998)
    _save(tmp_path, 10_000_000)
    _save(tmp_path, 10_000_001)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_10000000", "step_10000001"]  # text order used to delete step_10000000


def test_resume_finds_a_complete_checkpoint_without_the_latest_marker(tmp_path):
    first = _save(tmp_path, 5)
    (tmp_path / "checkpoints" / "latest").unlink()  # killed between the rename and the marker
    assert latest_checkpoint(tmp_path) == first
    second = _save(tmp_path, 10)
    (tmp_path / "checkpoints" / "latest").write_text("step_0000099")  # names nothing complete
    assert latest_checkpoint(tmp_path) == second
    (second / "optimizer.safetensors").unlink()  # an incomplete folder is not resumed from
    assert latest_checkpoint(tmp_path) == first


def test_read_metrics_keeps_the_run_that_continued(tmp_path):
    recs = [{"phase": "prior", "prior_step": 1}, {"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.9},
            {"step": 30, "loss": 0.8},  # killed after 30; the checkpoint was at 20
            {"step": 30, "loss": 0.7}, {"step": 40, "loss": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = read_metrics(tmp_path)
    assert [r["step"] for r in got] == [10, 20, 30, 40] and got[2]["loss"] == 0.7
    assert [r["prior_step"] for r in read_metrics(tmp_path, "prior")] == [1]


def test_an_optimizer_state_of_another_parameter_layout_is_refused_by_name(tmp_path):
    """Adam's moments are stored by parameter position: restored onto parameters in another
    order (a model whose layout changed since the run was saved) they would be misassigned,
    so the load says so instead."""
    import pytest
    from safetensors.torch import save_file

    from cosmos3_robot.train.state import load_optimizer_tensors, optimizer_tensors

    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([a, b])
    (a.sum() + b.sum()).backward()
    opt.step()
    tensors, meta = optimizer_tensors(opt.state_dict())
    save_file(tensors, str(tmp_path / "optimizer.safetensors"), metadata=meta)
    same = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(4))])
    load_optimizer_tensors(same, tmp_path / "optimizer.safetensors")
    assert torch.equal(next(iter(same.state.values()))["exp_avg"], opt.state[a]["exp_avg"])
    swapped = torch.optim.AdamW([torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2, 3))])
    with pytest.raises(ValueError, match=r"optimizer state 'exp_avg' of shape \(2, 3\) does not fit its parameter \(4,\)"):
        load_optimizer_tensors(swapped, tmp_path / "optimizer.safetensors")
