"""The safety filter's contract, as properties over random configurations, chunks and starts.

For any input, every command the filter emits is inside the limits, the workspace box and the
gripper range, and (from a start inside them) within the step and acceleration bounds; or it
holds / sends nothing. It never raises. CI derandomises the search (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosmos3_robot.runtime.safety import SafetyConfig, SafetyFilter

TOL = 1e-9
D = 8

weird = st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e39, 0.0])
values = st.one_of(st.floats(-3, 3, allow_nan=False), weird)


@st.composite
def configs(draw) -> SafetyConfig:
    centre = np.array(draw(st.lists(st.floats(-1, 1), min_size=D, max_size=D)))
    half = np.array(draw(st.lists(st.floats(0.01, 1), min_size=D, max_size=D)))
    kw: dict = {"max_obs_age_s": None}
    if draw(st.booleans()):
        kw.update(low=list(centre - half), high=list(centre + half))
    if draw(st.booleans()):
        ws_c = centre[:3] + np.array(draw(st.lists(st.floats(-0.005, 0.005), min_size=3, max_size=3)))
        ws_h = np.array(draw(st.lists(st.floats(0.005, 0.5), min_size=3, max_size=3)))
        kw.update(workspace_low=list(ws_c - ws_h), workspace_high=list(ws_c + ws_h))
    if draw(st.booleans()):
        kw.update(gripper_dim=D - 1, gripper_range=(float(centre[-1] - half[-1] / 2), float(centre[-1] + half[-1] / 2)))
    if draw(st.booleans()):
        kw.update(max_step=draw(st.lists(st.floats(0.001, 0.3), min_size=D, max_size=D)))
    if draw(st.booleans()):
        kw.update(max_accel_step=draw(st.lists(st.floats(0.0005, 0.1), min_size=D, max_size=D)))
    return SafetyConfig(**kw)


def _inside(cfg: SafetyConfig, cmd: np.ndarray) -> bool:
    lo, hi = cfg.bounds(len(cmd))
    return bool(np.all(cmd >= lo - TOL) and np.all(cmd <= hi + TOL))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), start=st.lists(values, min_size=D, max_size=D), data=st.data())
def test_every_emitted_command_is_inside_the_limits_and_rate_bounds(cfg, start, data):
    f = SafetyFilter(cfg)
    start = np.array(start)
    f.reset(start)
    started_inside = f.last_command is None or _inside(cfg, f.last_command)  # None: from the first command on
    prev = f.last_command
    v_prev = None if prev is None else np.zeros(D)
    for _ in range(data.draw(st.integers(1, 6), label="chunks")):
        n = data.draw(st.integers(1, 12), label="length")
        ramp = data.draw(st.booleans(), label="ramp")
        if ramp:  # a ramp far past the edge, the case that used to overshoot
            a = np.linspace(0, data.draw(st.floats(-5, 5)), n)[:, None] * np.ones(D)
        else:
            a = np.array(data.draw(st.lists(st.lists(values, min_size=D, max_size=D), min_size=n, max_size=n)))
        before, ok_before = f.last_command, f.counts["chunks_ok"]
        out = f.filter(a)
        if out is None:
            assert before is None and prev is None  # nothing was ever sent, so nothing can be repeated
            continue
        assert out.shape == (n, D) and np.all(np.isfinite(out.astype(np.float32)))
        if f.counts["chunks_ok"] == ok_before:  # a hold: the last command, repeated; a stop
            assert np.array_equal(out, np.repeat(before[None], n, 0))
            v_prev = np.zeros(D)
            continue
        for cmd in out:
            assert _inside(cfg, cmd), (cmd, cfg.bounds(D))
            if prev is None:
                v_prev = np.zeros(D)
            elif started_inside:
                v = cmd - prev
                if cfg.max_step is not None:
                    assert np.all(np.abs(v) <= np.asarray(cfg.max_step) + TOL)
                if cfg.max_accel_step is not None:
                    assert np.all(np.abs(v - v_prev) <= np.asarray(cfg.max_accel_step) + TOL)
                v_prev = v
            prev = cmd
    if started_inside:
        assert "limits_over_rate" not in f.counts


def test_ramp_to_the_edge_with_acceleration_bound_stays_inside():
    """The probe's case: workspace x <= 0.8, max_step 0.05, max_accel_step 0.01, a ramp to 1.5."""
    cfg = SafetyConfig(workspace_low=[-0.8, -0.8, 0.0], workspace_high=[0.8, 0.8, 1.0], max_step=[0.05] * 3,
                       max_accel_step=[0.01] * 3, max_obs_age_s=None)
    f = SafetyFilter(cfg)
    f.reset(np.array([0.0, 0.0, 0.5]))
    xs = np.concatenate([f.filter(np.c_[np.linspace(0.05 * k, 0.05 * k + 0.75, 16), np.zeros(16), np.full(16, 0.5)])[:, 0]
                         for k in range(20)])
    assert xs.max() <= 0.8 + 1e-12
    assert np.all(np.abs(np.diff(xs)) <= 0.05 + 1e-12) and np.all(np.abs(np.diff(np.diff(xs))) <= 0.01 + 1e-12)
    assert xs[-1] > 0.79  # and it still gets to the edge


