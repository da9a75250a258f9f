"""``vlaforge.apps.multitask.multitask_run``, the MT10 / MT50 benchmarks' pipeline, end to end at toy size:
it records, trains and evaluates for real, names its directories by expert and cameras, and reuses what is
done."""

from __future__ import annotations

import argparse

import pytest

from vlaforge.apps.multitask import (
    multitask_arguments,
    multitask_footer,
    multitask_result_name,
    multitask_run,
    multitask_task_rows,
    recorded_dataset,
)
from vlaforge.data import DatasetReader


def test_multitask_run_collects_trains_evaluates_and_reuses(tmp_path):
    ap = argparse.ArgumentParser()
    multitask_arguments(ap, root=str(tmp_path), preset="debug", episodes=1)
    # no --cameras: the dataset records the cameras the policy reads (policy.cameras below)
    args = ap.parse_args(["--demos", "1", "--workers", "1", "--expert", "centred",
                          "--execute-steps", "2", "--max-steps", "12",
                          "--set", "steps=2", "--set", "policy.image_size=96",
                          "--set", "policy.cameras=corner,corner4"])
    res = multitask_run(args, ["reach-v3"], "toy")
    data = tmp_path / "data-centred-corner+corner4"
    assert res["dataset"] == str(data) and res["dataset_cameras"] == ["corner", "corner4"]
    assert DatasetReader(data).num_episodes == 1
    assert DatasetReader(data).episodes[0].extras["expert"] == "centred"
    assert (tmp_path / "train-toy" / "checkpoint" / "config.json").is_file()
    assert (tmp_path / "eval-toy-h2").is_dir()
    assert set(res["tasks"]) == {"reach-v3"} and res["tasks"]["reach-v3"]["episodes"] == 1
    assert res["max_steps"] == 12
    assert 0.0 <= res["mean_success"] <= 1.0 and res["params"] > 0
    assert res["train_config"]["steps"] == 2 and res["train_config"]["policy"]["head"] == "flow"
    assert "2 actions executed per chunk, centred expert, 1 episodes per task" in multitask_footer(res)
    rows = multitask_task_rows(res, group=lambda t: t.split("-")[0])
    rate = res["tasks"]["reach-v3"]["success_rate"]
    assert rows == [{"task": "reach-v3", "group": "reach", "success": f"{rate * 100:.0f}%",
                     "ci95": "{:.0f}-{:.0f}%".format(*(c * 100 for c in res["tasks"]["reach-v3"]["ci95"]))}]
    assert multitask_result_name(args, "mt50") == "mt50_flow_h2"
    # a second call reuses the dataset and the finished training: nothing is recorded or trained again
    again = multitask_run(args, ["reach-v3"], "toy")
    assert again["collect_minutes"] == 0.0 and DatasetReader(data).num_episodes == 1
    assert again["train_config"] == res["train_config"]


def test_multitask_run_adds_already_done_demonstrations_to_the_dataset_only(tmp_path):
    """``--done-demos``: the already-done tasks on the evaluated tasks' scenes are recorded into the same
    dataset (holding still under the other task's instruction) and trained on; only ``tasks``
    are evaluated."""
    import numpy as np

    from vlaforge.sim.instructions import instruction
    from vlaforge.sim.metaworld import HOLD_STEPS

    ap = argparse.ArgumentParser()
    multitask_arguments(ap, root=str(tmp_path), preset="debug", episodes=1)
    args = ap.parse_args(["--demos", "1", "--done-demos", "1", "--workers", "1", "--execute-steps", "2",
                          "--max-steps", "12",
                          "--set", "steps=2", "--set", "policy.image_size=96",
                          "--set", "policy.aux_env_weight=1.0", "--set", "policy.aux_env_per_task=true"])
    res = multitask_run(args, ["window-open-v3"], "toy")
    assert res["done_tasks"] == ["window-close-done-v3"] and res["done_demos"] == 1
    assert set(res["tasks"]) == {"window-open-v3"}
    # another dataset, run and result than the same command without them
    assert res["dataset"] == str(tmp_path / "data-done1")
    assert (tmp_path / "train-toy-done1" / "checkpoint").is_dir()
    assert (tmp_path / "eval-toy-done1-h2").is_dir()
    assert multitask_result_name(args, "mt10") == "mt10_flow_done1_h2"
    # that dataset asked for without the already-done tasks: refused, not trained on
    with pytest.raises(ValueError, match=r"data-done1 holds 1 episodes of window-close-done-v3, more than"):
        recorded_dataset(tmp_path, ["window-open-v3"], 1, tag="-done1")
    reader = DatasetReader(tmp_path / "data-done1")
    eps = {ep.task_name: ep for ep in reader.episodes}
    assert set(eps) == {"window-open-v3", "window-close-done-v3"}
    done = eps["window-close-done-v3"]
    assert reader.task_of(done) == instruction("window-close-v3") != reader.task_of(eps["window-open-v3"])
    assert done.length == HOLD_STEPS + 10  # held until success, then the post-success steps
    actions = reader.columns(["action"])["action"]
    assert np.all(actions[done.start:done.start + done.length] == 0.0)  # the hold expert: zero action
    shown = eps["window-open-v3"]
    assert np.abs(actions[shown.start:shown.start + shown.length]).max() > 0.5
