"""``vlaforge train``: hands its arguments to vlaforge.training.commandline, the parser it shares with
``python -m vlaforge.train`` and ``torchrun`` (``vlaforge train --help`` lists every config field)."""

from __future__ import annotations

import typer

#: typer passes every argument through untouched; the training command line parses them (and --help)
SETTINGS = dict(add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})


def train_cmd(ctx: typer.Context) -> None:
    """Train a policy: --preset NAME --dataset DIR --out RUN_DIR [--field.path=value ...] \
(--help: every field)."""
    from vlaforge.training.commandline import main as train_main

    raise typer.Exit(train_main(list(ctx.args)))
