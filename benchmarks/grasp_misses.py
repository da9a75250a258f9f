"""How does a policy miss its grasps? Rolls a checkpoint out on a grasping task's unseen seeds, and the
scripted expert on the same seeds, logging the hand, the gripper opening and the object and goal positions at
every step, and classifies each episode (``vlaforge.evaluation.grasp.grasp_outcome``): success, closed
beside the object (never lifted it), lifted but not placed, never closed. Reports how far the hand was from
the object, in the table plane, when the gripper closed.

    .venv/bin/python benchmarks/grasp_misses.py --checkpoint runs/mt10/train-mt10_flow_taskaux/checkpoint
        [--task pick-place-v3] [--episodes 20] [--execute-steps 4] [--name grasp_misses]

Runs in this process (2 torch threads), fp32. Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from tqdm import tqdm

from vlaforge.benchmarking import command, machine, markdown_table, write


def _trace(obs) -> np.ndarray:
    # state: hand xyz + gripper opening; environment state: object 1 xyz, object 2 xyz, goal xyz
    return np.concatenate([obs["observation.state"], obs["observation.environment_state"]])


def _row(ep, seed: int) -> dict:
    from vlaforge.evaluation.grasp import grasp_outcome

    f = np.asarray(ep.frames)
    row = grasp_outcome(f[:, 0:3], f[:, 3], f[:, 4:7], f[:, 10:13], bool(any(ep.successes)))
    return {"seed": seed, "steps": len(f), **row}


def _summary(rows: list[dict]) -> dict:
    from vlaforge.evaluation.grasp import OUTCOMES

    def median(xs):
        xs = [x for x in xs if x is not None]
        return round(statistics.median(xs), 2) if xs else None

    ok = [r for r in rows if r["outcome"] == OUTCOMES[0]]
    bad = [r for r in rows if r["outcome"] != OUTCOMES[0]]
    return {"episodes": len(rows), "outcomes": {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES},
            "offset_xy_cm_median_success": median([r["offset_xy_cm"] for r in ok]),
            "offset_xy_cm_median_failure": median([r["offset_xy_cm"] for r in bad])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--task", default="pick-place-v3")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000, help="first seed (evaluation seeds are 1000+)")
    ap.add_argument("--execute-steps", type=int, default=4, help="actions executed per chunk")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--name", default="grasp_misses")
    args = ap.parse_args()

    import torch

    from vlaforge.evaluation.rollout import EvalConfig, Rollouts
    from vlaforge.policy import Policy
    from vlaforge.sim.episode import run_episode

    torch.set_num_threads(2)
    policy = Policy.load(args.checkpoint)
    policy.set_precision(False, warn=False)
    cfg = EvalConfig(checkpoint=args.checkpoint, tasks=(args.task,), episodes=args.episodes, seed=args.seed,
                     workers=1, execute_steps=args.execute_steps, max_steps=args.max_steps)
    rollouts = Rollouts(cfg, policy)
    env = rollouts.env(args.task)
    seeds = range(args.seed, args.seed + args.episodes)
    per_actor: dict[str, list[dict]] = {"policy": [], "expert": []}
    with tqdm(total=2 * args.episodes, desc="episodes", unit="ep") as bar:
        for seed in seeds:
            ep, _, _ = rollouts.play(args.task, seed, record=_trace)
            per_actor["policy"].append(_row(ep, seed))
            bar.update()
            ep = run_episode(env, lambda _obs: np.clip(env.expert_action(), -1.0, 1.0), seed=seed,
                             max_steps=args.max_steps, stop_on_success=True, record=_trace)
            per_actor["expert"].append(_row(ep, seed))
            bar.update()
    rollouts.close()
    summaries = {a: _summary(rows) for a, rows in per_actor.items()}
    from vlaforge.evaluation.grasp import OUTCOMES

    table = markdown_table(
        [{"actor": a, **{o: s["outcomes"][o] for o in OUTCOMES},
          "offset at close, successes (median cm)": s["offset_xy_cm_median_success"],
          "offset at close, failures (median cm)": s["offset_xy_cm_median_failure"]}
         for a, s in summaries.items()],
        ["actor", *OUTCOMES, "offset at close, successes (median cm)",
         "offset at close, failures (median cm)"])
    table += (f"\n`{args.task}`, seeds {args.seed}-{args.seed + args.episodes - 1}, the policy "
              f"(`{args.checkpoint}`, {args.execute_steps} actions executed per chunk) and the clipped "
              f"scripted expert (the environment's, `{env.expert}`) on the same seeds; episodes end at "
              f"success or {args.max_steps} steps. Offset: hand to object in the table plane when the "
              f"gripper opening first fell below 0.8.\n")
    write(args.name, {"task": args.task, "checkpoint": args.checkpoint, "execute_steps": args.execute_steps,
                      "summary": summaries, "episodes": per_actor, "machine": machine("fp32")},
          table, command("grasp_misses.py"))


if __name__ == "__main__":
    main()
