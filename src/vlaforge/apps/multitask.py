"""The multi-task benchmarks' pipeline (``benchmarks/mt10.py``, ``benchmarks/mt50.py``): their shared
command-line options, record -> train -> evaluate with reuse of whatever is finished, and the line under their
tables."""

from __future__ import annotations

import json
from pathlib import Path

from vlaforge.benchmarking import train_minutes


def multitask_arguments(ap, root: str, preset: str, episodes: int) -> None:
    """The command-line options of the multi-task benchmarks (MT10, MT50), added to argparse parser ``ap``."""
    from vlaforge.config import head_names

    ap.add_argument("--head", default="flow", choices=head_names())
    ap.add_argument("--root", default=root)
    ap.add_argument("--preset", default=preset)
    ap.add_argument("--episodes", type=int, default=episodes, help="evaluation episodes per task")
    ap.add_argument("--demos", type=int, default=50, help="demonstrations per task")
    ap.add_argument("--done-demos", type=int, default=0,
                    help="demonstrations of holding still when told to do what a scene already shows "
                         "done, per already-done task on these tasks' scenes (DONE_TASKS in "
                         "vlaforge.sim.instructions: a closed window told 'close the window'); trained on, "
                         "not evaluated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategy", default="recycle", choices=["recycle", "ensemble", "async"],
                    help="chunk execution in evaluation (recycle: open loop over half the chunk)")
    ap.add_argument("--set", action="append", default=[], help="training override (repeatable)")
    ap.add_argument("--expert", default="metaworld", help="the demonstrations' expert (metaworld, centred)")
    ap.add_argument("--cameras", default=None,
                    help="cameras recorded in the dataset (comma list; default: those the policy reads, the "
                         "preset's or --set policy.cameras)")
    ap.add_argument("--execute-steps", type=int, default=None,
                    help="actions executed per chunk in evaluation (default: half the chunk)")
    ap.add_argument("--max-steps", type=int, default=300, help="evaluation episode length cap")


def data_suffix(expert: str = "metaworld", cameras: tuple[str, ...] = ("corner",), image_size: int = 96,
                default_cameras: tuple[str, ...] = ("corner",), default_size: int = 96) -> str:
    """``[-<expert>][-<cameras>][-<size>px]``: what shapes recorded data, each part named unless it is the
    default (Meta-World's own expert, ``default_cameras``, ``default_size``)."""
    return "".join([f"-{expert}" if expert != "metaworld" else "",
                    f"-{'+'.join(cameras)}" if tuple(cameras) != tuple(default_cameras) else "",
                    f"-{image_size}px" if image_size != default_size else ""])


def recorded_dataset(root: Path, tasks: list[str], demos: int, expert: str = "metaworld",
                     cameras: tuple[str, ...] = ("corner",),
                     default_cameras: tuple[str, ...] = ("corner",), workers: int = 2,
                     image_size: int = 96, default_size: int = 96, extra: dict[str, int] | None = None,
                     tag: str = "") -> Path:
    """``demos`` scripted demonstrations per task, and ``extra``'s tasks with their own counts, in
    ``<root>/data<data_suffix(...)><tag>``: recorded, or finished where a run stopped, or reused when
    complete. A dataset there that holds more episodes of a task, or other tasks, than asked was recorded by
    another command: refused with an error rather than trained on. Returns the dataset's directory."""
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.apps.demo import episode_counts

    data = Path(root) / ("data" + data_suffix(expert, cameras, image_size, default_cameras, default_size)
                         + tag)
    wanted = {**{t: demos for t in tasks}, **(extra or {})}
    held = episode_counts(data)
    surplus = {t: n for t, n in held.items() if n > wanted.get(t, 0)}
    if surplus:
        raise ValueError(f"{data} holds {', '.join(f'{n} episodes of {t}' for t, n in surplus.items())}, "
                         f"more than asked for ({', '.join(f'{n} of {t}' for t, n in wanted.items())}): "
                         "another command recorded it; give this one a --root of its own")
    by_count: dict[int, list[str]] = {}
    for t, n in wanted.items():
        by_count.setdefault(n, []).append(t)
    for n, group in by_count.items():
        if any(held.get(t, 0) < n for t in group):
            collect(CollectConfig(out=data, tasks=group, episodes_per_task=n, image_size=image_size,
                                  cameras=tuple(cameras), workers=workers, resume=data.exists(),
                                  expert=expert))
    return data


def done_tasks(tasks) -> list[str]:
    """The already-done tasks (``DONE_TASKS``) that play on the scenes of ``tasks``, in catalogue order."""
    from vlaforge.sim.instructions import DONE_TASKS

    return [name for name, (scene, _) in DONE_TASKS.items() if scene in tasks]


