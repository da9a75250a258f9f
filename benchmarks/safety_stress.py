"""Safety layer under stress: 1,000 random actions, what it changed and why, and by how much.

The stream mixes plausible actions (a smooth random walk inside the training range), out-of-bounds
actions, jumps (a far point inside the range), non-finite actions (NaN / +-Inf / +-1e30 in random
dimensions) and a few force spikes (the operator resets the latched estop 5 steps later).
Limits are Meta-World-like: 4 action dims, bounds from dataset statistics (min/max = -1/1, margin
5 %), control period 0.0125 s (80 Hz), at most 0.25 per step, step changes of at most 0.1 per step.

A first, clean stream of plausible actions only gives the baseline (how often the layer touches a
good trajectory). In the mixed stream, plausible actions that follow a disturbance are modified too:
the output is still catching up, rate-limited, with the plausible trajectory.

Reports the share of actions modified per category and per reason, the distance between the input
and the output for finite inputs (a histogram PNG, log scale), time per call, and checks that every
output was admissible (finite, inside the bounds, within the velocity and acceleration limits).

    .venv/bin/python benchmarks/safety_stress.py [--n 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import machine, markdown_table, write

RESULTS = Path(__file__).resolve().parent / "results"


from vlaforge.runtime.safety import REASONS, SafetyConfig, SafetyLayer  # noqa: E402

CATEGORIES = ("plausible", "out_of_bounds", "jump", "nan_inf_1e30", "force_spike")
MIX = (0.60, 0.15, 0.14, 0.10, 0.01)
DT = 0.0125


def make_config() -> SafetyConfig:
    stats = {"min": -np.ones(4, np.float32), "max": np.ones(4, np.float32)}
    return SafetyConfig.from_dataset_stats(stats, margin=0.05, max_velocity=0.25 / DT,
                                           max_acceleration=0.1 / DT**2, max_force=50.0, dt=DT)


def stream(n: int, rng: np.random.Generator, mix):
    """(category, action float32 (4,), force (3,)) for n steps."""
    walk, vel = np.zeros(4), np.zeros(4)
    cats = rng.choice(len(CATEGORIES), size=n, p=mix)
    for c in cats:
        # the plausible trajectory goes on: smooth (random acceleration), pushed back near the edges
        vel = 0.95 * vel + rng.normal(0, 0.015, 4) - 0.02 * np.sign(walk) * (np.abs(walk) > 0.7)
        walk = np.clip(walk + vel, -0.95, 0.95)
        cat = CATEGORIES[c]
        force = np.abs(rng.normal(0, 5, 3))
        if cat == "plausible":
            a = walk.copy()
        elif cat == "out_of_bounds":
            a = walk.copy()
            dims = rng.random(4) < 0.5
            dims[rng.integers(4)] = True
            a[dims] = rng.choice([-1, 1], dims.sum()) * rng.uniform(1.2, 10.0, dims.sum())
        elif cat == "jump":
            a = rng.uniform(-1, 1, 4)
        elif cat == "nan_inf_1e30":
            a = walk.copy()
            dims = rng.random(4) < 0.3
            dims[rng.integers(4)] = True
            a[dims] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30], dims.sum())
        else:
            a = walk.copy()
            force = force + np.array([0.0, 0.0, rng.uniform(60, 200)])
        yield cat, a.astype(np.float32), force


def save_png(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(layer: SafetyLayer, config: SafetyConfig, n: int, rng: np.random.Generator,
        mix) -> tuple[list, list, int]:
    """Feed n actions; -> (rows, seconds per call, admissibility violations)."""
    v, q = config.max_velocity * DT, config.max_acceleration * DT**2  # (4,) per step
    rows, times, reset_in = [], [], None
    prev, prev_step, violations = None, np.zeros(4), 0
    for cat, a, force in stream(n, rng, mix):
        t0 = time.perf_counter()
        r = layer(a, force=force)
        times.append(time.perf_counter() - t0)
        y = r.action.astype(np.float64)
        ok = np.isfinite(y).all() and (y >= config.low).all() and (y <= config.high).all()
        if prev is not None and not r.estop:
            step = y - prev
            ok &= bool((np.abs(step) <= v + 1e-6).all() and (np.abs(step - prev_step) <= q + 1e-6).all())
            prev_step = step
        else:
            prev_step = np.zeros(4)
        violations += not ok
        prev = y
        finite = bool(np.isfinite(a).all() and np.abs(a).max() < 1e29)
        rows.append({"category": cat, "modified": r.modified, "reasons": r.reasons, "estop": r.estop,
                     "distance": float(np.linalg.norm(y - a)) if finite else None})
        if r.estop and reset_in is None:
            reset_in = 5
        if reset_in is not None:
            reset_in -= 1
            if reset_in == 0:  # the operator checked the robot and cleared the stop
                layer.reset(initial_action=r.action)
                prev_step, reset_in = np.zeros(4), None
    return rows, times, violations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    config = make_config()
    # baseline: only the plausible trajectory (how often does the layer touch a good stream?)
    clean_rows, _, clean_violations = run(SafetyLayer(config), config, args.n, rng, (1.0, 0, 0, 0, 0))
    clean_share = sum(r["modified"] for r in clean_rows) / len(clean_rows)
    layer = SafetyLayer(config)
    rows, times, violations = run(layer, config, args.n, rng, MIX)
    violations += clean_violations

    n = len(rows)
    per_reason = {k: round(sum(k in r["reasons"] for r in rows) / n, 4) for k in REASONS}
    per_cat = []
    for cat in CATEGORIES:
        sel = [r for r in rows if r["category"] == cat]
        if not sel:
            continue
        d = [r["distance"] for r in sel if r["distance"] is not None]
        per_cat.append({"category": cat, "count": len(sel),
                        "modified_share": round(sum(r["modified"] for r in sel) / len(sel), 3),
                        "median_distance": round(float(np.median(d)), 4) if d else "-",
                        "p95_distance": round(float(np.percentile(d, 95)), 4) if d else "-"})
    dist = np.array([r["distance"] for r in rows if r["distance"] is not None])
    times_us = np.array(times) * 1e6
    v, q = config.max_velocity * DT, config.max_acceleration * DT**2  # (4,) per step
    payload = {
        "n_actions": n, "seed": args.seed,
        "config": {"low": config.low.tolist(), "high": config.high.tolist(), "dt": DT,
                   "max_step": v.tolist(), "max_step_change": q.tolist(),
                   "max_force": float(config.max_force)},
        "modified_share": round(sum(r["modified"] for r in rows) / n, 4),
        "clean_stream_modified_share": round(clean_share, 4),
        "share_by_reason": per_reason,
        "by_category": per_cat,
        "admissibility_violations": int(violations),
        "distance_finite_inputs": {"n": int(dist.size), "median": float(np.median(dist)),
                                   "p95": float(np.percentile(dist, 95)), "max": float(dist.max())},
        "time_per_call_us": {"p50": round(float(np.percentile(times_us, 50)), 1),
                             "p99": round(float(np.percentile(times_us, 99)), 1)},
        "machine": machine(),
    }

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    floor = 1e-7  # untouched actions (distance 0) go in the first bin
    bins = np.logspace(-7, 1.5, 44)
    series = [(c, [max(r["distance"], floor) for r in rows
                   if r["category"] == c and r["distance"] is not None]) for c in CATEGORIES]
    series = [(c, d) for c, d in series if d]
    ax.hist([d for _, d in series], bins=bins, stacked=True, label=[c for c, _ in series])
    ax.set_xscale("log")
    ax.set_xlabel("|output - input| (L2, action units; first bin: unchanged)")
    ax.set_ylabel("actions")
    ax.set_title(f"SafetyLayer: how far {dist.size} finite actions were moved (of {n})")
    ax.legend()
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_png(fig, RESULTS / "safety_stress.png")

    timing = payload["time_per_call_us"]
    reason_rows = [{"reason": k, "share_of_actions": per_reason[k]} for k in REASONS]
    cat_cols = ["category", "count", "modified_share", "median_distance", "p95_distance"]
    table = (markdown_table(per_cat, cat_cols)
             + "\n" + markdown_table(reason_rows, ["reason", "share_of_actions"])
             + f"\nModified overall (mixed stream): {payload['modified_share']}; "
               f"a clean plausible-only stream of {args.n} actions: "
               f"{payload['clean_stream_modified_share']} modified.\n"
               f"Admissibility violations (both streams): {violations}; "
               f"time per call p50 {timing['p50']} us, p99 {timing['p99']} us."
               "\n\n![distance histogram](safety_stress.png)\n")
    write("safety_stress", payload, table,
          f"python benchmarks/safety_stress.py --n {args.n} --seed {args.seed}")


if __name__ == "__main__":
    main()
