"""``vlaforge collect`` and ``vlaforge dataset info`` (logic in vlaforge.apps.collect, vlaforge.data.info)."""

from __future__ import annotations

import typer


def collect_cmd(
    out: str = typer.Option(..., "--out", help="dataset directory to create (or to continue with --resume)"),
    tasks: str = typer.Option("mt10", "--tasks", help="task set (mt10, ...) or comma-separated task names"),
    episodes_per_task: int = typer.Option(50, "--episodes-per-task", min=1),
    image_size: int = typer.Option(96, "--image-size", min=8),
    cameras: str = typer.Option("corner", "--cameras", help="comma-separated camera names (Meta-World: "
                                "corner, topview, ...; robosuite: agentview, robot0_eye_in_hand, ...)"),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes, each rolling out whole tasks"),
    resume: bool = typer.Option(False, "--resume", help="continue a dataset that was interrupted"),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="also keep episodes the expert failed"),
    seed_start: int = typer.Option(0, "--seed-start", min=0,
                                   help="first episode seed (evaluation uses 1000+)"),
    max_steps: int = typer.Option(300, "--max-steps", min=1),
    action_noise: float = typer.Option(0.0, "--action-noise", min=0.0, max=2.0,
                                       help="std of correlated noise added to the executed hand motion "
                                            "(DART); the clean expert action is recorded"),
    expert: str = typer.Option("metaworld", "--expert",
                               help="metaworld (its scripted policies) or centred (reach-v3's expert aims "
                                    "the gripper centre at the goal, not the hand; Meta-World's leaves it "
                                    "0.45 cm inside the success radius)"),
) -> None:
    """Record scripted-expert demonstrations (Meta-World or robosuite tasks; one robot per dataset)."""
    from pathlib import Path

    from vlaforge.apps.collect import CollectConfig, collect, parse_cameras
    from vlaforge.sim import resolve_tasks

    cfg = CollectConfig(out=Path(out), tasks=resolve_tasks(tasks), episodes_per_task=episodes_per_task,
                        image_size=image_size, cameras=parse_cameras(cameras), workers=workers, resume=resume,
                        keep_failed=keep_failed, seed_start=seed_start, max_steps=max_steps,
                        action_noise=action_noise, expert=expert)
    for line in collect(cfg).lines():
        typer.echo(line)


def dataset_info_cmd(path: str = typer.Argument(..., help="dataset directory")) -> None:
    """Episodes, frames, tasks, features and statistics of a dataset."""
    from vlaforge.data.info import describe

    for line in describe(path):
        typer.echo(line)
