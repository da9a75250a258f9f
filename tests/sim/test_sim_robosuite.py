"""robosuite as a vlaforge simulator: our seed convention against a fresh robosuite env, the declared keys and
shapes of every task's observations, upright images, the scripted experts on a fixed seed, and collection
into a dataset of the robot's own sizes. (The registry-wide checks are in tests/test_contracts.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.sim import SIMULATORS, simulator_for_task
from vlaforge.sim.robosuite import RobosuiteEnv, _make
from vlaforge.sim.robosuite_tasks import CATALOGUES, find_task

TASKS = [t for c in CATALOGUES.values() for t in c.all_tasks()]


def test_reset_by_seed_is_the_layout_of_a_fresh_robosuite_env():
    env = RobosuiteEnv("stack-panda", cameras=())
    try:
        _, task = find_task("stack-panda")
        for seed in (3, 11):
            fresh = _make(task, seed=seed)
            want = fresh.reset()
            fresh.close()
            env.reset(seed=seed + 1)  # another layout in between
            env.reset(seed=seed)
            got = env.raw_obs
            for key in ("cubeA_pos", "cubeB_pos", "robot0_joint_pos", "robot0_eef_pos"):
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"seed {seed}: {key}")
    finally:
        env.close()


CAMS = ("agentview", "robot0_eye_in_hand")


@pytest.fixture(scope="module")
def envs():
    """One env per task for the module (building one costs ~2 s): two cameras at 32 px."""
    made = {t: simulator_for_task(t).make_env(t, cameras=CAMS, image_size=32) for t in TASKS}
    yield made
    for env in made.values():
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_observes_its_robots_declared_sizes(envs, task):
    sim = simulator_for_task(task)
    cams, env = CAMS, envs[task]
    env.max_steps = 3
    try:
        obs, info = env.reset(seed=0)
        assert info["seed"] == 0 and obs["embodiment"] == sim.embodiment
        assert obs["task"] == sim.instructions(task)[0]
        state = obs["observation.state"]
        assert state.shape == (sim.state_dim,) and state.dtype == np.float32
        assert obs["observation.environment_state"].shape == (9,)
        assert np.abs(obs["observation.environment_state"][:3]).sum() > 0, "the first object's position"
        for c in cams:
            assert obs[f"observation.images.{c}"].shape == (32, 32, 3)
        assert env.action_space.shape == (sim.action_dim,)
        with pytest.raises(ValueError, match=rf"action: expected shape \({sim.action_dim},\)"):
            env.step(np.zeros(sim.action_dim + 1, np.float32))
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(np.zeros(sim.action_dim, np.float32))
        assert truncated and not terminated and isinstance(info["is_success"], bool)
        with pytest.raises(RuntimeError, match="truncated after max_steps=3"):
            env.step(np.zeros(sim.action_dim, np.float32))
    finally:
        env.max_steps = find_task(task)[1].max_steps


def test_images_are_upright():
    """agentview looks at the table from the front: the bright table fills the bottom of an upright frame,
    the darker wall and robot the top; the wrist camera sees the table beyond the fingers (bright top, the
    gripper's dark fingers at the bottom)."""
    env = RobosuiteEnv("lift-panda", cameras=("agentview", "robot0_eye_in_hand"), image_size=64)
    try:
        obs, _ = env.reset(seed=0)
        front = obs["observation.images.agentview"].mean(axis=(1, 2))  # per row
        wrist = obs["observation.images.robot0_eye_in_hand"].mean(axis=(1, 2))
        assert front[-16:].mean() > front[:16].mean() + 20, front
        assert wrist[:16].mean() > wrist[-8:].mean() + 50, wrist
    finally:
        env.close()


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task 'lift-pand'; did you mean 'lift-panda'"):
        simulator_for_task("lift-pand")
    with pytest.raises(ValueError, match="unknown camera 'robot1_eye_in_hand' for lift-panda"):
        RobosuiteEnv("lift-panda", cameras=("robot1_eye_in_hand",))


@pytest.mark.parametrize("task", TASKS)
def test_each_expert_succeeds_on_a_fixed_seed(envs, task):
    env = envs[task]
    env.reset(seed=0)
    success = False
    for _ in range(env.max_steps):
        action = env.expert_action()
        assert np.abs(action).max() <= 1.0
        success = env.step(action)[4]["is_success"]
        if success:
            break
    assert success, f"{task}: the expert did not succeed within {env.max_steps} steps on seed 0"


def test_collect_records_the_robots_own_sizes(tmp_path):
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.data.reader import DatasetReader

    out = tmp_path / "lift"
    summary = collect(CollectConfig(out=out, tasks=["lift-panda"], episodes_per_task=2, image_size=32,
                                    cameras=("agentview", "robot0_eye_in_hand"), progress=False))
    assert summary.per_task["lift-panda"].kept == 2
    reader = DatasetReader(out)
    spec = SIMULATORS.get("robosuite-panda")
    assert reader.robot_type == "panda" and reader.fps == 20
    assert reader.info["features"]["observation.state"]["shape"] == [spec.state_dim]
    assert reader.info["features"]["action"]["shape"] == [spec.action_dim]
    assert reader.info["features"]["action"]["names"] == list(spec.names()[1])
    with pytest.raises(ValueError, match="one dataset holds one robot"):
        collect(CollectConfig(out=tmp_path / "mixed", tasks=["lift-panda", "lift-ur5e"], progress=False))
    with pytest.raises(ValueError, match="robosuite-panda has no camera \\['corner'\\]"):
        collect(CollectConfig(out=tmp_path / "cam", tasks=["lift-panda"], progress=False))
