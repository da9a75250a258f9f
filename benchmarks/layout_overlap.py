"""Does any evaluation layout repeat a training layout? For every Meta-World task: the object and goal
positions after the reset (``observation.environment_state``: two objects' xyz and the goal's xyz) of the
training seeds (``--train-seeds``, default 0-49: what ``vlaforge collect`` records) and of the evaluation
seeds (``--eval-seeds``, default 1000-1049), and the closest pair between the two sets.

    .venv/bin/python benchmarks/layout_overlap.py [--train-seeds 0-49] [--eval-seeds 1000-1049]

The distance of a pair is the largest difference of any coordinate (cm). Identical: under 1 micrometre (the
same layout drawn twice). Near: under 0.5 cm, which for these tasks' success radii (5-8 cm) is practically the
same episode; tasks that randomize one or two coordinates over a few centimetres have many near pairs
simply because 50 training layouts cover that range densely (``range`` says how wide it is).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlaforge.benchmarking import command, machine, markdown_table, write

REPEAT_CM = 0.5
IDENTICAL_CM = 1e-4


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    from tqdm import tqdm

    from vlaforge.sim import SIMULATORS
    from vlaforge.sim.metaworld import MetaWorldEnv
    from vlaforge.types import OBS_ENV_STATE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-seeds", default="0-49")
    ap.add_argument("--eval-seeds", default="1000-1049")
    ap.add_argument("--name", default="layout_overlap")
    args = ap.parse_args()
    train_seeds, eval_seeds = seed_range(args.train_seeds), seed_range(args.eval_seeds)
    t0 = time.perf_counter()
    results = {}
    for task in tqdm(SIMULATORS.get("metaworld").tasks(), desc="tasks", unit="task"):
        env = MetaWorldEnv(task, cameras=())
        layouts = {s: env.reset(seed=s)[0][OBS_ENV_STATE].astype(np.float64)
                   for s in train_seeds + eval_seeds}
        env.close()
        a = np.stack([layouts[s] for s in train_seeds])  # (T, 9)
        b = np.stack([layouts[s] for s in eval_seeds])  # (E, 9)
        d = np.abs(b[:, None, :] - a[None, :, :]).max(-1) * 100  # (E, T) cm
        e, t = np.unravel_index(int(d.argmin()), d.shape)
        spread = np.ptp(np.concatenate([a, b]), axis=0) * 100  # (9,) cm
        varying = int((spread > 1e-4).sum())
        within_train = np.abs(a[:, None, :] - a[None, :, :]).max(-1) * 100
        within_train[np.eye(len(a), dtype=bool)] = np.inf
        results[task] = {"closest_cm": round(float(d[e, t]), 5), "eval_seed": eval_seeds[e],
                         "train_seed": train_seeds[t], "repeats": int((d.min(1) < REPEAT_CM).sum()),
                         "identical": int((d.min(1) < IDENTICAL_CM).sum()),
                         "range_cm": round(float(spread.max()), 2),
                         "varying_coordinates": varying,
                         "closest_within_train_cm": round(float(within_train.min()), 3)}
    order = sorted(results, key=lambda t: results[t]["closest_cm"])
    rows = [{"task": t, "closest pair (cm)": f"{results[t]['closest_cm']:.4f}",
             "seeds (eval, train)": f"{results[t]['eval_seed']}, {results[t]['train_seed']}",
             f"eval layouts < {REPEAT_CM} cm of a training one": results[t]["repeats"],
             "identical": results[t]["identical"],
             "coordinates that vary": results[t]["varying_coordinates"],
             "widest range (cm)": results[t]["range_cm"],
             "closest training pair (cm)": results[t]["closest_within_train_cm"]} for t in order[:12]]
    repeats = {t: r["repeats"] for t, r in results.items() if r["repeats"]}
    identical = sum(r["identical"] for r in results.values())
    listed = ", ".join(f"{t} {n}" for t, n in repeats.items()) or "none"
    table = markdown_table(rows, list(rows[0]))
    table += (f"\nThe 12 closest of {len(results)} tasks; every task in the JSON. Training seeds "
              f"{args.train_seeds}, evaluation seeds {args.eval_seeds}; distance: the largest difference of "
              f"any object or goal coordinate. Evaluation layouts within {REPEAT_CM} cm of a training "
              f"layout: {sum(repeats.values())} ({listed}). Identical to a training layout: {identical}.\n")
    write(args.name, {"results": results, "train_seeds": args.train_seeds, "eval_seeds": args.eval_seeds,
                      "repeat_cm": REPEAT_CM, "wall_s": round(time.perf_counter() - t0, 1),
                      "machine": machine()}, table, command("layout_overlap.py"))


if __name__ == "__main__":
    main()
