"""``vlaforge.apps.multitask.multitask_run``, the MT10 / MT50 benchmarks' pipeline, end to end at toy size:
it records, trains and evaluates for real, names its directories by expert and cameras, and reuses what is
done."""

from __future__ import annotations

import argparse

from vlaforge.apps.multitask import (
    multitask_arguments,
    multitask_footer,
    multitask_result_name,
    multitask_run,
    multitask_task_rows,
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
