"""A short rollout of a tiny policy in a real Meta-World env produces every metric and file."""

import json

import pytest
import torch

from tests.conftest import uniform_stats
from vlaforge import presets
from vlaforge.config import EmbodimentSpec
from vlaforge.evaluation.rollout import EvalConfig, IncompatibleCheckpoint, evaluate
from vlaforge.policy import Policy


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt") / "policy"
    Policy(presets.get("tiny").replace(head="flow"), {"sawyer": uniform_stats(4, 4)}).save(d)
    return d


def test_short_rollout_writes_every_metric_and_file(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    res = evaluate(EvalConfig(checkpoint=str(tiny_checkpoint),
                              tasks=("drawer-open-v3", "button-press-topdown-v3"),
                              episodes=2, seed=1000, max_steps=12, out=str(out), execute_steps=3),
                   progress=False)
    for f in ("results.json", "report.md", "report.html", "success.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"] == res["overall"]
    for task in ("drawer-open-v3", "button-press-topdown-v3"):
        t = saved["tasks"][task]
        assert t["episodes"] == 2 and t["seeds"] == [1000, 1001]
        for key in ("success_rate", "ci95", "mean_squared_jerk", "chunk_latency_ms_p50",
                    "chunk_latency_ms_p99", "control_steps_per_s", "policy_calls_per_step"):
            assert t[key] is not None, key
        # 12 steps, 3 actions per chunk -> 4 policy calls per episode
        assert t["policy_calls_per_step"] == pytest.approx(4 / 12, abs=1e-4)
        video = out / "videos" / f"{task}_seed1000.mp4"
        assert video.is_file()
        import av

        with av.open(str(video)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 13  # the first frame of every step, and the last one
    assert "drawer-open-v3" in (out / "report.md").read_text()
    assert "<img src='data:image/png;base64," in (out / "report.html").read_text()


def test_same_seeds_same_episodes(tiny_checkpoint):
    """The flow head samples its noise from a generator seeded per (task, seed): the same episodes whatever
    state torch's global generator was in, and other episodes at other seeds."""
    kw = dict(checkpoint=str(tiny_checkpoint), tasks=("drawer-close-v3",), episodes=2, max_steps=8, videos=0,
              strategy="recycle")
    torch.manual_seed(1)
    a = evaluate(EvalConfig(**kw), progress=False, print_table=False)
    torch.manual_seed(2)
    torch.rand(7)
    b = evaluate(EvalConfig(**kw), progress=False, print_table=False)
    assert [e["jerk"] for e in a["episodes"]] == [e["jerk"] for e in b["episodes"]]
    assert a["episodes"][0]["jerk"] != a["episodes"][1]["jerk"]


def test_an_in_memory_policy_evaluates_like_its_checkpoint(tmp_path):
    # a deterministic head: loading a checkpoint draws from torch's generator, and so does sampling
    torch.manual_seed(0)
    cfg = presets.get("tiny").replace(head="regression")
    Policy(cfg, {"sawyer": uniform_stats(4, 4)}).save(tmp_path / "p")
    kw = dict(tasks=("drawer-close-v3",), episodes=2, max_steps=8, videos=0, bf16=False)
    saved = evaluate(EvalConfig(checkpoint=str(tmp_path / "p"), **kw), progress=False, print_table=False)
    policy = Policy.load(tmp_path / "p")
    before = policy.inference_precision
    live = evaluate(EvalConfig(**kw), policy=policy, progress=False, print_table=False)
    assert live["checkpoint"] is None and policy.inference_precision is before  # the policy is left as it was
    for a, b in zip(saved["episodes"], live["episodes"]):
        assert (a["seed"], a["steps"], a["jerk"], a["policy_calls"]) == (b["seed"], b["steps"], b["jerk"],
                                                                         b["policy_calls"])
    with pytest.raises(ValueError, match="an in-memory policy runs in this process.*got 2"):
        evaluate(EvalConfig(workers=2, **kw), policy=policy, progress=False)
    with pytest.raises(ValueError, match=r"EvalConfig.checkpoint: expected a checkpoint directory \(or pass"):
        evaluate(EvalConfig(**kw), progress=False)


def test_checkpoint_for_another_camera_or_embodiment_is_a_clear_error(tmp_path):
    cam = tmp_path / "cam"
    Policy(presets.get("tiny").replace(cameras=("wrist_left",)), {"sawyer": uniform_stats(4, 4)}).save(cam)
    with pytest.raises(IncompatibleCheckpoint, match=r"metaworld has no camera \['wrist_left'\]"):
        evaluate(EvalConfig(checkpoint=str(cam), tasks=("drawer-open-v3",), episodes=1), progress=False)
    arm = tmp_path / "arm"
    Policy(presets.get("tiny").replace(embodiments={"panda": EmbodimentSpec(9, 7)}),
           {"panda": uniform_stats(9, 7)}).save(arm)
    with pytest.raises(IncompatibleCheckpoint, match=r"expected 'sawyer'"):
        evaluate(EvalConfig(checkpoint=str(arm), tasks=("drawer-open-v3",), episodes=1), progress=False)
    big = tmp_path / "big"
    Policy(presets.get("tiny").replace(embodiments={"sawyer": EmbodimentSpec(7, 4)}),
           {"sawyer": uniform_stats(7, 4)}).save(big)
    with pytest.raises(IncompatibleCheckpoint,
                       match=r"state 4 / action 4, the checkpoint expects state 7 / action 4"):
        evaluate(EvalConfig(checkpoint=str(big), tasks=("drawer-open-v3",), episodes=1), progress=False)


def test_unknown_chunk_strategy_is_a_clear_error_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"EvalConfig.strategy: expected one of "
                                         r"\('recycle', 'ensemble', 'async'\), got 'ensmble'"):
        EvalConfig(checkpoint=str(tmp_path / "none"), strategy="ensmble")
    from vlaforge.apps.demo import run_demo

    with pytest.raises(ValueError, match=r"got 'ensmble'"):  # the demo checks before collecting anything
        run_demo(tmp_path / "demo", strategy="ensmble")
    assert not (tmp_path / "demo").exists()
