"""MetaWorldEnv: observation contract, upright images, the seed convention, snapshot and restore, experts,
derived tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from vlaforge.sim import metaworld as mwmod  # noqa: E402
from vlaforge.sim.metaworld import CAMERAS, MetaWorldEnv, instruction  # noqa: E402
from vlaforge.sim.mujoco_frames import TEXT_CHARSET  # noqa: E402

IMAGE_KEYS = ("observation.images.corner", "observation.images.topview")


@pytest.fixture(scope="module")
def drawer():
    env = MetaWorldEnv("drawer-open-v3", cameras=("corner", "topview"), image_size=64)
    yield env
    env.close()


@pytest.fixture(scope="module")
def reach_all_cams():
    env = MetaWorldEnv("reach-v3", cameras=CAMERAS, image_size=96)
    yield env
    env.close()


def _fresh_mt1(task: str, seed: int):
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make("Meta-World/MT1", env_name=task, seed=seed)
        obs, _ = env.reset()
    return env, obs


# ----------------------------------------------------------------------------- observation contract


def test_observation_spec_and_dtypes(drawer):
    obs, info = drawer.reset(seed=1)
    assert set(obs) == {*IMAGE_KEYS, "observation.state", "observation.environment_state", "task",
                        "embodiment"}
    for key in IMAGE_KEYS:
        assert obs[key].shape == (64, 64, 3) and obs[key].dtype == np.uint8
        assert obs[key].flags["C_CONTIGUOUS"]
    assert obs["observation.state"].shape == (4,) and obs["observation.state"].dtype == np.float32
    np.testing.assert_array_equal(obs["observation.state"], drawer.raw_obs[:4].astype(np.float32))
    assert drawer.raw_obs.shape == (39,)
    # environment state: the drawer handle's position (object 1), no second object, the goal
    env_state = obs["observation.environment_state"]
    assert env_state.shape == (9,) and env_state.dtype == np.float32
    raw = drawer.raw_obs
    np.testing.assert_array_equal(env_state,
                                  np.concatenate([raw[4:7], raw[11:14], raw[36:39]]).astype(np.float32))
    assert (np.all(env_state[3:6] == 0) and np.abs(env_state[:3]).max() > 0.05
            and np.abs(env_state[6:]).max() > 0.05)
    assert obs["task"] == instruction("drawer-open-v3") == "open the drawer"
    assert obs["embodiment"] == "sawyer"
    assert info["seed"] == 1
    assert drawer.observation_space.contains(obs)
    assert drawer.action_space.shape == (4,) and drawer.action_space.dtype == np.float32
    assert np.all(drawer.action_space.low == -1) and np.all(drawer.action_space.high == 1)


def test_step_contract(drawer):
    drawer.reset(seed=2)
    obs, reward, terminated, truncated, info = drawer.step(np.zeros(4, np.float32))
    assert drawer.observation_space.contains(obs)
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert isinstance(info["is_success"], bool) and info["is_success"] is False
    assert info["seed"] == 2 and info["task_name"] == "drawer-open-v3"


def test_every_task_sentence_fits_the_text_space():
    # the Text space's charset must accept every instruction in the catalogue
    from vlaforge.sim.instructions import all_tasks, instructions

    charset = set(TEXT_CHARSET)
    for task in all_tasks():
        for s in instructions(task):
            assert set(s) <= charset, (task, s, set(s) - charset)


def test_custom_instruction(drawer):
    env = MetaWorldEnv("drawer-open-v3", cameras=(), instruction="pull it open, please!")
    try:
        obs, _ = env.reset(seed=0)
        assert obs["task"] == "pull it open, please!"
        assert env.observation_space.contains(obs)
    finally:
        env.close()


def test_truncation_and_episode_errors():
    env = MetaWorldEnv("reach-v3", cameras=(), max_steps=3)
    try:
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(np.zeros(4))
        env.reset(seed=0)
        flags = [env.step(np.zeros(4))[3] for _ in range(3)]
        assert flags == [False, False, True]
        with pytest.raises(RuntimeError, match="truncated after max_steps=3"):
            env.step(np.zeros(4))
        env.reset(seed=0)
        assert env.steps == 0
        env.step(np.zeros(4))
    finally:
        env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(np.zeros(4))
    env.close()  # closing twice is fine


def test_wrong_actions_are_rejected_clearly(drawer):
    drawer.reset(seed=0)
    with pytest.raises(ValueError, match=r"action: expected shape \(4,\).*got \(7,\)"):
        drawer.step(np.zeros(7))
    with pytest.raises(ValueError, match=r"expected shape \(4,\).*got \(1, 4\)"):
        drawer.step(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="finite"):
        drawer.step(np.array([0.0, np.nan, 0.0, 0.0]))


def test_actions_are_clipped_to_the_box():
    env = MetaWorldEnv("reach-v3", cameras=())
    try:
        env.reset(seed=4)
        env.step(np.array([5.0, -3.0, 2.0, 7.0]))
        big = env.raw_obs
        env.reset(seed=4)
        env.step(np.array([1.0, -1.0, 1.0, 1.0]))
        np.testing.assert_array_equal(big, env.raw_obs)
    finally:
        env.close()


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="did you mean 'drawer-open-v3'"):
        MetaWorldEnv("drawer-opn-v3")
    with pytest.raises(ValueError, match="unknown camera 'front'"):
        MetaWorldEnv("reach-v3", cameras=("front",))
    with pytest.raises(ValueError, match="image_size"):
        MetaWorldEnv("reach-v3", image_size=0)


# ----------------------------------------------------------------------------- images


def test_images_are_not_blank_and_follow_the_scene(drawer):
    obs0, _ = drawer.reset(seed=0)
    for key in IMAGE_KEYS:
        img = obs0[key]
        assert img.std() > 20, key  # not a flat colour
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50, key
    assert not np.array_equal(obs0[IMAGE_KEYS[0]], obs0[IMAGE_KEYS[1]])
    for _ in range(15):  # the arm moves: the picture changes
        obs, *_ = drawer.step(np.array([0.0, 0.0, 1.0, 0.0]))
    assert np.abs(obs[IMAGE_KEYS[0]].astype(int) - obs0[IMAGE_KEYS[0]]).mean() > 0.5
    np.testing.assert_array_equal(drawer.render(), obs[IMAGE_KEYS[0]])


def _marker_centroid(env, cam, gid, point):
    env.mw_env.data.site_xpos[gid] = point
    img = env.render_camera(cam).astype(int)
    mask = (img[..., 1] > 100) & (img[..., 0] < 80) & (img[..., 2] < 80)
    assert mask.sum() > 5, f"{cam}: marker not visible at {point}"
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def _orientation(env, cam):
    """Move a green marker 4 cm 'up' and 4 cm 'right' as a person at the camera would see it
    (up = world +z, or away from the robot for cameras looking straight down) and return the
    marker's (row, col) shift for each: an upright, unmirrored image gives up -> row decreases,
    right -> column increases. Uses only the camera's physical pose, not its image axes."""
    model, data = env.mw_env.model, env.mw_env.data
    gid = model.site("goal").id
    model.site_rgba[gid] = (0, 1, 0, 1)
    model.site_size[gid] = 0.012
    i = model.camera(cam).id
    fwd = -data.cam_xmat[i].reshape(3, 3)[:, 2]
    ref = np.array([0.0, 0.0, 1.0]) if abs(fwd[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    up = ref - fwd * ref.dot(fwd)
    up /= np.linalg.norm(up)
    right = np.cross(fwd, up)
    p0 = data.cam_xpos[i] + (0.35 if model.cam_mode[i] == 0 else 0.15) * fwd
    r0, c0 = _marker_centroid(env, cam, gid, p0)
    ru, cu = _marker_centroid(env, cam, gid, p0 + 0.04 * up)
    rr, cr = _marker_centroid(env, cam, gid, p0 + 0.04 * right)
    return (ru - r0, cu - c0), (rr - r0, cr - c0)


@pytest.mark.parametrize("cam", CAMERAS)
def test_images_are_upright_and_not_mirrored(reach_all_cams, cam):
    reach_all_cams.reset(seed=0)
    (up_dr, up_dc), (right_dr, right_dc) = _orientation(reach_all_cams, cam)
    assert up_dr < -5 and abs(up_dc) < abs(up_dr) / 2, (cam, up_dr, up_dc)
    assert right_dc > 5 and abs(right_dr) < right_dc / 2, (cam, right_dr, right_dc)


def test_orientation_check_catches_an_unrotated_corner_camera(reach_all_cams, monkeypatch):
    # the cue above is sensitive: without the 180-degree turn the corner view is upside down
    reach_all_cams.reset(seed=0)
    monkeypatch.setattr(reach_all_cams._renderer, "rotate_180", frozenset())
    (up_dr, _), (_, right_dc) = _orientation(reach_all_cams, "corner")
    assert up_dr > 5 and right_dc < -5


# ----------------------------------------------------------------------------- seeds


def test_seeded_resets_repeat_and_differ(drawer):
    obs_a, _ = drawer.reset(seed=11)
    raw_a = drawer.raw_obs
    drawer.reset(seed=12)
    raw_b = drawer.raw_obs
    obs_c, _ = drawer.reset(seed=11)
    np.testing.assert_array_equal(raw_a, drawer.raw_obs)
    for key in IMAGE_KEYS:
        np.testing.assert_array_equal(obs_a[key], obs_c[key])
    assert not np.array_equal(raw_a[4:7], raw_b[4:7])  # the drawer moved


def test_unseeded_resets_follow_the_last_seed():
    a = MetaWorldEnv("push-v3", cameras=())
    b = MetaWorldEnv("push-v3", cameras=())
    try:
        a.reset(seed=5)
        b.reset(seed=5)
        seeds_a, seeds_b = [], []
        for _ in range(3):
            seeds_a.append(a.reset()[1]["seed"])
            seeds_b.append(b.reset()[1]["seed"])
            np.testing.assert_array_equal(a.raw_obs, b.raw_obs)
        assert seeds_a == seeds_b and len(set(seeds_a)) == 3
    finally:
        a.close()
        b.close()
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*32\)"):
        MetaWorldEnv("push-v3", cameras=()).reset(seed=-1)


@pytest.mark.filterwarnings("ignore:.*not within the observation space")  # the fresh MT1 env's checker
@pytest.mark.parametrize("task,seeds", [("pick-place-v3", (3, 0)), ("basketball-v3", (42, 9))])
def test_reset_equals_fresh_mt1_env(task, seeds):
    """Our convention: seed s is the layout of a fresh gym.make('Meta-World/MT1', seed=s) after
    its first reset(). The reused env must match it bit for bit, also while stepping, once the fresh env's
    kinematics are recomputed after its reset as ours are (``_refresh_after_reset``)."""
    import mujoco

    env = MetaWorldEnv(task, cameras=())
    try:
        env.reset(seed=123)  # history on the reused env must not matter
        for seed in seeds:
            ref, _ = _fresh_mt1(task, seed)
            mw = ref.unwrapped
            mujoco.mj_forward(mw.model, mw.data)
            mw._prev_obs = mw._get_curr_obs_combined_no_goal()
            ref_obs = mw._get_obs()
            env.reset(seed=seed)
            np.testing.assert_array_equal(env.mw_env._last_rand_vec, ref.unwrapped._last_rand_vec)
            np.testing.assert_array_equal(env.raw_obs, ref_obs)
            for _ in range(10):
                action = env.expert_action()
                ref_obs, ref_reward, *_ = ref.step(action)
                _, reward, *_ = env.step(action)
                assert reward == float(ref_reward)
            np.testing.assert_array_equal(env.raw_obs, ref_obs)
            ref.close()
    finally:
        env.close()


def test_reset_leaves_global_numpy_rng_alone(drawer):
    np.random.seed(0)
    expected = np.random.rand(3)
    np.random.seed(0)
    drawer.reset(seed=77)
    np.testing.assert_array_equal(np.random.rand(3), expected)


# ----------------------------------------------------------------------------- experts


def test_snapshot_and_restore_replay_the_same_steps_bit_exactly(drawer):
    obs, _ = drawer.reset(seed=5)
    for _ in range(6):
        obs, *_ = drawer.step(drawer.expert_action())
    snap = drawer.snapshot()
    steps = drawer.steps
    actions = [np.array([0.8, -0.5, 0.3, 1.0], np.float32), np.array([-1.0, 0.6, -0.2, -1.0], np.float32),
               drawer.expert_action(), np.array([0.1, 1.0, 1.0, 0.0], np.float32)]

    def play():
        out, raw = [], []
        for a in actions:
            out.append(drawer.step(a))
            raw.append(drawer.raw_obs)  # (39,): includes Meta-World's previous frame, kept on its Python side
        return [o for o, *_ in out], [info["metaworld"] for *_, info in out], raw

    first, infos, raw = play()
    assert not np.array_equal(first[-1]["observation.state"], obs["observation.state"])  # the arm moved
    drawer.restore(snap)
    assert drawer.steps == steps
    np.testing.assert_array_equal(drawer.raw_obs[:4].astype(np.float32), obs["observation.state"])
    again, infos_again, raw_again = play()
    for a, b in zip(first, again):  # the observations a policy sees: bit-identical
        for key in (*IMAGE_KEYS, "observation.state", "observation.environment_state"):
            np.testing.assert_array_equal(a[key], b[key])
    assert [i["success"] for i in infos] == [i["success"] for i in infos_again]
    # MuJoCo's derived quantities are recomputed on restore (mj_forward), so Meta-World's float64 state may
    # leave the uninterrupted path in the last bit; restoring again replays the restored path exactly
    np.testing.assert_allclose(np.stack(raw), np.stack(raw_again), rtol=0, atol=1e-12)
    drawer.restore(snap)
    np.testing.assert_array_equal(np.stack(raw_again), np.stack(play()[2]))
    drawer.reset(seed=6)
    with pytest.raises(ValueError, match=r"seed 5, the env is in seed 6: reset\(seed=5\) first"):
        drawer.restore(snap)
    with pytest.raises(TypeError, match="expected a MetaWorldSnapshot"):
        drawer.restore({"steps": 3})


def test_expert_action_is_the_clipped_metaworld_policy():
    from metaworld.policies import ENV_POLICY_MAP

    env = MetaWorldEnv("reach-v3", cameras=())
    try:
        env.reset(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ENV_POLICY_MAP["reach-v3"]().get_action(env.raw_obs)
        action = env.expert_action()
    finally:
        env.close()
    assert action.dtype == np.float32 and action.shape == (4,)
    assert np.abs(raw).max() > 1  # the raw P-controller exceeds the box here
    np.testing.assert_array_equal(action, np.clip(raw, -1, 1).astype(np.float32))


def _park(env, seed, steps=120):
    """Run the expert ``steps`` steps from ``seed``: the hand-goal and TCP-goal distances at the end, and
    success then."""
    obs, _ = env.reset(seed=seed)
    goal = obs["observation.environment_state"][6:9].astype(np.float64)
    for _ in range(steps):
        obs, _, _, _, info = env.step(env.expert_action())
    hand = obs["observation.state"][:3].astype(np.float64)
    return np.linalg.norm(hand - goal), np.linalg.norm(env._mw.tcp_center - goal), info["is_success"]


@pytest.mark.parametrize("task", ["reach-v3", "reach-goal-v3"])
def test_the_centred_reach_expert_parks_the_gripper_centre_on_the_goal_not_at_the_edge(task):
    """Meta-World's reach expert drives the hand, 4.5 cm above the gripper centre (TCP) that success
    measures, onto the goal: it ends 0.45 cm inside the 5 cm radius. ``expert="centred"`` ends with the TCP
    on the goal."""
    stock, centred = MetaWorldEnv(task, cameras=()), MetaWorldEnv(task, cameras=(), expert="centred")
    try:
        for seed in (0, 1, 2):
            hand, tcp, ok = _park(stock, seed)
            assert ok and hand < 0.01 and 0.04 < tcp < 0.05, (seed, hand, tcp)
            hand, tcp, ok = _park(centred, seed)
            assert ok and tcp < 0.01 and 0.04 < hand < 0.05, (seed, hand, tcp)
    finally:
        stock.close()
        centred.close()
    with pytest.raises(ValueError, match=r"expert: expected one of \('metaworld', 'centred'\), got 'tcp'"):
        MetaWorldEnv("reach-v3", cameras=(), expert="tcp")


def test_the_centred_expert_leaves_other_tasks_alone():
    stock = MetaWorldEnv("push-v3", cameras=())
    centred = MetaWorldEnv("push-v3", cameras=(), expert="centred")
    try:
        stock.reset(seed=4)
        centred.reset(seed=4)
        for _ in range(20):
            a = stock.expert_action()
            np.testing.assert_array_equal(a, centred.expert_action())
            stock.step(a)
            centred.step(a)
    finally:
        stock.close()
        centred.close()


@pytest.mark.parametrize("task", ["drawer-close-v3", "button-press-topdown-v3"])
def test_expert_succeeds(task):
    env = MetaWorldEnv(task, cameras=(), max_steps=200)
    try:
        for seed in (0, 1):
            env.reset(seed=seed)
            success = False
            while not success:
                _, _, _, truncated, info = env.step(env.expert_action())
                success = info["is_success"]
                if truncated:
                    break
            assert success, (task, seed)
    finally:
        env.close()


# ----------------------------------------------------------------------------- derived reach tasks


def _rollout(env, seed, tests):
    """Run env's expert from ``seed``; for each named test, whether it held at some step."""
    env.reset(seed=seed)
    held = dict.fromkeys(tests, False)
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(env.expert_action())
        for name, test in tests.items():
            held[name] = held[name] or test(env, info["metaworld"])
        if all(held.values()):
            break
    return held


def test_derived_tasks_share_the_base_scene():
    base = MetaWorldEnv("reach-v3", cameras=())
    goal = MetaWorldEnv("reach-goal-v3", cameras=())
    puck = MetaWorldEnv("reach-puck-v3", cameras=())
    try:
        for seed in (0, 5):
            obs = [e.reset(seed=seed)[0] for e in (base, goal, puck)]
            np.testing.assert_array_equal(base.raw_obs, goal.raw_obs)
            np.testing.assert_array_equal(base.raw_obs, puck.raw_obs)
        assert [o["task"] for o in obs] == [instruction(t)
                                            for t in ("reach-v3", "reach-goal-v3", "reach-puck-v3")]
        ref, ref_obs = _fresh_mt1("reach-v3", 5)
        np.testing.assert_array_equal(puck.raw_obs, ref_obs)
        ref.close()
    finally:
        for e in (base, goal, puck):
            e.close()


def test_reach_puck_success_is_touching_the_puck():
    env = MetaWorldEnv("reach-puck-v3", cameras=(), max_steps=100)
    try:
        env.reset(seed=0)
        mw = env.mw_env
        start = np.linalg.norm(mw.tcp_center - mw.get_body_com("obj"))
        _, _, _, _, info = env.step(np.zeros(4))
        assert start > 0.1 and info["is_success"] is False
        while not info["is_success"]:
            _, _, _, truncated, info = env.step(env.expert_action())
            assert not truncated
        assert np.linalg.norm(mw.tcp_center - mw.get_body_com("obj")) < mwmod.PUCK_TOUCH_RADIUS
        env.reset(seed=0)
        up = [env.step(np.array([0.0, 0.0, 1.0, 0.0]))[4]["is_success"] for _ in range(20)]
        assert not any(up)  # moving away never counts
    finally:
        env.close()


def test_reach_experts_succeed_and_do_not_solve_each_other():
    seeds = range(5)
    goal_test, puck_test = mwmod.success_test("reach-goal-v3"), mwmod.success_test("reach-puck-v3")
    for task, own, other in (("reach-goal-v3", goal_test, puck_test),
                             ("reach-puck-v3", puck_test, goal_test)):
        env = MetaWorldEnv(task, cameras=(), max_steps=150)
        try:
            results = [_rollout(env, s, {"own": own, "other": other}) for s in seeds]
        finally:
            env.close()
        assert sum(r["own"] for r in results) >= 4, (task, results)
        assert sum(r["other"] for r in results) <= 1, (task, results)


def test_register_derived_task_rejects_duplicates_and_unknown_names():
    spec = mwmod.derived_tasks()["reach-puck-v3"]
    with pytest.raises(ValueError, match="already registered"):
        mwmod.register_derived_task(spec)
    ghost = mwmod.DerivedTask("reach-ghost-v3", "reach-v3", spec.success, spec.expert)
    with pytest.raises(ValueError, match="pass sentences"):
        mwmod.register_derived_task(ghost)


# ----------------------------------------------------------------------------- imports, rendering setup


def test_imports_stay_light_and_egl_is_the_default():
    code = (
        "import os, sys; os.environ.pop('MUJOCO_GL', None)\n"
        "import vlaforge.sim, vlaforge.sim.instructions\n"
        "assert not {'mujoco', 'metaworld', 'gymnasium', 'torch'} & set(sys.modules), sys.modules.keys()\n"
        "import vlaforge.sim.metaworld\n"
        "assert not {'mujoco', 'metaworld', 'torch'} & set(sys.modules)\n"
        "print(os.environ['MUJOCO_GL'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "egl"
    env = dict(os.environ, MUJOCO_GL="osmesa")
    code = "import os, vlaforge.sim.metaworld; print(os.environ['MUJOCO_GL'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         check=False)
    assert out.stdout.strip() == "osmesa"  # the user's choice wins


def test_fast_render_settings_and_close():
    env = MetaWorldEnv("reach-v3", cameras=("corner",), image_size=32)
    env.reset(seed=0)
    model = env.mw_env.model
    assert not model.light_castshadow.any() and model.vis.quality.offsamples == 0
    renderer = env._renderer._renderer  # the MuJoCo renderer, made on the first frame
    assert renderer is not None
    env.step(np.zeros(4))
    assert env._renderer._renderer is renderer  # one renderer, reused
    env.close()
    assert env._renderer is None and env.mw_env is None


def test_the_first_frame_shows_the_reset_layout():
    """window-close-v3's reset moves the sash after Meta-World's last kinematics pass: without the refresh,
    the first image and state show it 0.2 m away from where it is (issue 18)."""
    import mujoco

    env = MetaWorldEnv("window-close-v3", cameras=("corner",), image_size=48)
    try:
        obs, _ = env.reset(seed=3)
        first_raw, first_image = env.raw_obs.copy(), obs["observation.images.corner"]
        mw = env.mw_env
        mujoco.mj_forward(mw.model, mw.data)
        np.testing.assert_array_equal(first_raw[:18], mw._get_curr_obs_combined_no_goal())
        np.testing.assert_array_equal(first_image, env.render_camera("corner"))
    finally:
        env.close()


def test_scripted_action_plays_any_tasks_expert_on_this_scene():
    env = MetaWorldEnv("window-open-v3", cameras=(), max_steps=10)
    try:
        env.reset(seed=2)
        np.testing.assert_array_equal(env.scripted_action(), env.base_expert_action())
        from metaworld.policies import ENV_POLICY_MAP

        np.testing.assert_array_equal(env.scripted_action("window-close-v3"),
                                      ENV_POLICY_MAP["window-close-v3"]().get_action(env.raw_obs))
        with pytest.raises(ValueError, match="expected a Meta-World task with a scripted policy, got 'nope'"):
            env.scripted_action("nope")
    finally:
        env.close()


@pytest.mark.parametrize("task", ["window-open-done-v3", "drawer-close-done-v3"])
def test_already_done_tasks_start_part_way_with_the_hand_moved_and_the_object_left_alone(task):
    scene, told = mwmod.DONE_TASKS[task]
    plain, env = MetaWorldEnv(scene, cameras=(), max_steps=60), MetaWorldEnv(task, cameras=(), max_steps=60)
    try:
        moved = []
        for seed in range(8):
            plain.reset(seed=seed)
            env.reset(seed=seed)
            assert env.steps == 0
            first = env.raw_obs
            # the layout is the scene's; the hand has moved (or not, for a start of 0 steps)
            np.testing.assert_allclose(first[36:39], plain.raw_obs[36:39])
            moved.append(float(np.linalg.norm(first[:3] - plain.raw_obs[:3])))
            assert np.linalg.norm(first[4:7] - plain.raw_obs[4:7]) < mwmod.START_MOVE
            for _ in range(mwmod.HOLD_STEPS):  # holding from there leaves the object where it was
                env.step(env.expert_action())
            assert np.linalg.norm(env.raw_obs[4:7] - first[4:7]) < 0.006
            env.reset(seed=seed)  # the same seed, the same start
            np.testing.assert_array_equal(env.raw_obs, first)
        assert sum(m > 0.05 for m in moved) >= 5, moved  # most starts are well off the start pose
    finally:
        plain.close()
        env.close()


@pytest.mark.parametrize("task", sorted(mwmod.DONE_TASKS))
def test_already_done_tasks_hold_still_under_the_other_tasks_instruction(task):
    scene, told = mwmod.DONE_TASKS[task]
    env = MetaWorldEnv(task, cameras=(), max_steps=200)
    try:
        obs, _ = env.reset(seed=1)
        assert env.base_task == scene and obs["task"] == instruction(told) != instruction(scene)
        start = env.raw_obs[4:7]
        held = [env.step(env.expert_action())[4]["is_success"] for _ in range(mwmod.HOLD_STEPS)]
        assert held == [False] * (mwmod.HOLD_STEPS - 1) + [True]  # success once held HOLD_STEPS steps
        assert np.abs(env.raw_obs[4:7] - start).max() < 0.01  # the handle stayed (a drawer settles ~4 mm)
        # once the scene's own task is done (by its expert), holding on is no success
        env.reset(seed=1)
        for _ in range(200):
            _, _, _, _, info = env.step(np.clip(env.base_expert_action(), -1, 1))
            if info["metaworld"]["success"]:
                break
        assert info["metaworld"]["success"] and env.steps >= mwmod.HOLD_STEPS and not info["is_success"]
        assert not any(env.step(np.zeros(4))[4]["is_success"] for _ in range(5))
    finally:
        env.close()
