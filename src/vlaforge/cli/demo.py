"""``vlaforge demo`` (logic in vlaforge.apps.demo; ``make demo`` runs it)."""

from __future__ import annotations

import typer


def demo_cmd(
    root: str = typer.Option("runs/demo", help="where the dataset, the training run and the evaluation go"),
    episodes_per_task: int = typer.Option(50, help="scripted demonstrations per task"),
    eval_episodes: int = typer.Option(20, help="evaluation episodes per task (seeds 1000, 1001, ...)"),
    workers: int = typer.Option(2, help="processes for collection and evaluation"),
    preset: str = typer.Option("demo", help="training preset"),
    override: list[str] = typer.Option([], "--set",
                                       help="training overrides, e.g. --set steps=800 (repeatable)"),
    force_eval: bool = typer.Option(False,
                                    help="evaluate again even when a report for this checkpoint exists"),
    strategy: str = typer.Option("recycle", help="chunk execution in evaluation: recycle | ensemble | async"),
) -> None:
    """The whole loop on three Meta-World tasks: collect demonstrations, train one language-conditioned \
policy,
    evaluate it on unseen seeds. Re-running skips finished steps."""
    from vlaforge.apps.demo import run_demo

    run_demo(root, episodes_per_task, eval_episodes, workers, preset, tuple(override), force_eval, strategy)
