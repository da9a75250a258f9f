"""Chunk execution semantics with a counting stub policy: recycle, ensemble, async."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from tests.runtime.stubs import CountingPolicy, obs_at
from vlaforge.runtime.chunking import ChunkExecutor, StaleChunkError


def test_validation():
    with pytest.raises(ValueError, match="strategy"):
        ChunkExecutor(CountingPolicy(), strategy="eager")
    with pytest.raises(ValueError, match="at most chunk_size=8, got 9"):
        ChunkExecutor(CountingPolicy(chunk_size=8), recompute_every=9)
    with pytest.raises(TypeError, match="predict_chunk"):
        ChunkExecutor(object())


@pytest.mark.parametrize("every", [1, 3, 4, 8])
def test_recycle_calls_policy_every_recompute_every_steps(every):
    policy = CountingPolicy(chunk_size=8)
    ex = ChunkExecutor(policy, "recycle", recompute_every=every)
    for t in range(24):
        a = ex.act(obs_at(t))
        assert a.shape == (4,) and a.dtype == np.float32
        assert a[0] == t  # the action of this step, from the chunk predicted at the last recompute
        assert a[1] == t - t % every  # ... which was predicted from the observation of that step
    assert policy.calls == ex.policy_calls == math.ceil(24 / every)
    assert policy.obs_steps == list(range(0, 24, every))
    assert ex.steps == 24
    ex.reset()
    ex.act(obs_at(0))
    assert policy.calls == math.ceil(24 / every) + 1  # a fresh episode starts with a fresh chunk


def test_recycle_never_plays_a_chunk_older_than_max_age_s():
    now = [0.0]
    policy = CountingPolicy(chunk_size=8)
    ex = ChunkExecutor(policy, "recycle", recompute_every=8, max_chunk_age_s=0.5, clock=lambda: now[0])
    for t in range(6):
        a = ex.act(obs_at(t))
        assert a[1] == t  # re-predicted every step: the previous chunk was always too old
        now[0] += 1.0
    assert policy.calls == 6


def test_ensemble_weights_exactly_as_documented():
    m = 0.5
    policy = CountingPolicy(chunk_size=3)
    ex = ChunkExecutor(policy, "ensemble", ensemble_decay=m)
    w = ex.ensemble_weights(3)
    np.testing.assert_allclose(w, np.exp(-m * np.arange(3)) / np.exp(-m * np.arange(3)).sum())
    assert w[0] > w[1] > w[2]  # the oldest prediction weighs most, as in ACT

    got = [ex.act(obs_at(t))[2] for t in range(5)]
    assert got[0] == pytest.approx(0.0)  # one prediction
    assert got[1] == pytest.approx((1 * 0 + math.exp(-m) * 1) / (1 + math.exp(-m)), rel=1e-6)
    for t in (2, 3, 4):  # three overlapping predictions: calls t-2 (oldest), t-1, t
        calls = [t - 2, t - 1, t]
        weights = [math.exp(-m * i) for i in range(3)]  # i = 0: the oldest
        expected = sum(w * c for w, c in zip(weights, calls)) / sum(weights)
        assert got[t] == pytest.approx(expected, rel=1e-6)
    assert policy.calls == 5 and ex.last.n_averaged == 3
    # every prediction for step t encodes t in dim 0: the average must be exactly t
    ex.reset()
    for t in range(6):
        assert ex.act(obs_at(t))[0] == pytest.approx(t)


def test_ensemble_with_zero_decay_is_a_plain_mean_and_negative_favours_newest():
    ex = ChunkExecutor(CountingPolicy(chunk_size=4), "ensemble", ensemble_decay=0.0)
    np.testing.assert_allclose(ex.ensemble_weights(4), 0.25)
    ex = ChunkExecutor(CountingPolicy(chunk_size=4), "ensemble", ensemble_decay=-1.0)
    w = ex.ensemble_weights(4)
    assert w[-1] == w.max()


def test_async_never_blocks_while_inference_is_slower_than_a_step():
    inference, period, n = 0.10, 0.02, 45
    policy = CountingPolicy(chunk_size=32, delays=(inference,))
    durations, played, stale = [], [], 0
    with ChunkExecutor(policy, "async", recompute_every=4) as ex:
        for t in range(n):
            t0 = time.perf_counter()
            try:
                a = ex.act(obs_at(t))
                played.append((t, a))
            except StaleChunkError:
                stale += 1
            durations.append(time.perf_counter() - t0)
            time.sleep(period)
        assert ex.policy_calls >= 3
    # the first chunk is waited for; after it, no act() comes anywhere near one inference
    assert durations[0] >= inference * 0.9
    assert max(durations[1:]) < inference / 2, f"act blocked: {max(durations[1:]):.3f} s"
    assert float(np.median(durations[1:])) < period / 2
    # aligned: every action is the one meant for its step, whichever chunk it came from
    assert all(a[0] == t for t, a in played)
    calls_used = {int(a[2]) for _, a in played}
    assert len(calls_used) >= 3  # newer chunks were picked up while running
    # a chunk that arrived late started at the index of the elapsed steps, not at 0
    late = [(t, a) for t, a in played if a[2] >= 1]
    assert late and all(t - a[1] >= 1 for t, a in late)
    assert stale <= n // 4  # a 32-step chunk covers a 5-step inference: hardly ever starved
    assert "vlaforge-chunk-inference" in policy.threads


def test_async_drops_stale_chunks_and_never_plays_them():
    # the second inference takes ~15 steps; chunks may be at most 1 step old
    policy = CountingPolicy(chunk_size=8, delays=(0.0, 0.3, 0.0))
    ex = ChunkExecutor(policy, "async", recompute_every=1, max_chunk_age_steps=1)
    played, stale_steps = [], []
    for t in range(30):
        try:
            played.append((t, ex.act(obs_at(t))))
        except StaleChunkError:
            stale_steps.append(t)
        time.sleep(0.02)
    ex.close()
    assert all(t - a[1] <= 1 for t, a in played)  # never older than the limit
    assert all(a[0] == t for t, a in played)
    assert stale_steps and stale_steps[0] == 2  # the first chunk aged out while call 1 was running
    assert ex.stale_dropped >= 1 and not any(a[2] == 1 for _, a in played)  # call 1 was never executed
    assert any(a[2] >= 2 for _, a in played)  # and the executor recovered with fresh chunks
    assert ex.stale_steps == len(stale_steps)


def test_async_reset_discards_inference_in_flight():
    policy = CountingPolicy(chunk_size=16, delays=(0.0, 0.15, 0.0))
    ex = ChunkExecutor(policy, "async", recompute_every=1)
    ex.act(obs_at(0, episode=0))
    ex.act(obs_at(1, episode=0))  # starts the slow call 1 in the background
    ex.reset()
    a = ex.act(obs_at(0, episode=1))  # waits for a chunk of the new episode
    assert a[3] == 1 and a[0] == 0
    time.sleep(0.2)
    for t in range(1, 6):
        assert ex.act(obs_at(t, episode=1))[3] == 1  # the old episode's chunk never shows up
    ex.close()


def test_wait_idle_blocks_until_the_inference_in_flight_is_done():
    policy = CountingPolicy(chunk_size=8, delays=(0.0, 0.3))
    ex = ChunkExecutor(policy, "async", recompute_every=1)
    ex.act(obs_at(0))
    ex.act(obs_at(1))  # starts the slow call 1 in the background
    assert ex.wait_idle(timeout=0.01) is False  # still running
    assert ex.policy_calls == 1
    t0 = time.perf_counter()
    assert ex.wait_idle() is True
    assert ex.policy_calls == 2 and time.perf_counter() - t0 > 0.1  # it waited for call 1 to finish
    assert ex.wait_idle(timeout=0.0) is True  # nothing in flight now
    ex.close()
    assert ex.wait_idle() is True
    with ChunkExecutor(CountingPolicy(chunk_size=8), "recycle", recompute_every=4) as sync:
        sync.act(obs_at(0))
        assert sync.wait_idle(timeout=0.0) is True  # synchronous: never anything in flight


def test_async_inference_error_reaches_the_control_loop():
    policy = CountingPolicy(chunk_size=8, fail_on_call=1)
    ex = ChunkExecutor(policy, "async", recompute_every=1)
    ex.act(obs_at(0))
    with pytest.raises(RuntimeError, match="injected inference failure"):
        for t in range(1, 50):
            ex.act(obs_at(t))
            time.sleep(0.005)
    ex.close()


def test_async_close_stops_the_thread():
    ex = ChunkExecutor(CountingPolicy(chunk_size=8, delays=(0.0, 0.05)), "async", recompute_every=1)
    for t in range(3):
        ex.act(obs_at(t))
    workers = [th for th in threading.enumerate() if th.name == "vlaforge-chunk-inference"]
    assert workers and all(th.daemon for th in workers)
    ex.close()  # joins the thread, even with a call in flight
    assert not ex._worker.thread.is_alive()
    with pytest.raises(RuntimeError, match="after close"):
        ex.act(obs_at(3))


def test_wrong_chunk_shape_is_a_clear_error():
    class Bad:
        def predict_chunk(self, obs):
            return np.zeros(4, np.float32)

    with pytest.raises(ValueError, match=r"expected a float array \(H, D\)"):
        ChunkExecutor(Bad()).act(obs_at(0))