def test_reset_outside_the_box_brings_commands_inside():
    cfg = SafetyConfig(workspace_low=[-0.8, -0.8, 0.0], workspace_high=[0.8, 0.8, 1.0], max_step=[0.05] * 3,
                       max_accel_step=[0.01] * 3, max_obs_age_s=None)
    f = SafetyFilter(cfg)
    f.reset(np.array([1.2, 0.0, 0.5]))
    out = f.filter(np.tile([1.5, 0.0, 0.5], (5, 1)))
    assert np.all(out[:, 0] <= 0.8) and f.counts["limits_over_rate"] == 1


@pytest.mark.parametrize("cfg, chunk, reason", [
    (SafetyConfig(max_obs_age_s=None), np.zeros((0, 8)), "bad_shape"),
    (SafetyConfig(max_obs_age_s=None), np.zeros((4, 9)), "width_changed"),
    (SafetyConfig(max_obs_age_s=None), np.array([["a"] * 8]), "bad_type"),
    (SafetyConfig(max_step=[0.1] * 3, max_obs_age_s=None), np.zeros((4, 8)), "config_mismatch"),
    (SafetyConfig(workspace_low=[0] * 3, workspace_high=[1] * 3, max_obs_age_s=None), np.zeros((4, 2)), "width_changed"),
    (SafetyConfig(max_obs_age_s=None), np.full((2, 8), 1e39), "non_finite"),
])
def test_filter_never_raises_it_holds_and_names_the_reason(cfg, chunk, reason):
    f = SafetyFilter(cfg)
    f.reset(np.zeros(8))
    out = f.filter(chunk)
    assert f.last_reason == reason and f.counts[reason] == 1
    assert out is not None and np.array_equal(out[0], np.zeros(8))


def test_configuration_errors_name_the_parameter():
    with pytest.raises(ValueError, match="max_step: 3 values for 8-wide"):
        SafetyConfig(max_step=[0.1] * 3).validate(8)
    with pytest.raises(ValueError, match="gripper_dim 8"):
        SafetyConfig(gripper_dim=8).validate(8)
    with pytest.raises(ValueError, match="position_dims"):
        SafetyConfig(workspace_low=[0] * 3, workspace_high=[1] * 3).validate(2)
    with pytest.raises(ValueError, match="workspace_low"):
        SafetyConfig(workspace_low=[0, 0], workspace_high=[1, 1])
    with pytest.raises(ValueError, match="max_accel_step"):
        SafetyConfig(max_accel_step=[0.0])


@pytest.mark.parametrize("obs_time, reason", [(100.0, "future_observation"), (float("nan"), "bad_timestamp"),
                                              ("soon", "bad_timestamp"), (-1.0, "stale_observation")])
def test_watchdog_refuses_future_invalid_and_stale_timestamps(obs_time, reason):
    f = SafetyFilter(SafetyConfig(max_obs_age_s=0.5))
    f.reset(np.zeros(8))
    out = f.filter(np.ones((2, 8)), obs_time=obs_time, now=0.0)
    assert f.last_reason == reason and np.array_equal(out, np.zeros((2, 8)))
    assert np.array_equal(f.filter(np.ones((2, 8)), obs_time=0.0, now=0.1), np.ones((2, 8)))


@pytest.mark.parametrize("current", [np.full(8, np.nan), np.zeros((2, 8)), "home", np.full(8, 1e300)])
def test_an_unusable_reset_state_is_counted_not_trusted(current):
    f = SafetyFilter(SafetyConfig(max_obs_age_s=None))
    f.reset(current)
    assert f.last_command is None and f.counts["bad_reset"] == 1