def multitask_run(args, tasks: list[str], name: str) -> dict:
    """The multi-task benchmarks' pipeline, as ``multitask_arguments`` say: record ``--demos`` scripted
    demonstrations per task (96 px, ``--cameras`` or else the cameras the policy reads, ``--expert``) into
    ``<root>/data[-<expert>][-<cameras>]`` (with ``--done-demos`` N > 0 also N of each already-done task on
    the scenes of ``tasks``, ``done_tasks``, in ``...-done<N>``), train ``--preset`` with ``--head`` and the
    ``--set`` overrides into ``<root>/train-<name>[-done<N>]``, evaluate its final policy on ``--episodes``
    unseen seeds per task (1000+) into ``<root>/eval-<name>[-done<N>][-h<N>]``. Finished datasets and
    trainings are reused, so a killed run goes on where it stopped. Returns what a result records: the
    evaluation's ``tasks`` and ``overall``, the run's figures, its training config."""
    import time

    from vlaforge.apps.collect import parse_cameras
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.policy import Policy
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    root = Path(args.root)
    cameras = (parse_cameras(args.cameras) if args.cameras
               else build_config(args.preset, list(args.set)).policy.cameras)
    done = done_tasks(tasks) if args.done_demos > 0 else []
    name += f"-done{args.done_demos}" if done else ""
    run = root / f"train-{name}"
    out = root / (f"eval-{name}" + (f"-h{args.execute_steps}" if args.execute_steps else ""))
    t0 = time.perf_counter()
    # the already-done demonstrations make another dataset: a directory of its own (-done<N>)
    data = recorded_dataset(root, tasks, args.demos, args.expert, cameras, workers=args.workers,
                            extra={t: args.done_demos for t in done},
                            tag=f"-done{args.done_demos}" if done else "")
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_or_resume(build_config(args.preset, [f"dataset={data}", f"out={run}", f"policy.head={args.head}",
                                               *args.set]))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(EvalConfig(checkpoint=str(run / FINAL), tasks=tuple(tasks), episodes=args.episodes,
                              seed=1000, workers=args.workers, out=str(out), strategy=args.strategy,
                              execute_steps=args.execute_steps, max_steps=args.max_steps))
    return {"head": args.head, "tasks": res["tasks"], "overall": res["overall"],
            "mean_success": res["overall"]["success_rate"],
            "chunk_latency_ms_p50": res["overall"]["chunk_latency_ms_p50"],
            "params": Policy.load(run / FINAL).num_parameters(),
            "train_minutes": round(train_minutes(run) or t_train / 60, 1),
            "collect_minutes": round(t_collect / 60, 1),
            "eval_minutes": round((time.perf_counter() - t0) / 60, 1),
            "episodes": args.episodes, "demos": args.demos, "strategy": args.strategy,
            "done_tasks": done, "done_demos": args.done_demos if done else 0,
            "max_steps": args.max_steps,
            "execute_steps": args.execute_steps, "expert": args.expert, "dataset": str(data),
            "dataset_cameras": list(cameras), "train_config": json.loads((run / "config.json").read_text())}


def multitask_result_name(args, bench: str) -> str:
    """The results file name: ``--name`` or ``<bench>_<head>``, then ``_done<N>`` with ``--done-demos N``
    and ``_h<N>`` with ``--execute-steps N``."""
    name = getattr(args, "name", "") or f"{bench}_{args.head}"
    return (name + (f"_done{args.done_demos}" if getattr(args, "done_demos", 0) > 0 else "")
            + (f"_h{args.execute_steps}" if args.execute_steps else ""))


def multitask_task_rows(res: dict, **columns) -> list[dict]:
    """One table row per task of a multi-task result: its success and 95% interval, plus ``columns``: name ->
    function of the task name (e.g. its group)."""
    return [{"task": t, **{k: f(t) for k, f in columns.items()}, "success": f"{v['success_rate'] * 100:.0f}%",
             "ci95": f"{v['ci95'][0] * 100:.0f}-{v['ci95'][1] * 100:.0f}%"} for t, v in res["tasks"].items()]


def multitask_footer(res: dict) -> str:
    """One line under a multi-task result's table: the policy, its training and how it was run."""
    return (f"\nHead `{res['head']}`, {res['params'] / 1e6:.2f} M parameters, training "
            f"{res['train_minutes']:.1f} min, chunk latency p50 {res['chunk_latency_ms_p50']} ms, "
            + (f"{res['execute_steps']} actions executed per chunk, " if res["execute_steps"]
               else "half of each chunk executed, ") +
            f"{res['expert']} expert, "
            f"{res['episodes']} episodes per task.")
