"""``vlaforge adapt`` (logic in vlaforge.apps.adapt)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import Checkpoint


def adapt_cmd(
    checkpoint: Checkpoint,
    dataset: str = typer.Option(..., help="the new task's demonstrations (a dataset of a robot the "
                                          "checkpoint knows)"),
    out: str = typer.Option(..., help="directory: <out>/checkpoint, <out>/adapt.json"),
    method: str = typer.Option("lora", help="scratch | head | full | lora"),
    rank: int = typer.Option(8, min=1, help="LoRA rank (method lora; merged into the weights at the end)"),
    steps: int = typer.Option(300, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(0.0, min=0.0, help="learning rate (0: the method's default)"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, min=0, help="torch threads (0: torch's default)"),
) -> None:
    """Adapt a trained policy to a new task from a few demonstrations (fine-tuning, heads only, LoRA, or from
    scratch as a baseline)."""
    from vlaforge.apps.adapt import AdaptConfig, run_adapt, summary_line

    cfg = AdaptConfig(checkpoint=checkpoint, dataset=dataset, out=out, method=method, rank=rank, steps=steps,
                      batch_size=batch_size, lr=lr or None, seed=seed, threads=threads or None)
    typer.echo(summary_line(run_adapt(cfg)))
