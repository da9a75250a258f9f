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


BF16_HELP = ("inference under bf16 autocast: auto (only where this CPU runs bf16 natively and faster), true or "
             "false")


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

# --- data: collect, dataset info (logic in vlaforge.apps.collect, vlaforge.data.info) ---
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
    action_noise: float = typer.Option(0.0, "--action-noise", min=0.0, max=2.0,
                                       help="std of correlated noise added to the executed hand motion (DART); "
                                            "the clean expert action is recorded"),
) -> None:
    """Record scripted-expert demonstrations from Meta-World."""
    from pathlib import Path

    from vlaforge.apps.collect import CollectConfig, collect, parse_cameras
    from vlaforge.sim.metaworld import resolve_tasks

    cfg = CollectConfig(out=Path(out), tasks=resolve_tasks(tasks), episodes_per_task=episodes_per_task,
                        image_size=image_size, cameras=parse_cameras(cameras), workers=workers, resume=resume,
                        keep_failed=keep_failed, seed_start=seed_start, max_steps=max_steps,
                        action_noise=action_noise)
    for line in collect(cfg).lines():
        typer.echo(line)


@dataset_app.command("info")
def dataset_info_cmd(path: str = typer.Argument(..., help="dataset directory")) -> None:
    """Episodes, frames, tasks, features and statistics of a dataset."""
    from vlaforge.data.info import describe

    for line in describe(path):
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
    bf16: str = typer.Option("auto", help=BF16_HELP),
) -> None:
    """Roll a policy out in Meta-World on fixed seeds; success, smoothness, latency, report and videos."""
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim.metaworld import resolve_tasks

    evaluate(EvalConfig(checkpoint=checkpoint, tasks=tuple(resolve_tasks(tasks)), episodes=episodes, seed=seed,
                        execute_steps=execute_steps or None, strategy=strategy, workers=workers, max_steps=max_steps,
                        videos=videos, out=out, bf16=bf16))


# --- training (logic in vlaforge.training.commandline; `vlaforge train --help` lists every config field) ---------
@app.command("train", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cmd(ctx: typer.Context) -> None:
    """Train a policy: --preset NAME --dataset DIR --out RUN_DIR [--field.path=value ...] (--help: every field)."""
    from vlaforge.training.commandline import main as train_main

    raise typer.Exit(train_main(list(ctx.args)))
# --- end training ---


# --- runtime: deploy-sim (logic in vlaforge.apps.deploy_sim) ---------------------------------------------
@app.command("deploy-sim")
def deploy_sim_cmd(
    checkpoint: str = typer.Option(..., help="policy checkpoint directory (Policy.load)"),
    task: str = typer.Option(..., help="Meta-World task, e.g. drawer-open-v3"),
    episodes: int = typer.Option(3, min=1),
    strategy: str = typer.Option("recycle", help="chunk execution: recycle | ensemble | async"),
    recompute_every: int = typer.Option(0, help="actions played per chunk before predicting again (0: half)"),
    inject: list[str] = typer.Option([], help="fault(s): nan | force | slow (repeat or comma-separate)"),
    inject_step: int = typer.Option(20, help="control step of each episode at which the faults fire"),
    slow_s: float = typer.Option(0.0, help="inference delay of the slow fault (0: 3 x --max-chunk-age)"),
    max_chunk_age: float = typer.Option(0.5, help="seconds after which a chunk is stale and never executed"),
    seed: int = typer.Option(1000, help="first episode seed"),
    max_steps: int = typer.Option(300),
    max_force: float = typer.Option(50.0, help="force/torque limit of the safety layer"),
    realtime: bool = typer.Option(False, help="pace the loop at the control period (1/80 s)"),
    confidence: bool = typer.Option(False, help="gate on the checkpoint's calibrated confidence.json"),
    corrections: bool = typer.Option(False, help="the scripted expert corrects the policy; adapt online"),
    correction_threshold: float = typer.Option(0.5, help="L2 gap to the expert that triggers a correction"),
    adapt_every: int = typer.Option(50, help="corrections between adaptations"),
    dataset: str = typer.Option("", help="replay data for adaptation (dataset directory)"),
    threads: int = typer.Option(1, help="torch threads for inference (0: torch's default)"),
    bf16: str = typer.Option("auto", help=BF16_HELP),
    out: str = typer.Option("deploy-sim", help="output dir: summary.json, monitor_report.json, monitor.png"),
) -> None:
    """Run the deployment runtime (safety, chunking, monitor) in Meta-World as on a robot; inject faults."""
    from vlaforge.apps.deploy_sim import DeploySimConfig, run_deploy_sim, summary_lines

    kinds = tuple(k.strip() for item in inject for k in item.split(",") if k.strip())
    cfg = DeploySimConfig(checkpoint=checkpoint, task=task, episodes=episodes, strategy=strategy,
                          recompute_every=recompute_every or None, inject=kinds, inject_step=inject_step,
                          slow_s=slow_s or None, max_chunk_age_s=max_chunk_age, seed=seed,
                          max_steps=max_steps, max_force=max_force, realtime=realtime,
                          confidence=confidence, corrections=corrections,
                          correction_threshold=correction_threshold, adapt_every=adapt_every,
                          dataset=dataset or None, threads=threads or None, bf16=bf16, out=out)
    result = run_deploy_sim(cfg)
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"written: {out}/summary.json, {out}/monitor_report.json, {out}/monitor.png")
# --- end runtime: deploy-sim ---


# --- demo ---------------------------------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    root: str = typer.Option("runs/demo", help="where the dataset, the training run and the evaluation go"),
    episodes_per_task: int = typer.Option(50, help="scripted demonstrations per task"),
    eval_episodes: int = typer.Option(20, help="evaluation episodes per task (seeds 1000, 1001, ...)"),
    workers: int = typer.Option(2, help="processes for collection and evaluation"),
    preset: str = typer.Option("demo", help="training preset"),
    override: list[str] = typer.Option([], "--set", help="training overrides, e.g. --set steps=800 (repeatable)"),
    force_eval: bool = typer.Option(False, help="evaluate again even when a report for this checkpoint exists"),
    strategy: str = typer.Option("recycle", help="chunk execution in evaluation: recycle | ensemble | async"),
) -> None:
    """The whole loop on three Meta-World tasks: collect demonstrations, train one language-conditioned policy,
    evaluate it on unseen seeds. Re-running skips finished steps."""
    from vlaforge.apps.demo import run_demo

    run_demo(root, episodes_per_task, eval_episodes, workers, preset, tuple(override), force_eval, strategy)


#: exceptions that mean the input was wrong (a path, a name, a flag, a file's contents): every command reports them
#: as one ``error: ...`` line and exit status 2. The library raises these with messages that say what was
#: expected and what came; anything else is a bug and keeps its traceback. VLAFORGE_TRACEBACK=1 shows it for
#: these too.
INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def error_line(e: BaseException) -> str:
    """The one line printed for an input error (a KeyError's message without the quotes repr adds)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return "error: " + " ".join((msg or type(e).__name__).split())


def main(argv: list[str] | None = None) -> None:
    import os
    import sys

    try:
        app(args=argv)
    except Exception as e:  # noqa: BLE001 - sorted below: input errors become one line, the rest re-raise
        from vlaforge.data.video import VideoError  # a dataset's unreadable video: bad input too

        if not isinstance(e, (*INPUT_ERRORS, VideoError)) or os.environ.get("VLAFORGE_TRACEBACK"):
            raise
        print(error_line(e), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
