"""ConfidenceEstimator: separates training frames from noise, batched sampling, calibration round trip,
the feature-density component (separation, one encode pass, bit-exact persistence, clear errors), and the
controller's low-confidence hold."""

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save as safetensors_bytes

from tests.conftest import uniform_stats
from tests.online.tiny_trained import noise_frames, trained_policy, training_frames
from vlaforge import presets
from vlaforge.online.confidence import (
    CONFIDENCE_FILE,
    DENSITY_FILE,
    ConfidenceEstimator,
    ConfidenceNotSupported,
)
from vlaforge.policy import Policy
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
    est = ConfidenceEstimator(policy, n_samples=4, density=False)  # the head's own score (density: below)
    val = training_frames(40, seed=11)
    threshold = est.calibrate(val, percentile=10.0, progress=False)
    assert threshold == pytest.approx(float(np.percentile(est.scores(val), 10.0)))
    assert est.calibration["frames"] == 40

    ckpt = policy.save(tmp_path / "ckpt")
    est.save(ckpt)
    meta = json.loads((ckpt / CONFIDENCE_FILE).read_text())
    assert meta["threshold"] == threshold and meta["method"] == "entropy"
    assert meta["density_file"] is None and not (ckpt / DENSITY_FILE).exists()
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
    # a file from before the density component (format 1) still loads, as the head's own score
    v1 = {k: v for k, v in meta.items() if k not in ("density", "shrinkage", "folds", "density_file")}
    (ckpt / CONFIDENCE_FILE).write_text(json.dumps({**v1, "format_version": 1}))
    old = ConfidenceEstimator.load(reloaded, ckpt)
    assert not old.density and not old.combined and old.threshold == threshold
    assert old.estimate(frames[0]).score == a[0].score


def _shifted(frames, **change):
    return [{**f, **change} for f in frames]


@pytest.mark.parametrize("head", ["tokens", "regression"])
def test_density_scores_training_frames_above_noise_unseen_instructions_and_far_states(head):
    policy = trained_policy(head)
    est = ConfidenceEstimator(policy, n_samples=4)
    est.calibrate(training_frames(64, seed=31), progress=False)
    assert est.combined and set(est.calibration["density"]["embodiments"]["sawyer"]) == {"language", "image",
                                                                                         "state", "pixels"}
    seen = training_frames(48, seed=32)
    shifted = {"noise image": noise_frames(48, seed=33),
               "unseen instruction": _shifted(seen, task="open the top drawer of the cabinet"),
               "far state": _shifted(seen, **{"observation.state": np.full(4, 8.0, np.float32)})}
    t_seen = est.score_table(seen)
    # fresh in-distribution frames: mostly within the 99th percentile of the calibration frames
    assert np.median(t_seen["density"]) < 1.0
    for name, frames in shifted.items():
        t = est.score_table(frames)
        for key in ("density_score", "score"):
            assert auroc(t_seen[key], t[key]) > 0.9, (f"{head}, {name}, {key}: seen "
                                                      f"{np.round(t_seen[key][:6], 3)}, shifted "
                                                      f"{np.round(t[key][:6], 3)}")
        for table in (t, t_seen):
            assert ((table["score"] >= 0) & (table["score"] <= 1)).all()
            # the combined score is the weakest component's
            parts = np.stack([table[k] for k in ("head", "language", "image", "state", "pixels")])
            np.testing.assert_allclose(table["disagreement"], parts.max(0))
            np.testing.assert_allclose(table["score"], 1 / (1 + table["disagreement"]))
    c = est.estimate(_shifted(seen[:1], **{"observation.state": np.full(4, np.nan, np.float32)})[0])
    assert c.score == 0.0 and not c.proceed  # non-finite features: never confident


def test_density_comes_from_the_same_single_encode_pass():
    policy = trained_policy("tokens")
    est = ConfidenceEstimator(policy)
    est.calibrate(training_frames(16, seed=41), progress=False)
    calls = []
    original = policy._tokens

    def counting(batch):
        calls.append(len(batch["task"]))
        return original(batch)

    policy._tokens = counting
    c = est.estimate(training_frames(1, seed=42)[0])
    assert calls == [1] and set(c.parts) == {"head", "language", "image", "state", "pixels"}
    assert c.disagreement == max(c.parts.values()) and c.score == pytest.approx(1 / (1 + c.disagreement))
    assert c.head_disagreement == pytest.approx(c.parts["head"] * est.calibration["head_p99"])


