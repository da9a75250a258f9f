"""ConfidenceEstimator: separates training frames from noise, batched sampling, calibration round trip,
and the controller's low-confidence hold."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from tests.runtime.tiny_trained import noise_frames, trained_policy, training_frames
from vlaforge import presets
from vlaforge.policy import Policy
from vlaforge.runtime.confidence import (
    CONFIDENCE_FILE,
    ConfidenceEstimator,
    ConfidenceNotSupported,
)
from vlaforge.runtime.controller import Controller, Status
from vlaforge.runtime.safety import SafetyConfig, SafetyLayer


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: one thread is faster and steadier here
    yield
    torch.set_num_threads(n)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties count half."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@pytest.mark.parametrize("head", ["tokens", "regression"])
def test_more_confident_on_training_frames_than_on_noise_images(head):
    policy = trained_policy(head)
    est = ConfidenceEstimator(policy, n_samples=8)
    assert est.method == {"tokens": "entropy", "regression": "tta"}[head]
    seen = est.scores(training_frames(48))
    noise = est.scores(noise_frames(48))
    assert ((seen >= 0) & (seen <= 1)).all() and ((noise >= 0) & (noise <= 1)).all()
    assert seen.mean() > noise.mean()
    assert auroc(seen, noise) > 0.8, (
        f"{head}: training {np.round(seen[:8], 3)}, noise {np.round(noise[:8], 3)}")


def test_flow_disagreement_is_the_spread_of_one_batched_sample_call():
    torch.manual_seed(0)
    cfg = presets.get("tiny")  # flow head
    policy = Policy(cfg, {"sawyer": uniform_stats(4, 4)})
    head = policy.heads["sawyer"]
    calls = []
    original = head.sample

    def counting(cond, n=1, generator=None):
        calls.append((cond.shape[0], n))
        return original(cond, n, generator)

    head.sample = counting
    frame = training_frames(1, image_size=cfg.image_size)[0]
    est = ConfidenceEstimator(policy, n_samples=6, seed=3)
    c = est.estimate(frame)
    assert calls == [(1, 6)]  # all six chunks from one call on one encoded observation

    with torch.inference_mode():
        cond, _ = policy.encode(policy.frame_to_batch(frame))
        x = original(cond, 6, torch.Generator().manual_seed(3))[0]  # (n, H, D), normalized units
    expected = float(x.var(0, unbiased=False).mean().sqrt())
    assert c.disagreement == pytest.approx(expected, rel=1e-5)
    assert c.score == pytest.approx(1 / (1 + expected), rel=1e-5)
    mean = policy.normalizer.unnormalize(x.mean(0), "sawyer", "action").numpy()
    np.testing.assert_allclose(c.mean_chunk, mean, rtol=1e-5, atol=1e-6)
    assert c.proceed  # no threshold yet: an uncalibrated estimator never stops the robot


def test_calibration_round_trips_through_save_and_load(tmp_path):
    policy = trained_policy("tokens")
    est = ConfidenceEstimator(policy, n_samples=4)
    val = training_frames(40, seed=11)
    threshold = est.calibrate(val, percentile=10.0, progress=False)
    assert threshold == pytest.approx(float(np.percentile(est.scores(val), 10.0)))
    assert est.calibration["frames"] == 40

    ckpt = policy.save(tmp_path / "ckpt")
    est.save(ckpt)
    meta = json.loads((ckpt / CONFIDENCE_FILE).read_text())
    assert meta["threshold"] == threshold and meta["method"] == "entropy"
    reloaded = Policy.load(ckpt)  # the policy loader ignores confidence.json
    loaded = ConfidenceEstimator.load(reloaded, ckpt)
    assert (loaded.threshold, loaded.method, loaded.n_samples) == (threshold, "entropy", 4)
    frames = training_frames(24, seed=12) + noise_frames(24, seed=13)
    a = [est.estimate(f) for f in frames]
    b = [loaded.estimate(f) for f in frames]
    assert [x.score for x in a] == pytest.approx([x.score for x in b])
    assert [x.proceed for x in a] == [x.proceed for x in b]
    # about 90 % of fresh training frames pass, noise frames far less often
    seen_pass = np.mean([x.proceed for x in a[:24]])
    noise_pass = np.mean([x.proceed for x in a[24:]])
    assert seen_pass > noise_pass

    other = Policy(presets.get("tiny").replace(head="regression"), reloaded.stats)
    with pytest.raises(ValueError, match="calibrated for a 'tokens' head"):
        ConfidenceEstimator.load(other, ckpt)


def test_controller_holds_on_low_confidence_and_asks_the_callback():
    policy = trained_policy("tokens")
    est = ConfidenceEstimator(policy)
    est.calibrate(training_frames(40, seed=21), percentile=5.0, progress=False)
    noise = [f for f in noise_frames(24, seed=22) if not est.estimate(f).proceed]
    assert noise, "no noise frame fell below the calibrated threshold"
    low = np.array(policy.stats["sawyer"]["action"]["min"]) - 1
    high = np.array(policy.stats["sawyer"]["action"]["max"]) + 1
    safety = SafetyLayer(SafetyConfig(low, high, np.inf, np.inf, np.inf, 0.0125, hold_action=np.zeros(4)))
    asked = []
    human = np.full((3, 4), 0.25, np.float32)
    answers = iter([None, human])

    def person(obs, verdict):
        asked.append((obs, verdict))
        return next(answers)

    ctl = Controller(policy, safety, confidence=est, on_low_confidence=person)
    r = ctl.step(noise[0])
    assert r.status == Status.LOW_CONFIDENCE and "source" not in r.info  # held still
    assert asked[0][0] is noise[0] and asked[0][1].score < est.threshold
    r = ctl.step(noise[0])  # the person answers with a chunk: it plays over three steps
    assert r.status == Status.LOW_CONFIDENCE and r.info["source"] == "human"
    np.testing.assert_allclose(r.action, human[0])
    seen = training_frames(1, seed=23)[0]
    for _ in range(2):
        assert ctl.step(seen).info["source"] == "human"
    assert est.estimate(seen).proceed
    assert ctl.step(seen).status == Status.OK  # confident again: the policy drives


def test_unsupported_methods_are_clear_errors():
    regression = Policy(presets.get("tiny").replace(head="regression"), {"sawyer": uniform_stats(4, 4)})
    with pytest.raises(ConfidenceNotSupported, match="samples .* identical"):
        ConfidenceEstimator(regression, method="samples")
    with pytest.raises(ConfidenceNotSupported, match="tokens head"):
        ConfidenceEstimator(regression, method="entropy")
    with pytest.raises(ValueError, match="expected at least 2, got 1"):
        ConfidenceEstimator(regression, n_samples=1)
    with pytest.raises(ValueError, match="threshold"):
        ConfidenceEstimator(regression, threshold=1.5)
