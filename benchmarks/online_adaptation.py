"""Online adaptation benchmark: DAgger-style corrections on a weak task, success after every adaptation.

The scripted expert plays the person (``vlaforge deploy-sim --corrections``): the policy runs the weak task
under the full runtime (safety layer, chunk executor, monitor); once per chunk its first action is compared
with ``env.expert_action()`` and when the L2 gap exceeds ``--threshold`` the expert takes over with its
chunk (rolled out H steps on a snapshot of the simulator) and the chunk is stored as a correction. After
every ``--adapt-every`` corrections (at the end of the episode in which they were reached, the robot at
rest) the :class:`OnlineAdapter` fine-tunes ``--train-groups`` on corrections mixed with replayed training
data (``--replay-fraction``), and success is measured on the weak task and on every other trained task.

Seeds: evaluation episodes 1000, 1001, ... (as ``vlaforge eval``); correction episodes 2000, 2001, ...;
the demonstrations were 0... Output: ``benchmarks/results/<name>.json|.md|.png`` (learning curve: success
vs corrections, one line per task).

    .venv/bin/python benchmarks/online_adaptation.py --checkpoint CKPT --dataset DATA --weak-task TASK \
        [--eval-episodes 10] [--max-corrections 200] [--adapt-every 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vlaforge.benchmarking import command, machine, markdown_table, write

RESULTS = Path(__file__).resolve().parent / "results"



def success_rate(policy, task: str, seeds: range, max_steps: int) -> float:
    """Success rate of the (in-memory, possibly adapted) policy on ``seeds``: ``vlaforge eval``'s rollouts
    (recycle, half chunks, stop at the first success) run in this process on the live policy, in fp32."""
    from vlaforge.evaluation.rollout import EvalConfig, evaluate

    cfg = EvalConfig(tasks=(task,), episodes=len(seeds), seed=seeds[0], max_steps=max_steps, videos=0,
                     bf16=False)
    return evaluate(cfg, policy=policy, progress=False, print_table=False)["tasks"][task]["success_rate"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True, help="the training data: replayed during adaptation")
    ap.add_argument("--weak-task", default=None, help="task to correct (default: the lowest initial success)")
    ap.add_argument("--tasks", default=None,
                    help="other trained tasks to watch (default: the dataset's tasks)")
    ap.add_argument("--eval-episodes", type=int, default=10, help="episodes per task per measurement")
    ap.add_argument("--max-corrections", type=int, default=200)
    ap.add_argument("--max-episodes", type=int, default=100, help="cap on correction episodes")
    ap.add_argument("--adapt-every", type=int, default=50)
    ap.add_argument("--adapt-steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--replay-fraction", type=float, default=0.5)
    ap.add_argument("--anchor", type=float, default=0.0, help="L2-SP weight toward the deployed weights")
    ap.add_argument("--train-groups", default="heads", help="comma-separated: heads, fusion, ...")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="L2 gap to the expert that triggers a correction")
    ap.add_argument("--holdout-episodes", type=int, default=0,
                    help="at the end, the weak task on this many further seeds (after the curve's), final "
                         "version vs version 0 (rolled back to)")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--record-to", default=None, help="also record the corrections as a dataset here")
    ap.add_argument("--name", default="online_adaptation", help="results file name under benchmarks/results/")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vlaforge.apps.deploy_sim import DeploySimConfig, SimDeployment
    from vlaforge.data import ChunkDataset, DatasetReader
    from vlaforge.online.adaptation import OnlineAdapter
    from vlaforge.policy import Policy

    t_start = time.perf_counter()
    policy = Policy.load(args.checkpoint)
    trained = sorted({e.task_name for e in DatasetReader(args.dataset).episodes if e.task_name})
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else trained

    def evaluate(task: str) -> float:
        return round(success_rate(policy, task, range(1000, 1000 + args.eval_episodes), args.max_steps), 3)

    first = {t: evaluate(t) for t in tasks}
    weak = args.weak_task or min(first, key=first.get)
    if weak not in first:
        first[weak] = evaluate(weak)
    print(f"initial success: {first}; weak task: {weak}")
    replay = ChunkDataset(args.dataset, policy.config.chunk_size, split="train")
    adapter = OnlineAdapter(policy, adapt_every=args.adapt_every, replay=replay,
                            train_groups=tuple(g.strip() for g in args.train_groups.split(",")), lr=args.lr,
                            steps=args.adapt_steps, batch_size=args.batch_size,
                            replay_fraction=args.replay_fraction, record_to=args.record_to, auto_adapt=False,
                            anchor=args.anchor)
    cfg = DeploySimConfig(checkpoint=args.checkpoint, task=weak, max_steps=args.max_steps, corrections=True,
                          correction_threshold=args.threshold, adapt_every=args.adapt_every,
                          max_chunk_age_s=60.0, out=None, progress=False)
    dep = SimDeployment(policy, cfg, adapter=adapter)
    curve = [{"corrections": 0, "version": 0, "episodes": 0, "adapt_s": None, "loss": None, **first}]
    ep_success = []
    from tqdm import tqdm

    bar = tqdm(total=args.max_corrections, desc=f"corrections on {weak}", unit="corr", dynamic_ncols=True)
    try:
        for i in range(args.max_episodes):
            # past the cap, keep going until the corrections since the last adaptation have been adapted on
            # (adaptations happen at episode ends, so the counts at adaptations are not multiples of
            # adapt_every)
            if adapter.corrections_total >= args.max_corrections and adapter.pending == 0:
                break
            ep = dep.run_episode(2000 + i)
            ep_success.append(ep["success"])
            bar.update(max(0, min(ep["corrections"], args.max_corrections - bar.n)))
            bar.set_postfix(version=adapter.version, success=f"{sum(ep_success)}/{len(ep_success)}")
            a = ep["adaptation"]
            if a is not None:
                point = {"corrections": adapter.corrections_total, "version": a["version"], "episodes": i + 1,
                         "adapt_s": round(a["wall_s"], 2),
                         "loss": f"{a['loss_first']:.3f}->{a['loss_last']:.3f}"}
                point.update({t: evaluate(t) for t in sorted(set(tasks) | {weak})})
                curve.append(point)
                tqdm.write(f"version {a['version']} after {adapter.corrections_total} corrections: "
                           + ", ".join(f"{t} {point[t]:.2f}" for t in sorted(set(tasks) | {weak})))
        holdout = None
        if args.holdout_episodes > 0:
            # the curve's 20-seed points move by ~10 points between evaluations of similar weights: compare
            # the final weights with the deployed ones on more seeds the curve never used
            seeds = range(1000 + args.eval_episodes, 1000 + args.eval_episodes + args.holdout_episodes)
            final_version = adapter.version
            final = success_rate(policy, weak, seeds, args.max_steps)
            while adapter.version > 0:
                adapter.rollback()
            base = success_rate(policy, weak, seeds, args.max_steps)
            holdout = {"task": weak, "seeds": [seeds[0], seeds[-1]], "version": final_version,
                       "base": round(base, 3), "final": round(final, 3)}
            tqdm.write(f"held-out seeds {seeds[0]}-{seeds[-1]}: version 0 {base:.2f}, "
                       f"version {final_version} {final:.2f}")
    finally:
        bar.close()
        dep.close()
        adapter.close()

    watched = sorted(set(tasks) | {weak})
    adapt_times = [p["adapt_s"] for p in curve if p["adapt_s"] is not None]
    payload = {"checkpoint": args.checkpoint, "dataset": args.dataset, "weak_task": weak, "tasks": watched,
               "eval_seeds": [1000, 1000 + args.eval_episodes - 1], "settings": vars(args),
               "curve": curve, "holdout": holdout, "correction_episodes": len(ep_success),
               "correction_episode_success": float(np.mean(ep_success)) if ep_success else None,
               "adapt_s_max": max(adapt_times) if adapt_times else None,
               "wall_s": time.perf_counter() - t_start,
               "machine": machine()}
    head = (f"weak task `{weak}`; groups {args.train_groups}; {args.adapt_steps} steps x batch "
            f"{args.batch_size}, replay {args.replay_fraction}; success over {args.eval_episodes} seeds per "
            f"task; "
            f"adaptation wall time max {payload['adapt_s_max']} s\n\n")
    table = head + markdown_table(curve, ["corrections", "version", "episodes", "adapt_s", "loss", *watched])
    if holdout:
        table += (f"\nHeld-out seeds {holdout['seeds'][0]}-{holdout['seeds'][1]} ({args.holdout_episodes} "
                  f"episodes of `{weak}`): version 0 {holdout['base']:.2f}, version {holdout['version']} "
                  f"{holdout['final']:.2f}\n")
    _plot(curve, watched, weak, RESULTS / f"{args.name}.png")
    write(args.name, payload, table, command("online_adaptation.py", argv))
    return payload


def _plot(curve: list[dict], tasks: list[str], weak: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [p["corrections"] for p in curve]
    for t in tasks:
        ax.plot(x, [p[t] for p in curve], "o-", lw=2.5 if t == weak else 1,
                label=f"{t} (corrected)" if t == weak else t)
    ax.set_xlabel("corrections")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("online adaptation: success vs corrections")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
