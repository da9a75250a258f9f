"""The `make demo` job as a benchmark: per-task and mean success, minutes for each phase, and the same
checkpoint on validation seeds.

    .venv/bin/python benchmarks/demo.py [--root runs/demo-bench] [--fresh] [--name demo]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/demo.py \\
        --fresh --name demo_avx2

Targets (issues 5 and 13), on either CPU kind (AVX2 without native bf16 included): mean success >= 95% over
seeds 1000-1019 with <= 10 minutes of training, the whole job <= 20 minutes from a fresh clone (install
included: add `make install`'s minutes), and >= 95% on the 40 validation seeds per task (2000-2039).
Reference: LeRobot 0.4.4's ACT (51.6 M parameters, no language input), trained 30 minutes on the same 150
demonstrations, reaches 100% / 100% / 70% (mean 90%) on seeds 1000-1019.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo-bench")
    ap.add_argument("--fresh", action="store_true", help="delete the root first, so every phase runs")
    ap.add_argument("--set", action="append", default=[], help="training override (repeatable)")
    ap.add_argument("--name", default="demo",
                    help="results file name under benchmarks/results/ (for variants)")
    ap.add_argument("--validation-episodes", type=int, default=40,
                    help="episodes per task on seeds 2000+ (0: skip)")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(args.root, ignore_errors=True)
    from vlaforge.apps.demo import DEMO_TASKS, run_demo

    res = run_demo(args.root, overrides=tuple(args.set))
    r = res.results
    rows = [{"task": t, "success": f"{r['tasks'][t]['success_rate'] * 100:.0f}%",
             "ci95": f"{r['tasks'][t]['ci95'][0] * 100:.0f}-{r['tasks'][t]['ci95'][1] * 100:.0f}%",
             "ACT (LeRobot 0.4.4, 30 min)": ref} for t, ref in zip(DEMO_TASKS, ["100%", "100%", "70%"])]
    rows.append({"task": "mean", "success": f"{r['overall']['success_rate'] * 100:.1f}%", "ci95": "",
                 "ACT (LeRobot 0.4.4, 30 min)": "90%"})
    val = None
    if args.validation_episodes:
        from vlaforge.evaluation.rollout import EvalConfig, evaluate

        val = evaluate(EvalConfig(checkpoint=r["checkpoint"], tasks=DEMO_TASKS,
                                  episodes=args.validation_episodes, seed=2000, workers=2, videos=0,
                                  strategy=r.get("strategy", "recycle"),
                                  out=str(Path(args.root) / "eval-validation")), print_table=False)
        for row, t in zip(rows, DEMO_TASKS):
            v = val["tasks"][t]
            row["validation seeds 2000+"] = (f"{v['success_rate'] * 100:.0f}% "
                                             f"({v['successes']}/{v['episodes']})")
        rows[-1]["validation seeds 2000+"] = f"{val['overall']['success_rate'] * 100:.1f}%"
    table = markdown_table(rows, ["task", "success", "ci95", *(["validation seeds 2000+"] if val else []),
                                  "ACT (LeRobot 0.4.4, 30 min)"])
    table += (f"\nChunk execution in evaluation: {r.get('strategy')}. Minutes: "
              + ", ".join(f"{k} {v:.1f}" for k, v in res.minutes.items()))
    table += (f" (skipped, reused from an earlier run: {', '.join(res.skipped)})\n" if res.skipped else "\n")
    import json

    run_cfg = json.loads((Path(args.root) / "train" / "config.json").read_text())
    log = [json.loads(x) for x in (Path(args.root) / "train" / "log.jsonl").read_text().splitlines()]
    precision = next((e for e in log if e["event"] == "precision"), {})
    steps = [e["s_per_step"] for e in log if e["event"] == "train"]
    table += (f"Training precision: {precision.get('precision', '?')} "
              f"({precision.get('reason', 'not recorded')}); "
              f"median {sorted(steps)[len(steps) // 2]:.3f} s per step.\n" if steps else "")
    payload = {"tasks": {t: r["tasks"][t] for t in DEMO_TASKS}, "mean_success": r["overall"]["success_rate"],
               "minutes": {k: round(v, 2) for k, v in res.minutes.items()}, "skipped": res.skipped,
               "strategy": r.get("strategy"), "execute_steps": r.get("execute_steps"),
               "train_config": {k: run_cfg[k] for k in ("steps", "batch_size", "lr") if k in run_cfg},
               "policy": run_cfg.get("policy"), "machine": machine(precision=precision.get("precision")),
               "training_precision": precision,
               "median_s_per_step": sorted(steps)[len(steps) // 2] if steps else None,
               "validation": None if val is None else {"seeds": val["seeds"],
                                                       "mean_success": val["overall"]["success_rate"],
                                                       "tasks": val["tasks"]},
               "targets": {"mean_success_min": 0.95, "validation_success_min": 0.95, "train_minutes_max": 10,
                           "total_minutes_max": 20}}
    write(args.name, payload, table, command("demo.py"))


if __name__ == "__main__":
    main()
