"""Few-shot and zero-shot adaptation to Meta-World tasks never trained on (ML10's split): a policy trained
on ML10's training tasks, then adapted to each test task from K demonstrations by every method side by
side, against training from scratch on the same K.

    .venv/bin/python benchmarks/few_shot.py --root runs/fewshot [--k 5,10] [--test-tasks ml10-test]

Steps (each reused from ROOT when done, so an interrupted run continues):
1. ``--train-demos`` scripted demonstrations of each ML10 training task (64 px, ``corner``), the ``demo``
   recipe for ``--train-steps`` steps: the base policy.
2. Zero-shot: the base policy on each test task, given only its instruction.
3. MAML: ``vlaforge meta-train`` from the base policy on the training tasks (first order, the heads adapted
   in the inner loop), ``--maml-steps`` meta-steps.
4. Per test task and K: K demonstrations (seeds 0..K-1); ``vlaforge adapt`` by ``scratch``, ``head``,
   ``full``, ``lora`` rank 8 and 16 (merged), and ``head`` from the MAML policy (``maml``), each
   ``--adapt-steps`` steps; every result evaluated on ``--episodes`` seeds from 1000.

Also measured: seconds per adaptation, and the merged LoRA policy's ``predict_chunk`` p50 against the base
policy's (the same architecture once merged). Goal: the best method beats scratch by >= 30 points at K = 10,
one adaptation <= 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write

METHODS = {"scratch": ("scratch", {}), "head": ("head", {}), "full": ("full", {}),
           "lora8": ("lora", {"rank": 8}), "lora16": ("lora", {"rank": 16}), "maml": ("head", {})}


def collect_once(out: Path, tasks: list[str], episodes: int) -> Path:
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.data.reader import DatasetReader

    if not (out.is_dir() and DatasetReader(out).num_episodes >= episodes * len(tasks)):
        summary = collect(CollectConfig(out=out, tasks=tasks, episodes_per_task=episodes, image_size=64,
                                        resume=out.is_dir(), progress=False))
        print("\n".join(summary.lines()), flush=True)
    return out


def evaluate_once(checkpoint: Path, task: str, episodes: int, out: Path, videos: int = 0) -> dict:
    from vlaforge.evaluation.rollout import EvalConfig, evaluate

    res_file = out / "results.json"
    if not res_file.is_file():
        evaluate(EvalConfig(checkpoint=str(checkpoint), tasks=(task,), episodes=episodes, seed=1000,
                            videos=videos, out=str(out)), progress=False, print_table=False)
    t = json.loads(res_file.read_text())["tasks"][task]
    return {"success_rate": t["success_rate"], "ci95": t["ci95"]}


def latency_p50_ms(checkpoint: Path, calls: int = 60) -> float:
    import numpy as np
    import torch

    from vlaforge.policy import Policy
    from vlaforge.processing.frames import example_frame

    torch.set_num_threads(2)
    policy = Policy.load(checkpoint).eval()
    frame = example_frame(policy.config) | {"task": "open the drawer"}
    for _ in range(5):
        policy.predict_chunk(frame)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        policy.predict_chunk(frame)
        times.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(times)), 2)


def main() -> None:
    from vlaforge.apps.adapt import AdaptConfig, run_adapt, run_meta_train
    from vlaforge.sim import resolve_tasks
    from vlaforge.training import build_config
    from vlaforge.training.maml import MAMLConfig
    from vlaforge.training.trainer import FINAL, train_or_resume

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/fewshot")
    ap.add_argument("--train-tasks", default="ml10-train")
    ap.add_argument("--test-tasks", default="ml10-test")
    ap.add_argument("--train-demos", type=int, default=50)
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--maml-steps", type=int, default=300)
    ap.add_argument("--k", default="5,10")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--adapt-steps", type=int, default=300)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--name", default="few_shot")
    args = ap.parse_args()
    root = Path(args.root)
    train_tasks, test_tasks = resolve_tasks(args.train_tasks), resolve_tasks(args.test_tasks)
    ks = [int(k) for k in args.k.split(",")]
    methods = [m for m in args.methods.split(",") if m]

    data = collect_once(root / "data" / "train", train_tasks, args.train_demos)
    t0 = time.perf_counter()
    train_or_resume(build_config("demo", [f"dataset={data}", f"out={root / 'base'}", "progress=false",
                                          f"steps={args.train_steps}"]))
    base = root / "base" / FINAL
    log = [json.loads(x) for x in (root / "base" / "log.jsonl").read_text().splitlines()]
    base_minutes = next(e for e in log if e["event"] == "end")["time"] / 60
    zero = {t: evaluate_once(base, t, args.episodes, root / "eval" / f"zero-{t}") for t in test_tasks}
    maml_ckpt = root / "maml" / "checkpoint"
    if "maml" in methods and not maml_ckpt.is_dir():
        run_meta_train(str(base), str(data), str(root / "maml"), MAMLConfig(meta_steps=args.maml_steps),
                       progress=False)
    results: dict = {}
    for task in test_tasks:
        for k in ks:
            demos = collect_once(root / "data" / f"{task}-k{k}", [task], k)
            for m in methods:
                method, extra = METHODS[m]
                out = root / "adapt" / f"{task}-k{k}-{m}"
                start = maml_ckpt if m == "maml" else base
                if not (out / "adapt.json").is_file():
                    run_adapt(AdaptConfig(checkpoint=str(start), dataset=str(demos), out=str(out),
                                          method=method, steps=args.adapt_steps, progress=False, **extra))
                info = json.loads((out / "adapt.json").read_text())
                ev = evaluate_once(out / "checkpoint", task, args.episodes,
                                   root / "eval" / f"{task}-k{k}-{m}")
                results.setdefault(task, {}).setdefault(f"k{k}", {})[m] = ev | {"adapt_s": info["train_s"]}
                print(task, k, m, ev, flush=True)
    latency = {"base_p50_ms": latency_p50_ms(base)}
    if "lora8" in methods:  # merged: the base's architecture, so its latency
        merged = root / "adapt" / f"{test_tasks[0]}-k{ks[-1]}-lora8" / "checkpoint"
        latency["lora8_merged_p50_ms"] = latency_p50_ms(merged)

    rows = []
    for k, m in [(0, "zero-shot")] + [(k, m) for k in ks for m in methods]:
        row = {"K": k, "method": m}
        rates = []
        for task in test_tasks:
            r = zero[task] if m == "zero-shot" else results[task][f"k{k}"][m]
            row[task] = f"{r['success_rate']:.0%}"
            rates.append(r["success_rate"])
        row["mean"] = f"{statistics.mean(rates):.0%}"
        row["adapt s (median)"] = "-" if m == "zero-shot" else statistics.median(
            results[t][f"k{k}"][m]["adapt_s"] for t in test_tasks)
        rows.append(row)
    table = markdown_table(rows, list(rows[0]))
    table += (f"\nBase policy: the demo recipe on {args.train_demos} demonstrations of each of the "
              f"{len(train_tasks)} training tasks, {args.train_steps} steps ({base_minutes:.1f} min). Each "
              f"adaptation: {args.adapt_steps} steps of batch 32 on K demonstrations of the test task (seeds "
              f"0..K-1); maml: head adaptation of the MAML-trained policy ({args.maml_steps} first-order "
              f"meta-steps). {args.episodes} episodes per test task on seeds from 1000. Latency p50 (ms): "
              f"base {latency['base_p50_ms']}, LoRA rank 8 merged "
              f"{latency.get('lora8_merged_p50_ms', '-')}.\n")
    write(args.name, {"zero_shot": zero, "results": results, "latency": latency, "args": vars(args),
                      "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}, table,
          command("few_shot.py"))


if __name__ == "__main__":
    main()
