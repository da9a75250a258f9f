"""The console's web side: one ``websockets`` server on loopback serves the page's files (``GET /``,
``/console.js``, ``/console.css``, ``/healthz``) and the page's websocket (``/ws?token=...``), and relays
between the pages and a :class:`~vlaforge.apps.console.Console`.

Pages get the state as JSON text after every tick and the camera view as a binary JPEG; a page that cannot
keep up misses frames (at most two sends in flight per page) rather than delaying the robot.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vlaforge.apps.console import PAGE_DIR, Console
from vlaforge.serving.server import RunningServer

log = logging.getLogger("vlaforge.console")

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/console.js": ("console.js", "text/javascript; charset=utf-8"),
         "/console.css": ("console.css", "text/css; charset=utf-8")}
MAX_MESSAGE_BYTES = 4096
MAX_PENDING = 2


class ConsoleServer:
    """Serves ``console`` to browsers. ``token``: required of every websocket (in the page's URL); None: a
    fresh random one (``url`` includes it)."""

    def __init__(self, console: Console, token: str | None = None):
        self.console = console
        self.token = token or console.cfg.token or secrets.token_urlsafe(16)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _respond(self, connection: Any, request: Any) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        url = urlsplit(request.path)
        if url.path == "/ws":
            got = parse_qs(url.query).get("token", [""])[0]
            if not hmac.compare_digest(got.encode(), self.token.encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            return None  # on to the websocket handshake
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if url.path not in FILES:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name, ctype = FILES[url.path]
        body = (PAGE_DIR / name).read_bytes()
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        return Response(HTTPStatus.OK.value, "OK", headers, body)

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        pending = [0]
        lock = threading.Lock()

        def send(message: str | bytes) -> None:  # called from the console's thread
            with lock:
                if pending[0] >= MAX_PENDING:
                    return  # a slow page misses this one
                pending[0] += 1

            def done(_: Any) -> None:
                with lock:
                    pending[0] -= 1
            try:
                fut = asyncio.run_coroutine_threadsafe(ws.send(message), loop)
            except RuntimeError:  # the loop is closing
                done(None)
                return
            fut.add_done_callback(done)

        ident = self.console.connect(send)
        try:
            async for raw in ws:
                reply = self.console.handle(ident, raw)
                if reply is not None:
                    import json

                    await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            self.console.disconnect(ident)

    async def serve(self, host: str, port: int, ready: Any = None, stop: asyncio.Event | None = None) -> None:
        from websockets.asyncio.server import serve

        self.loop = asyncio.get_running_loop()
        async with serve(self._handler, host, port, process_request=self._respond, max_size=MAX_MESSAGE_BYTES,
                         max_queue=16, server_header=None, ping_interval=5, ping_timeout=5) as server:
            bound = server.sockets[0].getsockname()[1]
            if ready is not None:
                ready(bound)
            await (stop.wait() if stop is not None else asyncio.Future())

    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> "RunningConsole":
        """Serve in a background thread and start the console's control loop; returns once listening."""
        return RunningConsole(self, host, port)

    def close(self) -> None:
        """After serving: the console's loop stops, its recorder and report are written."""
        self.console.close()


class RunningConsole(RunningServer):
    """A console served in a background thread (the policy server's runner: ``port``, ``stop()``, a context
    manager), its control loop started; ``url`` (with the token) is what to open."""

    def __init__(self, server: ConsoleServer, host: str, port: int):
        super().__init__(server, host, port)  # type: ignore[arg-type]  # serve / close: the same contract
        server.console.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.server.token}"

    def close(self) -> None:
        self.stop()


def run_console(cfg: Any, host: str = "127.0.0.1", port: int = 8765) -> None:
    """``vlaforge console``: serve until Ctrl-C."""
    import time

    console = Console(cfg)
    running = ConsoleServer(console).run_in_thread(host, port)
    print(f"vlaforge console: {cfg.task} at {cfg.control_hz:g} Hz; open {running.url}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: served beyond loopback; anyone with the URL (it holds the token) can drive the robot")
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        running.close()
