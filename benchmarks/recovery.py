"""The runtime's recovery behaviours under injected faults, in deploy-sim (Meta-World through the full
runtime).

    .venv/bin/python benchmarks/recovery.py --checkpoint runs/demo/train/checkpoint [--task drawer-open-v3]
        [--episodes 10]

Faults (each from step ``--inject-step`` for ``--fault-steps`` steps of every episode): ``push`` (the world
adds one action unit sideways to every executed action: a shove), ``stuck`` (the arm does not follow: the
robot executes zeros), ``outage`` (every inference raises: the policy server is down); and none. Runtimes:
``plain`` (safety layer, chunk executor, monitor: what deploy-sim always runs), ``recovery`` (the motion check
re-plans, retries, moves home, escalates; ``vlaforge.runtime.recovery``), ``recovery/episode`` (the same, with
the retries counted over the whole episode instead of within 20 steps of a re-plan: ``retry_window=300``),
``recovery+fallback`` (and the
scripted expert acts where the policy's step would hold), ``smoothing`` (exponential smoothing 0.5, no other
change). Per cell: success over the episodes, mean steps from the end of the fault to the first normal step,
safety violations (actions sent outside the safety layer's box or velocity limit: must be 0), and the
recovery counters. Steps to recover: from the end of the fault to success, over the episodes that succeeded.
"""

from __future__ import annotations

import argparse
import time

from vlaforge.benchmarking import command, machine, markdown_table, write

RUNTIMES = {"plain": {}, "recovery": {"recovery": True},
            "recovery/episode": {"recovery": True, "retry_window": 300},
            "recovery+fallback": {"recovery": True, "fallback": "expert"}, "smoothing": {"smoothing": 0.5}}
FAULTS = ("none", "push", "stuck", "outage")


def main() -> None:
    from vlaforge.apps.deploy_sim import DeploySimConfig, run_deploy_sim
    from vlaforge.policy import Policy

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo/train/checkpoint")
    ap.add_argument("--task", default="drawer-open-v3")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--inject-step", type=int, default=20)
    ap.add_argument("--fault-steps", type=int, default=30)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--name", default="recovery")
    args = ap.parse_args()
    policy = Policy.load(args.checkpoint)
    t0 = time.perf_counter()
    cells = []
    for fault in args.faults.split(","):
        for name in args.runtimes.split(","):
            if name == "smoothing" and fault != "none":
                continue  # smoothing is a property of normal running, measured without faults
            cfg = DeploySimConfig(checkpoint=args.checkpoint, task=args.task, episodes=args.episodes,
                                  inject=() if fault == "none" else (fault,), inject_step=args.inject_step,
                                  fault_steps=args.fault_steps, out=None, progress=False, bf16=False,
                                  **RUNTIMES[name])
            res = run_deploy_sim(cfg, policy=policy)
            eps = res["episodes"]
            back = [e["steps_to_recover"] for e in eps if e["steps_to_recover"] is not None]
            counters = {}
            for e in eps:
                for k, v in (e["recovery"] or {}).items():
                    counters[k] = counters.get(k, 0) + v
            cell = {"fault": fault, "runtime": name, "success": res["success_rate"],
                    "steps_to_recover_mean": round(sum(back) / len(back), 1) if back else None,
                    "succeeded_after_fault": len(back), "violations": sum(e["violations"] for e in eps),
                    "statuses": {s: sum(e["statuses"].get(s, 0) for e in eps) for s in res["statuses_seen"]},
                    "recovery": counters}
            cells.append(cell)
            print(fault, name, cell, flush=True)
    rows = [{"fault": c["fault"], "runtime": c["runtime"], "success": f"{c['success']:.0%}",
             "steps to recover (mean)": c["steps_to_recover_mean"] if c["fault"] not in ("none",) else "-",
             "violations": c["violations"],
             "re-plans / retries / home / recovered / escalations": "/".join(
                 str(c["recovery"].get(k, 0)) for k in ("replans", "retries", "recoveries", "recovered",
                                                        "escalations")) if c["recovery"] else "-",
             "steps held / fallback / recovering": "/".join(
                 str(c["statuses"].get(s, 0)) for s in ("HOLD", "FALLBACK", "RECOVERING"))} for c in cells]
    table = markdown_table(rows, list(rows[0]))
    table += (f"\n{args.task}, {args.episodes} episodes per cell (seeds 1000-{999 + args.episodes}), "
              f"checkpoint `{args.checkpoint}`, fp32. Faults from step {args.inject_step} for "
              f"{args.fault_steps} steps. "
              f"Steps to recover: from the end of the fault to success, over the episodes that succeeded.\n")
    write(args.name, {"cells": cells, "args": vars(args), "wall_s": round(time.perf_counter() - t0, 1),
                      "machine": machine()}, table, command("recovery.py"))


if __name__ == "__main__":
    main()
