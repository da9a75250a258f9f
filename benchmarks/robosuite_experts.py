"""robosuite scripted experts: success per task on the demonstration seeds and on the evaluation seeds,
steps to success, whether the success still holds 20 steps later, and seconds per episode.

    .venv/bin/python benchmarks/robosuite_experts.py [--tasks lift-panda,...] [--episodes 20]

Each task runs in one ``RobosuiteEnv`` (state only, no cameras) on seeds 0.. (where ``vlaforge collect``
records demonstrations) and 1000.. (where evaluation runs), the expert acting until the first success within
the task's ``max_steps``, then 20 steps more. Target: >= 90% per task.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlaforge.benchmarking import command, machine, markdown_table, write

HOLD_STEPS = 20


def run_task(task: str, seeds: list[int]) -> list[dict]:
    from vlaforge.sim.robosuite import RobosuiteEnv

    env = RobosuiteEnv(task, cameras=())
    out = []
    try:
        for seed in seeds:
            start = time.perf_counter()
            env.reset(seed=seed)
            first = None
            for step in range(env.max_steps):
                if env.step(env.expert_action())[4]["is_success"]:
                    first = step + 1
                    break
            held = False
            if first is not None:
                env.max_steps += HOLD_STEPS  # room to check that it holds
                for _ in range(HOLD_STEPS):
                    held = env.step(env.expert_action())[4]["is_success"]
                env.max_steps -= HOLD_STEPS
            out.append({"seed": seed, "success": first is not None, "steps": first, "held": held,
                        "wall_s": round(time.perf_counter() - start, 3)})
    finally:
        env.close()
    return out


def main() -> None:
    from vlaforge.sim.robosuite_tasks import CATALOGUES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(t for c in CATALOGUES.values() for t in c.all_tasks()))
    ap.add_argument("--episodes", type=int, default=20, help="per task and seed range")
    ap.add_argument("--name", default="robosuite_experts")
    args = ap.parse_args()
    rows, results = [], {}
    for task in [t for t in args.tasks.split(",") if t]:
        for first in (0, 1000):
            eps = run_task(task, list(range(first, first + args.episodes)))
            results.setdefault(task, {})[f"seeds_{first}"] = eps
            ok = [e for e in eps if e["success"]]
            rows.append({"task": task, "seeds": f"{first}-{first + args.episodes - 1}",
                         "success": f"{len(ok)}/{len(eps)}",
                         "held 20 steps later": sum(e["held"] for e in ok),
                         "mean steps to success": f"{np.mean([e['steps'] for e in ok]):.1f}" if ok else "-",
                         "max steps to success": max((e["steps"] for e in ok), default="-"),
                         "s/episode": f"{np.mean([e['wall_s'] for e in eps]):.2f}"})
            print(rows[-1], flush=True)
    table = markdown_table(rows, list(rows[0]))
    table += ("\nOne env per task, no cameras rendered; an episode ends at the first success (then 20 more "
              "steps check it holds) or at the task's max_steps. Target: >= 90% per task.\n")
    write(args.name, {"tasks": results, "episodes": args.episodes, "machine": machine()}, table,
          command("robosuite_experts.py"))


if __name__ == "__main__":
    main()
