"""The ``vlaforge`` command line: one module per area, each command thin (it parses flags and calls into the
library). Heavy imports happen inside each command so ``vlaforge --help`` stays fast.

Every command runs inside :class:`Commands`, the one place where bad input (``vlaforge.errors.INPUT_ERRORS``)
becomes one ``error: ...`` line and exit status 2; anything else keeps its traceback. ``vlaforge train``
hands its arguments to ``vlaforge.training.commandline``, which reports through the same mapping.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from vlaforge.cli import (
    adapt,
    bench,
    console,
    data,
    demo,
    deploy,
    evaluate,
    export,
    presets,
    ros2,
    serve,
    train,
)
from vlaforge.errors import INPUT_ERRORS, report

HELP = "Vision-Language-Action policies: collect demonstrations, train, evaluate, deploy."


class Commands(TyperGroup):
    """The root group: every command (and sub-command) is invoked inside it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except INPUT_ERRORS as e:
            raise typer.Exit(report(e)) from None


app = typer.Typer(name="vlaforge", help=HELP, cls=Commands, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """Vision-Language-Action policies: collect demonstrations, train, evaluate, deploy."""


app.command("presets")(presets.presets_cmd)
app.command("collect")(data.collect_cmd)
app.command("eval")(evaluate.eval_cmd)
app.command("train", **train.SETTINGS)(train.train_cmd)
app.command("deploy-sim")(deploy.deploy_sim_cmd)
app.command("serve")(serve.serve_cmd)
app.command("ros2")(ros2.ros2_cmd)
app.command("console")(console.console_cmd)
app.command("export")(export.export_cmd)
app.command("distill")(export.distill_cmd)
app.command("adapt")(adapt.adapt_cmd)
app.command("meta-train")(adapt.meta_train_cmd)
app.command("demo")(demo.demo_cmd)
app.command("bench", **bench.SETTINGS)(bench.bench_cmd)

dataset_app = typer.Typer(help="Inspect datasets (LeRobot v3.0 layout).", no_args_is_help=True)
dataset_app.command("info")(data.dataset_info_cmd)
app.add_typer(dataset_app, name="dataset")


def main(argv: list[str] | None = None) -> None:
    """The console script (``vlaforge``) and ``python -m vlaforge.cli``."""
    app(args=argv)
