"""``vlaforge adapt`` and ``vlaforge meta-train`` (logic in vlaforge.apps.adapt, vlaforge.training.maml)."""

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


def meta_train_cmd(
    checkpoint: Checkpoint,
    dataset: str = typer.Option(..., help="demonstrations of several tasks (their episodes' task names)"),
    out: str = typer.Option(..., help="directory: <out>/checkpoint, <out>/meta_train.json"),
    meta_steps: int = typer.Option(500, min=1),
    tasks_per_step: int = typer.Option(4, min=1),
    batch_size: int = typer.Option(16, min=1, help="support and query batch per task"),
    inner_steps: int = typer.Option(1, min=1),
    inner_lr: float = typer.Option(0.01, min=0.0),
    outer_lr: float = typer.Option(3e-4, min=0.0),
    second_order: bool = typer.Option(False, help="backpropagate through the inner steps (more memory)"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, min=0, help="torch threads (0: torch's default)"),
) -> None:
    """MAML meta-training (first order by default): the inner loop adapts the action heads on one task's
    support batch, the outer loop trains everything on its query batch. Then: vlaforge adapt --method head."""
    from vlaforge.apps.adapt import run_meta_train
    from vlaforge.training.maml import MAMLConfig

    cfg = MAMLConfig(meta_steps=meta_steps, tasks_per_step=tasks_per_step, batch_size=batch_size,
                     inner_steps=inner_steps, inner_lr=inner_lr, outer_lr=outer_lr,
                     first_order=not second_order, seed=seed)
    res = run_meta_train(checkpoint, dataset, out, cfg, threads=threads or None)
    curve = res["query_loss"]
    typer.echo(f"meta-trained {len(curve)} steps in {res['seconds']:.1f} s over {len(res['tasks'])} tasks: "
               f"query loss {curve[0]:.4f} -> {curve[-1]:.4f}; {res['checkpoint']}")