def test_density_calibration_round_trips_bit_exactly(tmp_path):
    policy = trained_policy("tokens")  # entropy: deterministic, so scores must match exactly
    est = ConfidenceEstimator(policy, n_samples=4)
    threshold = est.calibrate(training_frames(40, seed=51), progress=False)
    assert threshold == est.calibration["thresholds"]["combined"]
    ckpt = policy.save(tmp_path / "ckpt")
    est.save(ckpt)
    meta = json.loads((ckpt / CONFIDENCE_FILE).read_text())
    assert meta["density"] is True and meta["density_file"]["name"] == DENSITY_FILE
    loaded = ConfidenceEstimator.load(Policy.load(ckpt), ckpt)
    assert loaded.combined and loaded.threshold == threshold and loaded.calibration == est.calibration
    a, b = est.feature_density.to_arrays(), loaded.feature_density.to_arrays()
    # 4 modalities x (mean, precision, reference) + known instructions
    assert sorted(a) == sorted(b) and len(a) == 13
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float64 and np.array_equal(a[k], b[k]), k
    frames = training_frames(8, seed=52) + noise_frames(8, seed=53)
    x, y = est.score_table(frames), loaded.score_table(frames)
    for k in x:
        assert np.array_equal(x[k], y[k]), k
    # switching the density off falls back to the threshold calibrated for the head's own score
    head_only = loaded.replace(density=False)
    assert not head_only.combined and head_only.threshold == est.calibration["thresholds"]["head"]
    assert ConfidenceEstimator.load(policy, ckpt, density=False).threshold == head_only.threshold
    # a file from before the pixel part (format 2) loads without it; the other parts score as before
    old = {k: v for k, v in a.items() if not k.startswith("sawyer/pixels/")}
    data = safetensors_bytes(old, metadata={"format_version": "2"})
    (ckpt / DENSITY_FILE).write_bytes(data)
    meta = json.loads((ckpt / CONFIDENCE_FILE).read_text())
    meta.update(format_version=2,
                density_file={"name": DENSITY_FILE, "sha256": hashlib.sha256(data).hexdigest()})
    (ckpt / CONFIDENCE_FILE).write_text(json.dumps(meta))
    v2 = ConfidenceEstimator.load(Policy.load(ckpt), ckpt)
    t2 = v2.score_table(frames)
    assert v2.combined and set(v2.feature_density.gaussians["sawyer"]) == {"language", "image", "state"}
    assert np.isnan(t2["pixels"]).all()
    for k in ("head", "language", "image", "state"):
        assert np.array_equal(t2[k], x[k]), k
    assert (t2["disagreement"] <= x["disagreement"]).all()  # one part fewer in the max
    # the current format must hold every part
    meta["format_version"] = 3
    (ckpt / CONFIDENCE_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="expected modalities .*'pixels'"):
        ConfidenceEstimator.load(policy, ckpt)


def test_pixel_part_flags_an_occluding_patch():
    policy = trained_policy("tokens")
    est = ConfidenceEstimator(policy)
    est.calibrate(training_frames(64, seed=71), progress=False)
    seen = training_frames(48, seed=72)
    rng = np.random.default_rng(73)
    occluded = []
    for f in seen:
        im = f["observation.images.corner"].copy()
        y, x = rng.integers(0, 33, size=2)
        # a dark square, half the side of the 64 px view (grey would match this scene's mean background)
        im[y:y + 32, x:x + 32] = 20
        occluded.append({**f, "observation.images.corner": im})
    t_seen, t_occ = est.score_table(seen), est.score_table(occluded)
    assert auroc(-t_seen["pixels"], -t_occ["pixels"]) > 0.9
    assert auroc(t_seen["score"], t_occ["score"]) > 0.9
    assert t_seen["pixels"].shape == (48,) and np.isfinite(t_seen["pixels"]).all()


def test_density_file_missing_mismatched_or_of_another_policy_is_a_clear_error(tmp_path):
    policy = trained_policy("tokens")
    est = ConfidenceEstimator(policy)
    est.calibrate(training_frames(24, seed=61), progress=False)
    ckpt = policy.save(tmp_path / "ckpt")
    est.save(ckpt)
    # same head, wider image features (a keypoint token per camera): the statistics do not fit
    other = Policy(presets.get("tiny").replace(head="tokens", vision_keypoints=4), policy.stats)
    with pytest.raises(ValueError, match=r"sawyer/image/mean': expected shape \(128,\) .* got \(64,\)"):
        ConfidenceEstimator.load(other, ckpt)
    data = (ckpt / DENSITY_FILE).read_bytes()
    (ckpt / DENSITY_FILE).write_bytes(data[:-8] + bytes(8))
    with pytest.raises(ValueError, match="sha256"):
        ConfidenceEstimator.load(policy, ckpt)
    (ckpt / DENSITY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{DENSITY_FILE}: missing"):
        ConfidenceEstimator.load(policy, ckpt)
    # re-saving without density statistics removes the stale file
    (ckpt / DENSITY_FILE).write_bytes(data)
    ConfidenceEstimator(policy, density=False).save(ckpt)
    assert not (ckpt / DENSITY_FILE).exists() and not ConfidenceEstimator.load(policy, ckpt).combined


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
