"""deploy-sim in Meta-World: each injected fault ends in the right status; the simulator snapshot behind the
expert's corrections is exact; the corrections mode records and adapts; the CLI command runs."""

import json

import numpy as np
import pytest
import torch

from vlaforge import presets, synthetic
from vlaforge.apps.deploy_sim import DeploySimConfig, expert_rollout, run_deploy_sim
from vlaforge.policy import Policy

TASK = "reach-v3"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = presets.get("tiny")  # 64 px corner camera, sawyer 4 / 4: runs in Meta-World (untrained: for faults)
    path = tmp_path_factory.mktemp("deploy") / "ckpt"
    Policy(cfg, {"sawyer": synthetic.stats_for(cfg.chunk_size, 4, 4)}).save(path)
    return path


def run(checkpoint, tmp_path, **kw):
    cfg = dict(checkpoint=str(checkpoint), task=TASK, episodes=1, max_steps=30, inject_step=8,
               max_chunk_age_s=5.0, out=str(tmp_path / "out"), progress=False,
               bf16=False)  # fp32 everywhere: the same actions on every CPU, whatever a probe decided
    cfg.update(kw)
    return run_deploy_sim(DeploySimConfig(**cfg))


def test_nan_chunk_is_held_and_the_policy_takes_over_again(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("nan",))
    ep = result["episodes"][0]
    assert ep["faults"] and ep["faults"][0]["kind"] == "nan"
    assert ep["hold_reasons"].get("non_finite", 0) >= 1 and ep["statuses"]["HOLD"] >= 1
    # the policy drives again (CONSERVATIVE would be the monitor's drift alarm: also the policy driving), and
    # no NaN ever reached env.step (it raises on non-finite actions)
    assert ep["final_status"] in ("OK", "CONSERVATIVE") and ep["steps"] == 30
    assert result["monitor"]["shift"]["action"]["non_finite"] >= 1
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text())["episodes"][0]["hold_reasons"] == ep["hold_reasons"]
    assert json.loads((out / "monitor_report.json").read_text())["steps"] == 30
    assert (out / "monitor.png").stat().st_size > 1000


def test_force_spike_latches_the_emergency_stop(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("force",), episodes=2)
    for ep in result["episodes"]:
        assert ep["final_status"] == "ESTOP" and ep["steps"] == 8 + 1  # stopped at the spike
        assert ep["statuses"] == {"OK": 8, "ESTOP": 1}  # the next episode started after the operator's reset
        assert ep["operator_reset"] and "estop" in ep["safety_reasons"]


@pytest.mark.parametrize("strategy", ["recycle", "async"])
def test_slow_inference_holds_instead_of_playing_a_stale_chunk(checkpoint, tmp_path, strategy):
    result = run(checkpoint, tmp_path, inject=("slow",), strategy=strategy, max_chunk_age_s=0.3, slow_s=0.8)
    ep = result["episodes"][0]
    assert ep["faults"][0]["kind"] == "slow"
    assert ep["hold_reasons"].get("stale", 0) >= 1
    assert "ESTOP" not in ep["statuses"]
    assert ep["statuses"].get("OK", 0) + ep["statuses"].get("CONSERVATIVE", 0) > 8  # before and after


def test_snapshot_rollout_is_exact_and_leaves_the_env_untouched():
    from vlaforge.sim.metaworld import MetaWorldEnv

    env = MetaWorldEnv("pick-place-v3", cameras=("corner",), image_size=64, max_steps=40)
    try:
        obs, _ = env.reset(seed=3)
        for _ in range(10):
            obs, *_ = env.step(env.expert_action())
        raw, steps = env.raw_obs, env.steps
        actions, frames = expert_rollout(env, obs, horizon=8)
        assert actions.shape == (8, 4) and len(frames) == 8 and frames[0] is obs
        np.testing.assert_array_equal(env.raw_obs, raw)
        assert env.steps == steps
        for k in range(8):  # playing the chunk for real reproduces the rolled-out path
            key = "observation.images.corner"
            np.testing.assert_array_equal(frames[k][key], obs[key])
            np.testing.assert_array_equal(env.expert_action(), actions[k])
            obs, *_ = env.step(actions[k])
        snap = env.snapshot()
        a, _ = expert_rollout(env, obs, horizon=100)
        assert len(a) == 40 - env.steps  # never past the episode's step limit
        env.restore(snap)
    finally:
        env.close()


