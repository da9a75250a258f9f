"""The MT10 benchmark: one multi-task policy for the ten MT10 tasks, 50 scripted demonstrations per task,
96x96 corner camera + 4-D state + instruction, evaluated with 20 episodes per task on unseen seeds
(1000-1019).

    .venv/bin/python benchmarks/mt10.py --head flow [--root runs/mt10] [--set steps=12000 ...]
        [--expert centred] [--cameras corner,corner4] [--execute-steps 4]

``--expert centred`` records reach-v3 with the expert that aims the gripper centre at the goal
(``vlaforge.sim.metaworld.CENTRED_EXPERT_TASKS``; issue 18), ``--cameras`` records more views (which ones
the policy reads is ``--set policy.cameras=...``); each such dataset gets a directory of its own under
``--root`` (``data-centred-corner+corner4``). ``--execute-steps`` plays that many actions per chunk in
evaluation (default: half the chunk). Finished datasets and trainings are reused.

Goal: mean success >= 80% with <= 90 minutes of training on the 2-core CPU machine. Published image-based
results on the same ten tasks, for reference: Diffusion Policy 67.1% and 3D Diffusion Policy 75.5%
(single-task policies, 10 demonstrations each, best-of-5 evaluations; DP3 paper, Table XVIII); SmolVLA
(0.45 B) 57.3% on all of MT50 with one policy. Writes benchmarks/results/mt10_<head>.json and .md (``--name``
for variants; ``_h<N>`` added with ``--execute-steps N``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write
from vlaforge.benchmarking import train_minutes as run_minutes
from vlaforge.config import head_names  # noqa: E402

REFERENCE = {"Diffusion Policy (DP3 paper, Table XVIII)": 0.671, "3D Diffusion Policy (DP3 paper)": 0.755}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", default="flow", choices=head_names())
    ap.add_argument("--root", default="runs/mt10")
    ap.add_argument("--preset", default="mt10")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategy", default="recycle", choices=["recycle", "ensemble", "async"],
                    help="chunk execution in evaluation (recycle: open loop over half the chunk)")
    ap.add_argument("--set", action="append", default=[], help="training override (repeatable)")
    ap.add_argument("--expert", default="metaworld", help="the demonstrations' expert (metaworld, centred)")
    ap.add_argument("--cameras", default="corner", help="cameras recorded in the dataset (comma list)")
    ap.add_argument("--execute-steps", type=int, default=None,
                    help="actions executed per chunk in evaluation (default: half the chunk)")
    ap.add_argument("--name", default="",
                    help="results file name under benchmarks/results/ (default mt10_<head>)")
    args = ap.parse_args()

    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.apps.demo import _dataset_complete
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.policy import Policy
    from vlaforge.sim.metaworld import resolve_tasks
    from vlaforge.training import build_config
    from vlaforge.training.trainer import train_or_resume

    tasks = resolve_tasks("mt10")
    root = Path(args.root)
    cameras = tuple(c for c in args.cameras.split(",") if c)
    data = root / "-".join(["data", *([args.expert] if args.expert != "metaworld" else []),
                            *(["+".join(cameras)] if cameras != ("corner",) else [])])
    run, out = root / f"train-{args.head}", root / f"eval-{args.head}"
    if args.name:
        run, out = root / f"train-{args.name}", root / f"eval-{args.name}"
    if args.execute_steps:
        out = out.with_name(f"{out.name}-h{args.execute_steps}")
    t0 = time.perf_counter()
    if not _dataset_complete(data, tasks, 50):
        collect(CollectConfig(out=data, tasks=tasks, episodes_per_task=50, image_size=96, cameras=cameras,
                              workers=args.workers, resume=data.exists(), expert=args.expert))
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_or_resume(build_config(args.preset, [f"dataset={data}", f"out={run}", f"policy.head={args.head}",
                                               *args.set]))
    t_train = time.perf_counter() - t0
    train_minutes = run_minutes(run) or t_train / 60
    ckpt = run / "checkpoint"
    t0 = time.perf_counter()
    res = evaluate(EvalConfig(checkpoint=str(ckpt), tasks=tuple(tasks), episodes=args.episodes, seed=1000,
                              workers=args.workers, out=str(out), strategy=args.strategy,
                              execute_steps=args.execute_steps))
    t_eval = time.perf_counter() - t0
    policy = Policy.load(ckpt)
    rows = [{"task": t, "success": f"{v['success_rate'] * 100:.0f}%",
             "ci95": f"{v['ci95'][0] * 100:.0f}-{v['ci95'][1] * 100:.0f}%"} for t, v in res["tasks"].items()]
    rows.append({"task": "mean", "success": f"{res['overall']['success_rate'] * 100:.1f}%", "ci95": ""})
    table = markdown_table(rows, ["task", "success", "ci95"])
    table += (f"\nHead `{args.head}`, {policy.num_parameters() / 1e6:.2f} M parameters, "
              f"training {train_minutes:.1f} min, "
              f"chunk latency p50 {res['overall']['chunk_latency_ms_p50']} ms, "
              f"{args.execute_steps or 'half the chunk'} actions executed per chunk, "
              f"{args.expert} expert. References: "
              + ", ".join(f"{k} {v * 100:.1f}%" for k, v in REFERENCE.items()) + ".\n")
    cfg = json.loads((run / "config.json").read_text())
    result = (args.name or f"mt10_{args.head}") + (f"_h{args.execute_steps}" if args.execute_steps else "")
    write(result, {
        "head": args.head, "tasks": res["tasks"], "mean_success": res["overall"]["success_rate"],
        "params": policy.num_parameters(), "train_minutes": round(train_minutes, 1),
        "collect_minutes": round(t_collect / 60, 1), "eval_minutes": round(t_eval / 60, 1),
        "chunk_latency_ms_p50": res["overall"]["chunk_latency_ms_p50"], "strategy": args.strategy,
        "execute_steps": args.execute_steps, "expert": args.expert, "dataset_cameras": list(cameras),
        "train_config": cfg,
        "reference": REFERENCE, "machine": machine()}, table, command("mt10.py"))


if __name__ == "__main__":
    main()
