"""Monitor: rolling success, latency percentiles against a budget, distribution shift alarms, report, plot."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.runtime.stubs import stats_for
from vlaforge.runtime.monitor import Monitor


def make(**kw):
    base = dict(stats=stats_for(3, 2), embodiment="sawyer", latency_budget_s=0.05, window=50)
    base.update(kw)
    return Monitor(**base)


def test_validation():
    with pytest.raises(KeyError, match="'ur5' not in the statistics"):
        make(embodiment="ur5")
    with pytest.raises(ValueError, match="latency_budget_s"):
        make(latency_budget_s=0)
    m = make()
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(3,\), got \(2,\)"):
        m.record_step(0.01, state=np.zeros(2))


def test_rolling_success_rate():
    m = make(outcome_window=4)
    assert m.success_rate is None
    outcomes = [True, True, False, True, False, False, False, True]
    for i, ok in enumerate(outcomes):
        m.record_outcome(ok)
        assert m.success_rate == pytest.approx(np.mean(outcomes[max(0, i - 3): i + 1]))
    r = m.report()
    assert r["episodes"] == 8 and r["successes_total"] == 4 and r["success_window"] == 4


def test_latency_percentiles_and_budget_alarm(rng):
    m = make(window=200, inference_budget_s=0.1)
    lat = rng.uniform(0.001, 0.02, size=200)
    for x in lat:
        m.record_step(float(x))
        m.record_inference(0.05)
    r = m.report()["latency"]
    assert r["step"]["p50"] == pytest.approx(np.percentile(lat, 50))
    assert r["step"]["p99"] == pytest.approx(np.percentile(lat, 99))
    assert not r["step"]["alarm"] and not r["inference"]["alarm"] and not m.latency_alarm
    for _ in range(10):  # 5 % of the window over budget: p99 goes over
        m.record_step(0.3)
        m.record_inference(0.3)
    r = m.report()
    assert r["latency"]["step"]["alarm"] and r["latency"]["inference"]["alarm"]
    assert {"latency:step", "latency:inference"} <= set(r["alarms"])


def test_shift_alarm_on_bias_and_on_spread_and_it_clears(rng):
    m = make(window=50, shift_threshold=2.0)
    for _ in range(100):  # in distribution
        m.record_step(0.01, action=rng.normal(0, 1, 2), state=rng.normal(0, 1, 3))
    r = m.report()
    assert not m.drift_alarm and r["shift"]["action"]["score"] < 2.0
    for _ in range(50):  # the states move 4 stds away in one dimension
        m.record_step(0.01, action=rng.normal(0, 1, 2), state=rng.normal([0, 4, 0], 1))
    r = m.report()
    assert m.drift_alarm and r["shift"]["observation.state"]["alarm"] and not r["shift"]["action"]["alarm"]
    assert r["shift"]["observation.state"]["mean_z"][1] == pytest.approx(4, abs=0.6)
    for _ in range(50):  # back in distribution: the window forgets
        m.record_step(0.01, action=rng.normal(0, 1, 2), state=rng.normal(0, 1, 3))
    assert not m.drift_alarm
    for _ in range(50):  # no bias but 4x the spread: the rms z-score catches it
        m.record_step(0.01, action=rng.normal(0, 4, 2), state=rng.normal(0, 1, 3))
    r = m.report()["shift"]["action"]
    assert abs(r["max_abs_mean_z"]) < 2.0 and r["rms_z"] > 2.0 and r["alarm"]


def test_no_alarm_before_min_samples_and_non_finite_is_counted():
    m = make(min_samples=10)
    for _ in range(5):
        m.record_step(0.01, action=np.array([50.0, 50.0]))
    assert not m.drift_alarm
    m.record_step(0.01, action=np.array([np.nan, 0.0]))
    r = m.report()["shift"]["action"]
    assert r["non_finite"] == 1 and r["n"] == 5
    for _ in range(5):
        m.record_step(0.01, action=np.array([50.0, 50.0]))
    assert m.drift_alarm


def test_report_is_json_and_plot_writes_a_png(tmp_path, rng):
    m = make()
    json.dumps(m.report(), allow_nan=False)  # empty monitor: still plain JSON
    for i in range(120):
        m.record_step(0.01 + 0.001 * (i % 7), action=rng.normal(0, 1, 2), state=rng.normal(0, 1, 3))
        if i % 8 == 0:
            m.record_inference(0.03)
        if i % 20 == 19:
            m.record_outcome(i % 40 == 39)
    text = json.dumps(m.report(), allow_nan=False)
    assert json.loads(text)["steps"] == 120
    path = m.plot(tmp_path / "sub" / "monitor.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000
    assert os.listdir(tmp_path / "sub") == ["monitor.png"]  # no temp file left behind
