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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
