"""vlaforge collect (scripted Meta-World expert) and vlaforge dataset info."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vlaforge.apps.collect import CollectConfig, collect
from vlaforge.cli import app
from vlaforge.data.reader import DatasetReader


def test_collect_keeps_successes_and_counts_failures(tmp_path):
    out = tmp_path / "demo"
    # 2 episodes wanted; max_steps=2 is too short for the expert, so every try fails
    s = collect(
        CollectConfig(
            out=out,
            tasks=["reach-v3"],
            episodes_per_task=2,
            image_size=16,
            max_steps=2,
            max_tries_factor=1.0,
            progress=False,
        )
    )
    t = s.per_task["reach-v3"]
    assert (t.kept, t.tried, t.failed) == (0, 7, 7)  # 2 * 1.0 + 5 tries, all failed, none kept
    assert any("reach-v3" in line and " 7 " in line for line in s.lines())
    # with --keep-failed they are recorded, flagged unsuccessful, with their seeds
    out2 = tmp_path / "kept"
    s2 = collect(
        CollectConfig(
            out=out2,
            tasks=["reach-v3"],
            episodes_per_task=2,
            image_size=16,
            max_steps=2,
            keep_failed=True,
            seed_start=5,
            progress=False,
        )
    )
    r = DatasetReader(out2)
    assert [(e.seed, e.success, e.length) for e in r.episodes] == [(5, False, 2), (6, False, 2)]
    assert (s2.per_task["reach-v3"].kept, s2.per_task["reach-v3"].failed) == (2, 2)


def test_collect_records_expert_demonstrations(tmp_path):
    out = tmp_path / "demo"
    s = collect(
        CollectConfig(
            out=out,
            tasks=["reach-v3"],
            episodes_per_task=2,
            image_size=32,
            progress=False,
            post_success_steps=3,
        )
    )
    assert s.per_task["reach-v3"].kept == 2
    r = DatasetReader(out)
    from vlaforge.sim.metaworld import instruction

    assert r.fps == 80 and r.robot_type == "sawyer" and r.tasks == [instruction("reach-v3")]
    assert [e.seed for e in r.episodes] == [0, 1] and all(e.success for e in r.episodes)
    cols = r.columns(["action", "next.success", "next.done", "observation.state"])
    assert np.abs(cols["action"]).max() <= 1.0  # clipped expert actions
    ends = np.cumsum([e.length for e in r.episodes]) - 1
    assert cols["next.done"][ends].all() and cols["next.done"].sum() == 2
    assert cols["next.success"][ends].all()  # success, then 3 more frames that stay successful
    assert all(cols["next.success"][ends - 3])
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.state"]["names"] == ["hand_x", "hand_y", "hand_z", "gripper_opening"]
    # the environment state is recorded: reach-v3's goal stays put within an episode and differs between seeds
    assert info["features"]["observation.environment_state"]["shape"] == [9]
    env = r.columns(["observation.environment_state"])["observation.environment_state"]  # (N, 9)
    first, second = env[: r.episodes[0].length], env[r.episodes[0].length:]
    assert np.ptp(first[:, 6:], axis=0).max() < 1e-6 and np.abs(first[0, 6:] - second[0, 6:]).max() > 1e-3


def test_collect_resumes_a_dataset_recorded_without_environment_state(tmp_path):
    """Datasets collected before the environment state was recorded keep their features when resumed."""
    from vlaforge.data import DatasetRecorder
    from vlaforge.sim.metaworld import MetaWorldEnv, instruction

    out = tmp_path / "old"
    env = MetaWorldEnv("reach-v3", cameras=("corner",), image_size=16)
    obs, _ = env.reset(seed=0)
    with DatasetRecorder(out, fps=80, cameras=("corner",), image_size=16) as rec:
        for _ in range(3):
            rec.add_frame({k: v for k, v in obs.items() if k != "observation.environment_state"}
                          | {"action": env.expert_action()})
            obs, *_ = env.step(env.expert_action())
        rec.save_episode(task="reach-v3", seed=0, success=False, instruction=instruction("reach-v3"))
    env.close()
    s = collect(CollectConfig(out=out, tasks=["reach-v3"], episodes_per_task=1, image_size=16, resume=True,
                              progress=False))
    assert s.per_task["reach-v3"].kept == 1
    r = DatasetReader(out)
    assert r.num_episodes == 2 and "observation.environment_state" not in r.features


def test_dataset_info_cli(tmp_path, small_dataset):
    root, written = small_dataset
    res = CliRunner().invoke(app, ["dataset", "info", str(root)])
    assert res.exit_code == 0, res.output
    assert f"episodes 6 (0 staged, not yet packed)   frames {sum(written['lengths'])}   tasks 2" in res.output
    assert "observation.images.corner" in res.output and "h264 yuv444p" in res.output
    assert "action             mean" in res.output
    (root / "meta/info.json").unlink()
    from tests.test_cli import run_cli

    code, _, err = run_cli(["dataset", "info", str(root)])
    assert code == 2 and "meta/info.json is missing" in err and len(err.splitlines()) == 1


def test_action_noise_executes_perturbed_actions_and_records_the_experts():
    """DART-style collection: the env receives expert + correlated noise on xyz; the frames keep the expert's
    action for the state reached; the same seed gives the same noise."""
    from vlaforge.apps.collect import rollout
    from vlaforge.sim.metaworld import MetaWorldEnv

    class Spy(MetaWorldEnv):
        def reset(self, **kw):
            self.executed, self.expert = [], []
            return super().reset(**kw)

        def step(self, action):
            self.executed.append(np.array(action, np.float32))
            return super().step(action)

        def expert_action(self):
            a = super().expert_action()
            self.expert.append(a)
            return a

    env = Spy("reach-v3", cameras=(), image_size=16)
    try:
        frames, _ = rollout(env, seed=3, post_success_steps=2, action_noise=0.3)
        executed, expert = np.stack(env.executed), np.stack(env.expert)
        np.testing.assert_array_equal(np.stack([f["action"] for f in frames]), expert)  # labels: the expert's
        gap = executed - expert
        assert np.abs(gap[:, :3]).max() > 0.05 and np.all(gap[:, 3] == 0)  # xyz perturbed, gripper untouched
        assert np.abs(executed).max() <= 1.0
        lag1 = np.corrcoef(gap[:-1, 0], gap[1:, 0])[0, 1]
        assert lag1 > 0.5, lag1  # correlated in time, not white
        again, _ = rollout(env, seed=3, post_success_steps=2, action_noise=0.3)
        np.testing.assert_array_equal(np.stack([f["observation.state"] for f in again]),
                                      np.stack([f["observation.state"] for f in frames]))
        clean, _ = rollout(env, seed=3, post_success_steps=2)
        np.testing.assert_array_equal(np.stack(env.executed), np.stack(env.expert))
        assert len(clean) != len(frames) or not np.array_equal(clean[5]["observation.state"],
                                                               frames[5]["observation.state"])
    finally:
        env.close()
    with pytest.raises(ValueError, match=r"action_noise: expected a std in \[0, 2\], got 3.0"):
        collect(CollectConfig(out="unused", tasks=["reach-v3"], action_noise=3.0, progress=False))


def test_collect_with_the_centred_reach_expert_records_its_actions(tmp_path):
    """``expert="centred"`` reaches the workers' envs: the recorded reach actions steer the gripper centre,
    not the hand, to the goal (a different action from Meta-World's on the same first frame)."""
    common = dict(tasks=["reach-v3"], episodes_per_task=1, image_size=32, progress=False,
                  post_success_steps=0)
    collect(CollectConfig(out=tmp_path / "stock", **common))
    collect(CollectConfig(out=tmp_path / "centred", expert="centred", **common))
    stock = DatasetReader(tmp_path / "stock").columns(["action"])["action"]
    centred = DatasetReader(tmp_path / "centred").columns(["action"])["action"]
    # the first frames are the same layout (seed 0); the centred expert puts the hand 4.5 cm higher, so that
    # the TCP below it lands on the goal: gain 5 x 0.045 m more upward speed, neither clipped here
    assert abs(centred[0, 2] - stock[0, 2] - 5 * 0.045) < 0.01, (centred[0], stock[0])
    # each episode's row says how it was made, and a resumed task must go on the same way
    made_by = DatasetReader(tmp_path / "centred").episodes[0].extras
    assert made_by == {"expert": "centred", "action_noise": 0.0}, made_by
    with pytest.raises(ValueError, match=r"reach-v3's episode 0 was recorded with expert='metaworld'; "
                                         r"this run has expert='centred': resume it with the same"):
        collect(CollectConfig(out=tmp_path / "stock", expert="centred", resume=True,
                              **{**common, "episodes_per_task": 2}))
    assert DatasetReader(tmp_path / "stock").num_episodes == 1  # nothing was added
    with pytest.raises(ValueError, match=r"expert: expected one of \('metaworld', 'centred'\) for Meta-World "
                                         r"tasks .*got 'tcp' for metaworld tasks"):
        collect(CollectConfig(out=tmp_path / "x", expert="tcp", **{**common, "tasks": ["reach-v3"]}))
    with pytest.raises(ValueError, match=r"got 'centred' for robosuite-panda tasks"):
        collect(CollectConfig(out=tmp_path / "y", expert="centred", **{**common, "tasks": ["lift-panda"]}))
