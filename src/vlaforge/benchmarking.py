"""What every benchmark (``benchmarks/<name>.py`` in a source checkout) shares: the machine it ran on, a
markdown table, the command line that ran it, and the writer of ``benchmarks/results/<name>.json`` +
``.md``.

It lives in the library so a benchmark imports it like anything else: ``python benchmarks/NAME.py``,
``python -m benchmarks.NAME`` and ``vlaforge bench NAME`` all work without editing ``sys.path``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path


def results_dir() -> Path:
    """``results/`` beside the benchmark that is running (the ``__main__`` script's directory)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main:
        raise RuntimeError("vlaforge.benchmarking.results_dir: no running script (expected a benchmark run "
                           "as `python benchmarks/NAME.py` or `vlaforge bench NAME`); pass the directory "
                           "instead")
    return Path(main).resolve().parent / "results"


def machine(precision: str | None = None) -> dict:
    """Where a benchmark ran: CPU model, torch's CPU capability, bf16 support, threads, torch version (and any
    emulation of a slower CPU), the load, the date and, when given, the precision it used."""
    from vlaforge.precision import machine_info, machine_kind

    m = machine_info()
    m.update(kind=machine_kind(m), load_avg_1m=round(os.getloadavg()[0], 2),
             date=_dt.date.today().isoformat())
    if precision is not None:
        m["precision"] = precision
    return m


def machine_line(m: dict) -> str:
    """The machine as one markdown line (``write`` puts it under every table)."""
    from vlaforge.precision import describe_machine

    if "cpu_capability" not in m:  # a result recorded before the machine was described in full
        return f"Machine: {json.dumps(m)}"
    line = (f"Machine: {describe_machine(m)}; load average {m.get('load_avg_1m')} at the start; "
            f"{m.get('date')}")
    return line + (f". Precision: {m['precision']}." if m.get("precision") else ".")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as a markdown table with ``columns`` (a missing value is an empty cell)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that ran a benchmark, as recorded beside its results: ``python benchmarks/<script>``
    followed by its arguments (``argv``, or the process's own)."""
    import shlex

    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


def write(name: str, payload: dict, table: str, command: str, out: Path | None = None) -> None:
    """Write ``<out>/<name>.json`` (``payload``) and ``<out>/<name>.md`` (the command, ``table`` and the
    machine line), each atomically, and print the table; ``out`` defaults to :func:`results_dir`."""
    from vlaforge.fsutil import write_atomic

    out = results_dir() if out is None else Path(out)
    write_atomic(out / f"{name}.json", json.dumps(payload, indent=2))
    md = f"# {name}\n\nCommand: `{command}`\n\n{table}\n{machine_line(payload.get('machine', {}))}\n"
    write_atomic(out / f"{name}.md", md)
    print(table)


def run_log(run: str | Path) -> list[dict]:
    """A training run's ``log.jsonl`` events (empty when it has none yet)."""
    log = Path(run) / "log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def train_minutes(run: str | Path) -> float | None:
    """Training time from the run's own log: its clock survives a resume, so time spent on an interrupted
    attempt's restart is not counted. ``None`` when the run has logged nothing."""
    times = [e["time"] for e in run_log(run) if isinstance(e.get("time"), (int, float))]
    return max(times) / 60 if times else None


def run_precision(run: str | Path) -> str | None:
    """The precision a run trained in (``fp32`` / ``bf16``: what ``bf16=auto`` chose on its machine)."""
    return next((e.get("precision") for e in run_log(run) if e.get("event") == "precision"), None)



def multitask_arguments(ap, root: str, preset: str, episodes: int) -> None:
    """The command-line options of the multi-task benchmarks (MT10, MT50), added to argparse parser ``ap``."""
    from vlaforge.config import head_names

    ap.add_argument("--head", default="flow", choices=head_names())
    ap.add_argument("--root", default=root)
    ap.add_argument("--preset", default=preset)
    ap.add_argument("--episodes", type=int, default=episodes, help="evaluation episodes per task")
    ap.add_argument("--demos", type=int, default=50, help="demonstrations per task")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strategy", default="recycle", choices=["recycle", "ensemble", "async"],
                    help="chunk execution in evaluation (recycle: open loop over half the chunk)")
    ap.add_argument("--set", action="append", default=[], help="training override (repeatable)")
    ap.add_argument("--expert", default="metaworld", help="the demonstrations' expert (metaworld, centred)")
    ap.add_argument("--cameras", default="corner", help="cameras recorded in the dataset (comma list)")
    ap.add_argument("--execute-steps", type=int, default=None,
                    help="actions executed per chunk in evaluation (default: half the chunk)")


def multitask_run(args, tasks: list[str], name: str) -> dict:
    """The multi-task benchmarks' pipeline, as ``multitask_arguments`` say: record ``--demos`` scripted
    demonstrations per task (96 px, ``--cameras``, ``--expert``) into ``<root>/data[-<expert>][-<cameras>]``,
    train ``--preset`` with ``--head`` and the ``--set`` overrides into ``<root>/train-<name>``, evaluate its
    final policy on ``--episodes`` unseen seeds per task (1000+) into ``<root>/eval-<name>[-h<N>]``.
    Finished datasets and trainings are reused, so a killed run goes on where it stopped. Returns what a
    result records: the evaluation's ``tasks`` and ``overall``, the run's figures, its training config."""
    import time

    from vlaforge.apps.collect import CollectConfig, collect, parse_cameras
    from vlaforge.apps.demo import _dataset_complete
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.policy import Policy
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    root, cameras = Path(args.root), parse_cameras(args.cameras)
    data = root / "-".join(["data", *([args.expert] if args.expert != "metaworld" else []),
                            *(["+".join(cameras)] if cameras != ("corner",) else [])])
    run = root / f"train-{name}"
    out = root / (f"eval-{name}" + (f"-h{args.execute_steps}" if args.execute_steps else ""))
    t0 = time.perf_counter()
    if not _dataset_complete(data, tasks, args.demos):
        collect(CollectConfig(out=data, tasks=list(tasks), episodes_per_task=args.demos, image_size=96,
                              cameras=cameras, workers=args.workers, resume=data.exists(),
                              expert=args.expert))
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_or_resume(build_config(args.preset, [f"dataset={data}", f"out={run}", f"policy.head={args.head}",
                                               *args.set]))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(EvalConfig(checkpoint=str(run / FINAL), tasks=tuple(tasks), episodes=args.episodes,
                              seed=1000, workers=args.workers, out=str(out), strategy=args.strategy,
                              execute_steps=args.execute_steps))
    return {"head": args.head, "tasks": res["tasks"], "overall": res["overall"],
            "mean_success": res["overall"]["success_rate"],
            "chunk_latency_ms_p50": res["overall"]["chunk_latency_ms_p50"],
            "params": Policy.load(run / FINAL).num_parameters(),
            "train_minutes": round(train_minutes(run) or t_train / 60, 1),
            "collect_minutes": round(t_collect / 60, 1),
            "eval_minutes": round((time.perf_counter() - t0) / 60, 1),
            "episodes": args.episodes, "demos": args.demos, "strategy": args.strategy,
            "execute_steps": args.execute_steps, "expert": args.expert, "dataset": str(data),
            "dataset_cameras": list(cameras), "train_config": json.loads((run / "config.json").read_text())}


def multitask_footer(res: dict) -> str:
    """One line under a multi-task result's table: the policy, its training and how it was run."""
    return (f"\nHead `{res['head']}`, {res['params'] / 1e6:.2f} M parameters, training "
            f"{res['train_minutes']:.1f} min, chunk latency p50 {res['chunk_latency_ms_p50']} ms, "
            + (f"{res['execute_steps']} actions executed per chunk, " if res["execute_steps"]
               else "half of each chunk executed, ") +
            f"{res['expert']} expert, "
            f"{res['episodes']} episodes per task.")
