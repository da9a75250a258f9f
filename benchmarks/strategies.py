"""Chunk execution strategies measured in Meta-World with a trained policy: success, smoothness (mean squared
jerk), policy calls per control step and control steps per second, for each strategy and several
``recompute_every`` values.

    .venv/bin/python benchmarks/strategies.py --checkpoint runs/demo/train/checkpoint [--episodes 10]
"""

from __future__ import annotations

import argparse

from vlaforge.benchmarking import machine, markdown_table, write

SETTINGS = [("recycle", 1), ("recycle", 4), ("recycle", 8), ("recycle", 16), ("ensemble", 1), ("async", 4),
            ("async", 8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--tasks", default="drawer-open-v3,drawer-close-v3,button-press-topdown-v3")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim.metaworld import resolve_tasks

    tasks = tuple(resolve_tasks(args.tasks))
    rows = []
    for strategy, k in SETTINGS:
        res = evaluate(EvalConfig(checkpoint=args.checkpoint, tasks=tasks, episodes=args.episodes, seed=1000,
                                  strategy=strategy, execute_steps=k, workers=args.workers, videos=0),
                       print_table=False)
        o = res["overall"]
        calls = sum(t["policy_calls_per_step"] for t in res["tasks"].values()) / len(res["tasks"])
        rows.append({"strategy": strategy, "recompute_every": k if strategy != "ensemble" else "every step",
                     "success": f"{o['success_rate'] * 100:.0f}%",
                     "mean_squared_jerk": o["mean_squared_jerk"], "policy_calls_per_step": round(calls, 3),
                     "control_steps_per_s": o["control_steps_per_s"],
                     "latency_p50_ms": o["chunk_latency_ms_p50"]})
        print(rows[-1], flush=True)
    table = markdown_table(rows, list(rows[0]))
    table += (f"\n{args.episodes} episodes per task on seeds 1000-{999 + args.episodes}, "
              f"tasks {', '.join(tasks)}; "
              f"{args.workers} worker processes with 1 torch thread each.\n")
    write("strategies", {"checkpoint": args.checkpoint, "rows": rows, "tasks": list(tasks),
                         "episodes": args.episodes, "machine": machine()}, table,
          f"python benchmarks/strategies.py --checkpoint CKPT --episodes {args.episodes}")


if __name__ == "__main__":
    main()
