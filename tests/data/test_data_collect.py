"""vlaforge collect (scripted Meta-World expert) and vlaforge dataset info."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from vlaforge.cli import app
from vlaforge.data.collect import CollectConfig, collect
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
    res = CliRunner().invoke(app, ["dataset", "info", str(root)])
    assert res.exit_code == 2 and "meta/info.json is missing" in res.output
