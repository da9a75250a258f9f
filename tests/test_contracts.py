"""The contracts every registered head and simulator keeps, parametrized over the registries themselves
(``vlaforge.config.HEADS``, ``vlaforge.sim.SIMULATORS``): a new head or simulator gets these checks by being
registered, never by being added to a list here.

Heads: the registry entry matches its class; the loss is finite and reaches every parameter; sample and
predict shapes; padded steps never contribute; save/load is bit-exact; every confidence method it lists works
and ``auto`` picks the first. Simulators: reset by seed repeats the layout, step returns the documented keys,
the expert acts inside the action box, snapshot / restore returns to the same moment (the same actions then
give the same observations), the compatibility check accepts a matching policy, rejects a mismatch.
"""

from __future__ import annotations

import dataclasses
import os
import typing

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from tests.conftest import uniform_stats  # noqa: E402
from vlaforge import presets, synthetic  # noqa: E402
from vlaforge.config import HEADS, EmbodimentSpec, PolicyConfig, head_names  # noqa: E402
from vlaforge.policy import Policy  # noqa: E402
from vlaforge.sim import SIMULATORS  # noqa: E402

HEAD_NAMES = head_names()
SIM_NAMES = SIMULATORS.names()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny policy is faster and steadier on one thread on a shared machine
    yield
    torch.set_num_threads(n)


