"""``vlaforge presets``."""

from __future__ import annotations

import typer


def presets_cmd() -> None:
    """List the named policy presets."""
    from vlaforge import presets

    for name in presets.names():
        typer.echo(name)
