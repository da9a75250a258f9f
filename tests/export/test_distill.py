"""Distillation into a few-step student, and vision-encoder caching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.export.test_onnx import frame, tiny
from tests.training.conftest import write_dataset
from vlaforge.export import DistillConfig, distill
from vlaforge.policy import Policy


def test_a_flow_teacher_distils_into_a_one_step_student(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=4)
    teacher = tiny("flow")
    teacher.save(tmp_path / "teacher")
    ckpt = distill(DistillConfig(teacher=str(tmp_path / "teacher"), out=str(tmp_path / "student"), steps=40,
                                 batch_size=8, dataset=(str(data),), lr=3e-3, threads=1),
                   progress=False, log=lambda *_: None)
    student = Policy.load(ckpt)
    assert student.heads["sawyer"].sampling_steps == 1 and teacher.heads["sawyer"].sampling_steps == 10
    log = json.loads((tmp_path / "student" / "distill.json").read_text())
    assert log["teacher_steps"] == 10 and log["loss_last"] < log["loss_first"], log
    # the heads trained, the encoders stayed the teacher's
    t, s = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(t[k], s[k]) for k in t if not k.startswith("heads."))
    assert any(not torch.equal(t[k], s[k]) for k in t if k.startswith("heads."))
    # with the same noise the student's one step lands nearer the teacher's ten than the teacher's own one
    f = frame(teacher, 0, task="trace the upper path")
    with torch.no_grad():
        cond, _ = teacher.encode(teacher.frame_to_batch(f))
        z = torch.randn(64, teacher.config.chunk_size, 4, generator=torch.Generator().manual_seed(0))
        c = cond.expand(64, -1, -1)
        target = teacher.heads["sawyer"].sample_from(c, z)
        one_step = teacher.heads["sawyer"]
        one_step.steps = 1
        naive = one_step.sample_from(c, z)
        mine = student.heads["sawyer"].sample_from(c, z)
    assert float(((mine - target) ** 2).mean()) < float(((naive - target) ** 2).mean())


def test_distill_refuses_a_teacher_without_sampling_steps(tmp_path):
    tiny("regression").save(tmp_path / "teacher")
    with pytest.raises(ValueError, match="expected a flow or diffusion policy, got head 'regression'"):
        distill(DistillConfig(teacher=str(tmp_path / "teacher"), out=str(tmp_path / "s"), steps=1,
                              dataset=(str(tmp_path),)), progress=False)


def test_vision_cache_reuses_features_only_for_an_unchanged_frame():
    policy = tiny("regression")
    f = frame(policy, 0)
    plain = policy.predict_chunk(f)
    cache = policy.set_vision_cache(1.0)
    first = policy.predict_chunk(f)  # the same up to float rounding (the encoder runs on its own)
    np.testing.assert_allclose(first, plain, atol=1e-5)
    assert (cache.hits, cache.misses) == (0, 1)
    assert np.array_equal(policy.predict_chunk(f), first) and (cache.hits, cache.misses) == (1, 1)
    nudged = dict(f, **{"observation.images.corner": f["observation.images.corner"] ^ np.uint8(1)})
    policy.predict_chunk(nudged)  # every pixel off by one: within the threshold, reused
    assert cache.hits == 2
    moved = frame(policy, 1)
    assert np.abs(policy.predict_chunk(moved) - plain).max() > 0 and cache.misses == 2
    policy.set_vision_cache(None)
    assert np.array_equal(policy.predict_chunk(moved), policy.predict_chunk(moved))
