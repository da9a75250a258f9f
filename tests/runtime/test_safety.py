"""The safety layer never lets a bad action through: bounds, velocity, acceleration, NaN/Inf, estop."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlaforge.runtime.safety import SafetyConfig, SafetyLayer


def cfg(dim=2, **kw):
    base = dict(low=[-1.0] * dim, high=[1.0] * dim, max_velocity=1.0, max_acceleration=10.0, max_force=5.0,
                dt=0.1)
    base.update(kw)
    return SafetyConfig(**base)


def f32(*v):
    return np.array(v, dtype=np.float32)


# -- construction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(low=[0.0, 0.0], high=[1.0, 0.0]), "low < high"),
    (dict(low=[0.0, 0.0], high=[1.0, 1.0, 1.0]), r"expected a scalar or shape \(2,\)"),
    (dict(max_velocity=0.0), "positive"),
    (dict(max_velocity=[1.0, -1.0]), "positive"),
    (dict(max_acceleration=float("nan")), "positive|finite"),
    (dict(max_force=-1.0), "positive"),
    (dict(dt=0.0), "dt"),
    (dict(velocity_mode="norm", max_velocity=[1.0, 1.0]), "scalar"),
    (dict(velocity_mode="fast"), "velocity_mode"),
    (dict(hold_action=[2.0, 0.0]), "inside"),
    (dict(low=[float("inf"), 0.0]), "finite"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        cfg(**kw)


def test_inf_limits_mean_no_limit():
    layer = SafetyLayer(cfg(max_velocity=np.inf, max_acceleration=np.inf, max_force=np.inf))
    layer(f32(-1, -1))
    out = layer(f32(1, 1), force=1e9)
    np.testing.assert_array_equal(out.action, f32(1, 1))
    assert not out.modified


def test_wrong_shape_and_dtype_are_clear_errors():
    layer = SafetyLayer(cfg())
    with pytest.raises(ValueError, match=r"expected shape \(2,\), got \(3,\)"):
        layer(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="floating-point.*int64"):
        layer(np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="broadcasts with max_force"):
        SafetyLayer(cfg(max_force=[1.0, 2.0, 3.0]))(f32(0, 0), force=np.zeros(2))


def test_from_dataset_stats_widens_min_max():
    stats = {"min": np.array([-1.0, 0.0], np.float32), "max": np.array([1.0, 2.0], np.float32),
             "mean": np.zeros(2, np.float32)}
    c = SafetyConfig.from_dataset_stats(stats, margin=0.1, max_velocity=1.0, max_acceleration=1.0,
                                        max_force=1.0, dt=0.1)
    np.testing.assert_allclose(c.low, [-1.2, -0.2], rtol=1e-6)
    np.testing.assert_allclose(c.high, [1.2, 2.2], rtol=1e-6)
    flat = {"min": np.array([0.5, 0.0]), "max": np.array([0.5, 1.0])}
    with pytest.raises(ValueError, match=r"zero spread in dims \[0\]"):
        SafetyConfig.from_dataset_stats(flat, max_velocity=1.0, max_acceleration=1.0, max_force=1.0, dt=0.1)
    c = SafetyConfig.from_dataset_stats(flat, min_width=0.2, max_velocity=1.0, max_acceleration=1.0,
                                        max_force=1.0, dt=0.1)
    np.testing.assert_allclose(c.low, [0.4, -0.1])
    np.testing.assert_allclose(c.high, [0.6, 1.1])


# -- behaviour ----------------------------------------------------------------------------------------
def test_plausible_actions_pass_untouched():
    layer = SafetyLayer(cfg(initial_action=[0.0, 0.0]))
    for a in (f32(0.05, -0.05), f32(0.1, -0.1), f32(0.12, -0.12)):
        out = layer(a)
        assert not out.modified and out.reasons == ()
        np.testing.assert_array_equal(out.action, a)
        assert out.action.dtype == np.float32


def test_first_action_without_reference_is_only_clipped():
    layer = SafetyLayer(cfg())
    out = layer(f32(5.0, 0.3))
    np.testing.assert_array_equal(out.action, f32(1.0, 0.3))
    assert out.reasons == ("workspace",)
    # from then on velocity is limited relative to it (per step: 1.0 * 0.1)
    out = layer(f32(-1.0, 0.3))
    np.testing.assert_allclose(out.action, [0.9, 0.3], atol=1e-6)
    assert "velocity" in out.reasons


def test_first_action_with_initial_action_is_rate_limited():
    layer = SafetyLayer(cfg(initial_action=[0.0, 0.0]))
    out = layer(f32(1.0, 0.0))
    np.testing.assert_allclose(out.action, [0.1, 0.0], atol=1e-6)
    layer.reset(initial_action=np.array([0.5, 0.5]))
    np.testing.assert_allclose(layer(f32(1.0, 0.5)).action, [0.6, 0.5], atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_holds_last_safe_action(bad):
    layer = SafetyLayer(cfg(initial_action=[0.0, 0.0]))
    layer(f32(0.05, 0.0))
    out = layer(f32(bad, 0.0))
    assert "non_finite" in out.reasons and out.modified
    np.testing.assert_allclose(out.action, [0.05, 0.0], atol=1e-6)
    assert np.isfinite(out.action).all()


def test_non_finite_first_action_goes_to_hold_action_or_centre():
    out = SafetyLayer(cfg(low=[0.0, 2.0], high=[1.0, 4.0]))(f32(np.nan, 0))
    np.testing.assert_array_equal(out.action, f32(0.5, 3.0))
    out = SafetyLayer(cfg(hold_action=[0.2, -0.2]))(f32(np.nan, 0))
    np.testing.assert_array_equal(out.action, f32(0.2, -0.2))


def test_norm_mode_scales_along_the_direction():
    layer = SafetyLayer(cfg(velocity_mode="norm", max_acceleration=np.inf, initial_action=[0.0, 0.0]))
    out = layer(f32(0.6, 0.8))  # |step| = 1, limit 0.1 per step
    np.testing.assert_allclose(out.action, [0.06, 0.08], atol=1e-6)
    assert out.reasons == ("velocity",)


def test_braking_before_the_wall():
    # fast towards the upper bound: the layer must start braking early enough to stop inside it
    c = cfg(dim=1, low=[-10.0], high=[1.0], max_velocity=5.0, max_acceleration=10.0, initial_action=[0.0])
    layer = SafetyLayer(c)
    outs, reasons = [0.0], set()
    for _ in range(60):
        r = layer(f32(50.0))
        outs.append(float(r.action[0]))
        reasons.update(r.reasons)
    y = np.array(outs)
    steps = np.diff(y)
    assert y.max() <= 1.0
    assert np.abs(steps).max() <= 0.5 + 1e-6
    assert np.abs(np.diff(np.concatenate([[0.0], steps]))).max() <= 0.1 + 1e-6
    assert {"braking", "acceleration", "workspace"} <= reasons
    assert y[-1] == pytest.approx(1.0, abs=1e-6)  # and it does get to the wall


def test_force_spike_latches_estop_until_reset():
    layer = SafetyLayer(cfg(hold_action=[0.0, 0.0], initial_action=[0.0, 0.0]))
    layer(f32(0.1, 0.1))
    out = layer(f32(0.2, 0.2), force=np.array([0.0, 0.0, 7.0]))
    assert out.estop and "force" in out.reasons and "estop" in out.reasons
    np.testing.assert_array_equal(out.action, f32(0.0, 0.0))
    for _ in range(3):  # no force reading any more, still stopped
        out = layer(f32(0.3, 0.3))
        assert out.estop and out.reasons == ("estop",)
        np.testing.assert_array_equal(out.action, f32(0.0, 0.0))
    assert layer.estopped and layer.estop_reason == "force_limit"
    layer.reset()
    assert not layer.estopped
    assert not layer(f32(0.05, 0.05)).estop


def test_non_finite_force_latches_estop():
    layer = SafetyLayer(cfg())
    out = layer(f32(0.0, 0.0), force=np.array([np.nan]))
    assert out.estop and layer.estop_reason == "force_non_finite"


def test_velocity_scale_slows_down_and_decelerates_within_acceleration():
    layer = SafetyLayer(cfg(dim=1, max_velocity=1.0, max_acceleration=2.0, initial_action=[-1.0]))
    prev, prev_step = -1.0, 0.0
    for _ in range(20):  # reach full speed 0.1 / step
        r = layer(f32(1.0))
        prev_step, prev = float(r.action[0]) - prev, float(r.action[0])
    assert prev_step == pytest.approx(0.1, abs=1e-6)
    layer.set_velocity_scale(0.25)  # new limit 0.025 / step; deceleration 0.02 / step at most
    steps = []
    for _ in range(10):
        r = layer(f32(1.0))
        steps.append(float(r.action[0]) - prev)
        prev = float(r.action[0])
    assert np.abs(np.diff([0.1] + steps)).max() <= 0.02 + 1e-6
    assert steps[-1] <= 0.025 + 1e-6
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        layer.set_velocity_scale(0.0)


# -- properties ---------------------------------------------------------------------------------------
EXAMPLES = int(os.environ.get("VLAFORGE_HYPOTHESIS_EXAMPLES", "300"))  # more for a soak run
SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0]


@st.composite
def scenarios(draw):
    dim = draw(st.integers(1, 4))
    low = np.array(draw(st.lists(st.floats(-10, 10), min_size=dim, max_size=dim)))
    high = low + np.array(draw(st.lists(st.floats(0.1, 20), min_size=dim, max_size=dim)))
    dt = draw(st.sampled_from([0.01, 0.05, 0.1]))
    mode = draw(st.sampled_from(["per_dim", "norm"]))
    v_step = np.array(draw(st.lists(st.floats(1e-3, 10), min_size=dim, max_size=dim)))  # per step
    q_step = np.array(draw(st.lists(st.floats(1e-3, 5), min_size=dim, max_size=dim)))
    config = SafetyConfig(low=low, high=high, max_velocity=(v_step[0] if mode == "norm" else v_step) / dt,
                          max_acceleration=q_step / dt**2, max_force=10.0, dt=dt, velocity_mode=mode)
    value = st.one_of(st.floats(-30, 30), st.sampled_from(SPECIAL))
    n = draw(st.integers(1, 40))
    actions = [np.array(draw(st.lists(value, min_size=dim, max_size=dim)), dtype=np.float32)
               for _ in range(n)]
    spike_at = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    return config, actions, spike_at


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_outputs_always_admissible(scenario):
    config, actions, spike_at = scenario
    layer = SafetyLayer(config)
    scale = max(1.0, float(np.abs(config.low).max()), float(np.abs(config.high).max()))
    atol = 8 * float(np.spacing(np.float32(scale)))  # float32 rounding of the outputs
    v = config.max_velocity * config.dt  # (D,) per step
    q = config.max_acceleration * config.dt**2  # (D,) per step
    outs, latched, hold = [], False, None
    for i, a in enumerate(actions):
        force = 20.0 if i == spike_at else (0.0 if spike_at is not None else None)
        r = layer(a, force=force)
        y = r.action.astype(np.float64)
        assert r.action.dtype == np.float32 and r.action.shape == (config.dim,)
        assert np.isfinite(y).all()
        assert (y >= config.low).all() and (y <= config.high).all()
        if not np.isfinite(a).all():
            assert "non_finite" in r.reasons or r.estop
        if i == spike_at:
            latched, hold = True, y
        if latched:  # the estop latches: the hold action, every step after the spike
            assert r.estop and "estop" in r.reasons
            np.testing.assert_array_equal(y, hold)
            continue
        assert not r.estop
        if outs:
            step = y - outs[-1]
            if config.velocity_mode == "norm":
                assert np.linalg.norm(step) <= v[0] + atol * np.sqrt(config.dim)
            else:
                assert (np.abs(step) <= v + atol).all()
            prev_step = outs[-1] - outs[-2] if len(outs) > 1 else np.zeros(config.dim)
            assert (np.abs(step - prev_step) <= q + 2 * atol).all()
        outs.append(y)