def tiny_policy(head: str, seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    return Policy(presets.get("tiny").replace(head=head), {"sawyer": uniform_stats(4, 4)})


def frame(size: int = 64) -> dict:
    return {"observation.images.corner": np.full((size, size, 3), 100, np.uint8),
            "observation.state": np.zeros(4, np.float32), "task": "trace the upper curve"}


def batch_for(cfg: PolicyConfig, n: int = 6, seed: int = 0) -> dict:
    return synthetic.make_batch(n, cfg.chunk_size, 4, 4, cfg.image_size, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------------ names


def test_the_command_line_lists_what_the_registries_hold():
    from tests.test_cli import run_cli
    from vlaforge.training.recipe import preset_names

    code, out, _ = run_cli(["presets"])
    assert code == 0 and out.split() == presets.names()
    code, out, _ = run_cli(["train", "--list-presets"])
    assert code == 0 and [line.split()[0] for line in out.splitlines() if line.strip()] == preset_names()
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0 and f"--policy.head  {{{','.join(HEAD_NAMES)}}} = flow" in out
    help_text = " ".join(out.split())
    for name in HEAD_NAMES:
        assert f"{name}: {HEADS.doc(name)}" in help_text
    policy_preset_line = next(line for line in out.splitlines() if line.strip().startswith("--policy-preset"))
    assert policy_preset_line.endswith(f"({', '.join(presets.names())})")


# ------------------------------------------------------------------------------------------------ heads


def test_the_head_choices_are_the_registry():
    assert HEAD_NAMES and len(set(HEAD_NAMES)) == len(HEAD_NAMES)
    assert typing.get_args(typing.get_type_hints(PolicyConfig)["head"]) == HEAD_NAMES  # CLI parsing and help
    with pytest.raises(ValueError, match=r"PolicyConfig.head: expected one of"):
        PolicyConfig(head="flw")
    from vlaforge.models.heads import make_head

    with pytest.raises(ValueError, match=r"unknown head 'flw'; did you mean 'flow'\?"):
        make_head("flw", 8, 4, 4, [-1] * 4, [1] * 4, presets.get("tiny"))


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_registry_entry_matches_its_class(head):
    from vlaforge.models.heads import head_class
    from vlaforge.models.heads.base import ActionHead
    from vlaforge.online.confidence import METHODS

    spec = HEADS.get(head)
    assert spec.name == head and spec.doc
    assert spec.cls.startswith("vlaforge.models.heads.")  # loaded by models (layer 1), never above
    cls = head_class(head)
    assert isinstance(cls, type) and issubclass(cls, ActionHead) and cls is not ActionHead
    assert cls.name == head, f"{spec.cls} declares name {cls.name!r}, registered as {head!r}"
    assert spec.confidence and set(spec.confidence) <= set(METHODS) - {"auto"}
    assert "tta" in spec.confidence  # test-time augmentation applies to every head
    own = PolicyConfig().settings(head)  # the head's own settings, under policy.head_settings.<head>
    if spec.settings is None:
        assert own is None and not spec.flat
    else:
        assert dataclasses.is_dataclass(spec.settings) and isinstance(own, spec.settings)
        assert set(spec.flat.values()) <= {f.name for f in dataclasses.fields(spec.settings)}


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_loss_is_finite_and_reaches_every_parameter_and_shapes_hold(head):
    policy = tiny_policy(head)
    cfg = policy.config
    loss, info = policy.compute_loss(batch_for(cfg))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(info) == {"loss", "loss/sawyer"} and all(isinstance(v, float) for v in info.values())
    loss.backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    chunk = policy.predict_chunk(frame())
    assert chunk.shape == (cfg.chunk_size, 4) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    samples = policy.sample_chunks(frame(), n=5)
    assert samples.shape == (5, cfg.chunk_size, 4) and np.isfinite(samples).all()
    if HEADS.get(head).confidence == ("tta",):  # a deterministic head: only augmentation tells it apart
        assert (samples == samples[0]).all(), "a deterministic head gave different chunks"
    else:
        assert samples.std(0).max() > 0, "a head that samples gave five identical chunks"
    assert policy.heads["sawyer"].sampling_steps >= 1


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_padded_steps_never_contribute(head):
    policy = tiny_policy(head)
    batch = batch_for(policy.config)
    batch["action_is_pad"][:, 5:] = True
    torch.manual_seed(1)
    a, _ = policy.compute_loss(batch)
    changed = dict(batch, action=batch["action"].copy())
    changed["action"][:, 5:] = 1e3  # garbage past the episode end
    torch.manual_seed(1)
    b, _ = policy.compute_loss(changed)
    assert torch.equal(a, b)
    changed["action"][:, 2] += 0.5  # a real step does matter
    torch.manual_seed(1)
    c, _ = policy.compute_loss(changed)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_save_load_round_trip_is_bit_identical(tmp_path, head):
    policy = tiny_policy(head)
    with torch.no_grad():  # make the normalization matter
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    policy.save(tmp_path / "ckpt")
    assert sorted(f.name for f in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors",
                                                                     "norm_stats.json"]
    loaded = Policy.load(tmp_path / "ckpt")
    assert loaded.config == policy.config
    obs = frame()
    a = policy.predict_chunk(obs, generator=torch.Generator().manual_seed(7))
    b = loaded.predict_chunk(obs, generator=torch.Generator().manual_seed(7))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    sa = policy.sample_chunks(obs, 4, generator=torch.Generator().manual_seed(3))
    sb = loaded.sample_chunks(obs, 4, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(sa, sb)
    # saving over an existing checkpoint replaces it whole
    loaded.save(tmp_path / "ckpt")
    again = Policy.load(tmp_path / "ckpt")
    assert np.array_equal(again.predict_chunk(obs, torch.Generator().manual_seed(7)), a)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_confidence_methods_of_the_head(head):
    from vlaforge.online.confidence import METHODS, ConfidenceEstimator, ConfidenceNotSupported

    policy = tiny_policy(head).eval()
    spec = HEADS.get(head)
    assert ConfidenceEstimator(policy, n_samples=3).method == spec.confidence[0]  # method="auto"
    obs = dict(frame(), embodiment="sawyer")
    for method in spec.confidence:
        c = ConfidenceEstimator(policy, n_samples=3, method=method, density=False).estimate(obs)
        assert c.method == method and 0.0 <= c.score <= 1.0 and np.isfinite(c.disagreement), (method, c)
        assert c.proceed  # an uncalibrated estimator never stops the robot
        assert c.mean_chunk.shape == (policy.config.chunk_size, 4) and np.isfinite(c.mean_chunk).all()
    for method in set(METHODS) - {"auto", *spec.confidence}:
        with pytest.raises(ConfidenceNotSupported, match=f"use '{spec.confidence[0]}'"):
            ConfidenceEstimator(policy, n_samples=3, method=method)


# ------------------------------------------------------------------------------------------------ simulators


@pytest.fixture(scope="module", params=SIM_NAMES)
def sim_env(request):
    spec = SIMULATORS.get(request.param)
    task = spec.tasks()[0]
    env = spec.make_env(task, cameras=spec.cameras[:1], image_size=32, max_steps=20)
    yield spec, task, env
    env.close()


def test_simulator_entries_are_light_and_complete():
    for name in SIM_NAMES:
        spec = SIMULATORS.get(name)
        assert spec.name == name and spec.doc and spec.env.startswith("vlaforge.sim.")
        assert spec.cameras and spec.state_dim > 0 and spec.action_dim > 0
        state_names, action_names, env_names = spec.names()  # what a dataset calls each dimension
        assert (len(state_names), len(action_names)) == (spec.state_dim, spec.action_dim)
        assert len(set(state_names)) == spec.state_dim and len(set(action_names)) == spec.action_dim
        tasks = spec.tasks()
        assert tasks and len(set(tasks)) == len(tasks)
        assert spec.resolve_tasks(tasks[0]) == [tasks[0]] and spec.instructions(tasks[0])[0].strip()
    with pytest.raises(KeyError, match=r"unknown simulator 'metaword'; did you mean 'metaworld'\?"):
        SIMULATORS.get("metaword")


def _assert_same_frame(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_reset_by_seed_repeats_the_layout(sim_env):
    spec, task, env = sim_env
    first, _ = env.reset(seed=3)
    env.reset(seed=4)
    other, _ = env.reset(seed=5)
    again, _ = env.reset(seed=3)
    _assert_same_frame(first, again)
    assert any(isinstance(v, np.ndarray) and not np.array_equal(v, other[k]) for k, v in first.items()), \
        "seeds 3 and 5 gave the same layout"


def test_step_returns_the_documented_keys(sim_env):
    spec, task, env = sim_env
    obs, info = env.reset(seed=0)
    image = f"observation.images.{spec.cameras[0]}"
    assert {image, "observation.state", "task", "embodiment"} <= set(obs)
    assert obs[image].shape == (32, 32, 3) and obs[image].dtype == np.uint8
    state = obs["observation.state"]
    assert state.shape == (spec.state_dim,) and state.dtype == np.float32
    assert obs["embodiment"] == spec.embodiment and obs["task"] == spec.instructions(task)[0]
    assert env.action_space.shape == (spec.action_dim,)
    obs, reward, terminated, truncated, info = env.step(np.zeros(spec.action_dim, np.float32))
    assert {image, "observation.state", "task", "embodiment"} <= set(obs)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info["is_success"], bool)


def test_the_expert_acts_inside_the_action_box(sim_env):
    spec, task, env = sim_env
    if not spec.expert:
        pytest.skip(f"{spec.name} registers no scripted expert")
    env.reset(seed=1)
    for _ in range(5):
        action = env.expert_action()
        assert action.shape == (spec.action_dim,) and action.dtype == np.float32
        assert np.isfinite(action).all() and np.abs(action).max() <= 1.0
        env.step(action)


def test_restore_returns_to_the_snapshot(sim_env):
    spec, task, env = sim_env
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (6, spec.action_dim)).astype(np.float32)
    env.reset(seed=2)
    for a in actions[:3]:
        env.step(a)
    snap = env.snapshot()
    first = [env.step(a)[0] for a in actions[3:]]
    env.restore(snap)
    again = [env.step(a)[0] for a in actions[3:]]
    for a, b in zip(first, again):
        _assert_same_frame(a, b)
    assert not np.array_equal(first[0]["observation.state"], first[-1]["observation.state"]), "nothing moved"


@pytest.mark.parametrize("name", SIM_NAMES)
def test_the_compatibility_check_accepts_a_matching_policy(name):
    from vlaforge.evaluation.rollout import IncompatibleCheckpoint, check_compatible

    spec = SIMULATORS.get(name)
    robot = EmbodimentSpec(spec.state_dim, spec.action_dim)
    matching = presets.get("tiny").replace(cameras=spec.cameras[:1], embodiments={spec.embodiment: robot})
    tasks = spec.tasks()[:1]
    check_compatible(matching, tasks)
    bigger = EmbodimentSpec(spec.state_dim, spec.action_dim + 1)
    wrong = matching.replace(embodiments={spec.embodiment: bigger})
    with pytest.raises(IncompatibleCheckpoint):
        check_compatible(wrong, tasks)
