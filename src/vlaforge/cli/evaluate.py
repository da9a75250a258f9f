"""``vlaforge eval`` (logic in vlaforge.evaluation.rollout)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import BF16_HELP


def eval_cmd(
    checkpoint: str = typer.Option(..., help="policy checkpoint directory (Policy.load)"),
    tasks: str = typer.Option("mt10", help="task set (mt10, mt50, ml10-train, ml10-test, panda) or "
                                           "comma-separated names (Meta-World or robosuite)"),
    episodes: int = typer.Option(20, help="episodes per task"),
    seed: int = typer.Option(1000, help="first episode seed; episodes use seed, seed+1, ..."),
    out: str = typer.Option("eval", help="output directory: results.json, report.md, report.html, videos/"),
    execute_steps: int = typer.Option(0, help="actions played per chunk before predicting again "
                                              "(0: half the chunk)"),
    strategy: str = typer.Option("recycle", help="chunk execution: recycle | ensemble | async"),
    workers: int = typer.Option(1, help="parallel worker processes, each with its own renderer"),
    max_steps: int = typer.Option(300, help="step limit per episode (as in collection)"),
    videos: int = typer.Option(1, help="episodes per task recorded as mp4"),
    bf16: str = typer.Option("auto", help=BF16_HELP),
) -> None:
    """Roll a policy out in its simulator (Meta-World, robosuite) on fixed seeds; success, smoothness,
    latency, report and videos."""
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim import resolve_tasks

    evaluate(EvalConfig(checkpoint=checkpoint, tasks=tuple(resolve_tasks(tasks)), episodes=episodes,
                        seed=seed, execute_steps=execute_steps or None, strategy=strategy, workers=workers,
                        max_steps=max_steps, videos=videos, out=out, bf16=bf16))
