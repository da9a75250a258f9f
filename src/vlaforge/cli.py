"""The ``vlaforge`` command line. Commands are thin: they parse flags and call into the library.

Heavy imports happen inside each command so ``vlaforge --help`` stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="vlaforge",
    help="Vision-Language-Action policies: collect demonstrations, train, evaluate, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Vision-Language-Action policies: collect demonstrations, train, evaluate, deploy."""


@app.command("presets")
def presets_cmd() -> None:
    """List the named policy presets."""
    from vlaforge import presets

    for name in presets.names():
        typer.echo(name)


# --- commands from each area register below (keep each block small; logic lives in the library) ---

# --- data: collect, dataset info (logic in vlaforge.data.collect) ---
dataset_app = typer.Typer(help="Inspect datasets (LeRobot v3.0 layout).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@app.command("collect")
def collect_cmd(
    out: str = typer.Option(..., "--out", help="dataset directory to create (or to continue with --resume)"),
    tasks: str = typer.Option("mt10", "--tasks", help="task set (mt10, ...) or comma-separated task names"),
    episodes_per_task: int = typer.Option(50, "--episodes-per-task", min=1),
    image_size: int = typer.Option(96, "--image-size", min=8),
    cameras: str = typer.Option("corner", "--cameras", help="comma-separated camera names"),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes, each rolling out whole tasks"),
    resume: bool = typer.Option(False, "--resume", help="continue a dataset that was interrupted"),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="also keep episodes the expert failed"),
    seed_start: int = typer.Option(0, "--seed-start", min=0, help="first episode seed (evaluation uses 1000+)"),
    max_steps: int = typer.Option(300, "--max-steps", min=1),
) -> None:
    """Record scripted-expert demonstrations from Meta-World."""
    from pathlib import Path

    from vlaforge.data.collect import CollectConfig, collect, parse_cameras
    from vlaforge.sim.metaworld import resolve_tasks

    cfg = CollectConfig(out=Path(out), tasks=resolve_tasks(tasks), episodes_per_task=episodes_per_task,
                        image_size=image_size, cameras=parse_cameras(cameras), workers=workers, resume=resume,
                        keep_failed=keep_failed, seed_start=seed_start, max_steps=max_steps)
    for line in collect(cfg).lines():
        typer.echo(line)


@dataset_app.command("info")
def dataset_info_cmd(path: str = typer.Argument(..., help="dataset directory")) -> None:
    """Episodes, frames, tasks, features and statistics of a dataset."""
    from vlaforge.data.collect import describe
    from vlaforge.data.format import DatasetFormatError

    try:
        lines = describe(path)
    except DatasetFormatError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    for line in lines:
        typer.echo(line)
# --- end data ---


# --- evaluation ---------------------------------------------------------------------------------------------------
@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Option(..., help="policy checkpoint directory (Policy.load)"),
    tasks: str = typer.Option("mt10", help="task set (mt10, mt50, ml10-train, ml10-test) or comma-separated names"),
    episodes: int = typer.Option(20, help="episodes per task"),
    seed: int = typer.Option(1000, help="first episode seed; episodes use seed, seed+1, ..."),
    out: str = typer.Option("eval", help="output directory: results.json, report.md, report.html, videos/"),
    execute_steps: int = typer.Option(0, help="actions played per chunk before predicting again (0: half the chunk)"),
    strategy: str = typer.Option("recycle", help="chunk execution: recycle | ensemble | async"),
    workers: int = typer.Option(1, help="parallel worker processes, each with its own renderer"),
    max_steps: int = typer.Option(300, help="step limit per episode (as in collection)"),
    videos: int = typer.Option(1, help="episodes per task recorded as mp4"),
) -> None:
    """Roll a policy out in Meta-World on fixed seeds; success, smoothness, latency, report and videos."""
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim.metaworld import resolve_tasks

    evaluate(EvalConfig(checkpoint=checkpoint, tasks=tuple(resolve_tasks(tasks)), episodes=episodes, seed=seed,
                        execute_steps=execute_steps or None, strategy=strategy, workers=workers, max_steps=max_steps,
                        videos=videos, out=out))


# --- training (logic in vlaforge.training.commandline; `vlaforge train --help` lists every config field) ---------
@app.command("train", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cmd(ctx: typer.Context) -> None:
    """Train a policy: --preset NAME --dataset DIR --out RUN_DIR [--field.path=value ...] (--help: every field)."""
    from vlaforge.training.commandline import main as train_main

    raise typer.Exit(train_main(list(ctx.args)))
# --- end training ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