def test_corrections_mode_records_and_adapts(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, corrections=True, correction_threshold=0.0, adapt_every=2,
                 adapt_steps=2, max_steps=30)
    ep = result["episodes"][0]
    assert ep["corrections"] >= 2 and ep["statuses"].get("LOW_CONFIDENCE", 0) >= 8
    assert ep["adaptation"]["version"] == 1 and result["adapter_version"] == 1
    out = tmp_path / "out"
    assert (out / "versions" / "v0001.safetensors").is_file()
    from vlaforge.data import DatasetReader

    reader = DatasetReader(out / "corrections")
    assert reader.num_episodes == ep["corrections"]


def test_cli_deploy_sim(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from vlaforge.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["deploy-sim", "--checkpoint", str(checkpoint), "--task", TASK,
                                   "--episodes", "1", "--max-steps", "12", "--inject", "force",
                                   "--inject-step", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "ESTOP" in res.output and (out / "summary.json").is_file()
    from tests.test_cli import run_cli

    code, _, err = run_cli(["deploy-sim", "--checkpoint", str(checkpoint), "--task", TASK, "--inject",
                            "smoke", "--out", str(out)])
    assert code == 2 and err == ("error: inject: expected any of ('nan', 'force', 'slow', 'push', 'stuck', "
                                 "'outage'), got ['smoke']\n")


def test_a_push_is_noticed_and_replanned_and_a_calm_run_is_left_alone(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("push",), fault_steps=20, max_steps=100, recovery=True,
                 stop_on_success=False)
    ep = result["episodes"][0]
    assert ep["faults"] == [{"kind": "push", "step": 8}]
    assert ep["recovery"]["replans"] >= 1 and ep["violations"] == 0, ep["recovery"]
    calm = run(checkpoint, tmp_path, max_steps=100, recovery=True, stop_on_success=False)["episodes"][0]
    assert calm["recovery"] == {"replans": 0, "retries": 0, "recoveries": 0, "recovered": 0, "escalations": 0}


def test_a_stalled_arm_retries_goes_home_and_the_policy_resumes(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("stuck",), fault_steps=30, max_steps=120, recovery=True,
                 max_retries=1, deviation=0.02, stop_on_success=False)
    ep = result["episodes"][0]
    assert ep["recovery"]["retries"] >= 1 and ep["recovery"]["recoveries"] >= 1, ep["recovery"]
    assert ep["recovery"]["recovered"] >= 1 and ep["statuses"].get("RECOVERING", 0) >= 1, ep["statuses"]
    assert ep["steps_to_recover"] is None and ep["violations"] == 0  # no success: nothing to time


def test_a_stuck_arm_that_home_cannot_cure_escalates(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("stuck",), fault_steps=70, max_steps=60, recovery=True,
                 max_retries=1, max_home_steps=10, deviation=0.02)
    ep = result["episodes"][0]
    assert ep["recovery"]["escalations"] == 1 and ep["final_status"] == "ESCALATE", ep["statuses"]
    assert ep["violations"] == 0


def test_the_fallback_drives_through_an_outage(checkpoint, tmp_path):
    result = run(checkpoint, tmp_path, inject=("outage",), fault_steps=10, max_steps=40, fallback="expert",
                 stop_on_success=False)
    ep = result["episodes"][0]
    assert ep["statuses"].get("FALLBACK", 0) >= 8 and ep["hold_reasons"].get("policy_error", 0) >= 8
    assert ep["violations"] == 0
    plain = run(checkpoint, tmp_path, inject=("outage",), fault_steps=10, max_steps=40, stop_on_success=False)
    assert "FALLBACK" not in plain["episodes"][0]["statuses"]
    assert plain["episodes"][0]["statuses"]["HOLD"] >= 8
    with pytest.raises(ValueError, match="fallback: expected one of \\('expert',\\) or None, got 'scripted'"):
        DeploySimConfig(checkpoint="c", task=TASK, fallback="scripted")
