"""``vlaforge serve`` (logic in vlaforge.serving.server; the protocol in docs/protocol.md)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import BF16_HELP


def serve_cmd(
    checkpoint: str = typer.Option(..., help="policy checkpoint directory (Policy.load)"),
    host: str = typer.Option("127.0.0.1",
                             help="address to listen on (loopback by default; others need a token)"),
    port: int = typer.Option(8000, min=0, max=65535, help="port (0: any free one, printed)"),
    token_file: str = typer.Option("", help="file whose first line is the token clients must send"),
    max_batch: int = typer.Option(8, min=1, help="most requests in one forward pass"),
    batch_window_ms: float = typer.Option(0.0, min=0.0, help="wait this long for more requests before a pass "
                                                             "(0: batch only what is already waiting)"),
    max_message_mb: float = typer.Option(4.0, min=0.01, help="largest request accepted, MiB"),
    control_hz: float = typer.Option(0.0, min=0.0, help="control rate for chunk timestamps (0: the "
                                                       "simulator's rate for the embodiment, when known)"),
    threads: int = typer.Option(0, min=0, help="torch threads for inference (0: torch's default)"),
    bf16: str = typer.Option("auto", help=BF16_HELP),
    insecure: bool = typer.Option(False, help="allow a non-loopback --host without --token-file"),
) -> None:
    """Serve a policy over a websocket to robots (PolicyClient, deploy-sim --server); GET /healthz on \
the port."""
    import logging

    from vlaforge.serving.server import ServeConfig, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # its per-connection lines: ours say more
    serve(ServeConfig(checkpoint=checkpoint, host=host, port=port, token_file=token_file or None,
                      max_batch=max_batch, batch_window_ms=batch_window_ms,
                      max_message_bytes=int(max_message_mb * 1024 * 1024), control_hz=control_hz or None,
                      threads=threads or None, bf16=bf16, insecure=insecure))
