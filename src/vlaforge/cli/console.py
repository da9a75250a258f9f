"""``vlaforge console`` (logic in vlaforge.apps.console and vlaforge.apps.console_web)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import TokenFile


def console_cmd(
    task: str = typer.Option(..., help="the simulated robot's task, e.g. drawer-open-v3"),
    checkpoint: str = typer.Option("", help="a policy to deploy and take over from (none: teleoperation)"),
    record: str = typer.Option("", help="dataset directory the recorded episodes go to"),
    host: str = typer.Option("127.0.0.1", help="interface to serve on (loopback by default)"),
    port: int = typer.Option(8765, help="port (0: any free one)"),
    token_file: TokenFile = "",
    control_hz: float = typer.Option(20.0, help="control ticks per second"),
    seed: int = typer.Option(0, help="the first episode's layout (then the next seeds)"),
    max_steps: int = typer.Option(400, help="steps before an episode ends"),
    out: str = typer.Option("console", help="the report at the end: console_report.json (+ monitor.png)"),
    image_size: int = typer.Option(96, help="camera image size without a checkpoint (else the policy's)"),
) -> None:
    """The operator's seat in a browser: watch, teleoperate and record, take over a policy, stop it."""
    from vlaforge.apps.console import ConsoleConfig
    from vlaforge.apps.console_web import run_console
    from vlaforge.serving.protocol import read_token

    cfg = ConsoleConfig(task=task, checkpoint=checkpoint or None, record=record or None,
                        control_hz=control_hz, seed=seed, max_steps=max_steps, image_size=image_size,
                        token=read_token(token_file) if token_file else None, out=out or None)
    run_console(cfg, host, port)
