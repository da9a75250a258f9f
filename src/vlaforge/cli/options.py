"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer

BF16_HELP = ("inference under bf16 autocast: auto (only where this CPU runs bf16 natively and faster), "
             "true or false")

# where a robot-side command's policy comes from: loaded here, or served (deploy-sim, ros2)
CHECKPOINT_HELP = "policy checkpoint directory (Policy.load), run in this process"
Checkpoint = Annotated[str, typer.Option("--checkpoint", help=CHECKPOINT_HELP)]
Server = Annotated[str, typer.Option("--server", help="ws://HOST:PORT of `vlaforge serve` instead of "
                                                      "--checkpoint (no torch here)")]
TOKEN_FILE_HELP = "file holding the server's token (with --server)"
TokenFile = Annotated[str, typer.Option("--token-file", help=TOKEN_FILE_HELP)]
