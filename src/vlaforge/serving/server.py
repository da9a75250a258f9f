"""The policy server (``vlaforge serve``): one loaded policy behind a websocket, for any number of robots.

    server = PolicyServer(Policy.load(ckpt), token="...", max_batch=8)
    with server.run_in_thread(port=0) as running:       # or: asyncio.run(server.serve("127.0.0.1", 8000))
        PolicyClient(running.url, token="...").predict_chunk(obs)

Protocol: docs/protocol.md (vlaforge.serving.protocol). The event loop only reads, validates and answers; the
model runs in one inference thread, so a slow forward pass never stalls another connection's handshake, ping
or error reply. Requests that are waiting when the thread comes free (and, with ``batch_window_ms``, those
that arrive within the window) go through one forward pass (``Policy.predict_chunks``), up to ``max_batch``.

Security: loopback unless told otherwise; with a token, a handshake without ``Authorization: Bearer <token>``
is answered 401 before anything else happens (constant-time comparison); frames above ``max_message_bytes``
close the connection; a malformed request gets an error reply and the connection stays open. Requests carry
data only: nothing in them names a file, a model or code on the server (msgpack maps, no pickle, no eval).
``GET /healthz`` answers on the same port without a token (it says nothing but that the server is up).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np

from vlaforge.serving.protocol import (
    AUTH_HEADER,
    IMAGE_ENCODINGS,
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    ProtocolError,
    error_reply,
    message_type,
    pack,
    read_token,
    unpack,
    validate_observation,
)

log = logging.getLogger("vlaforge.serving")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class _Request:
    frame: dict[str, Any]
    future: asyncio.Future
    received: float  # perf_counter when the message arrived


def control_rates(embodiments: list[str]) -> dict[str, float | None]:
    """Each embodiment's control rate from the simulator that has that robot (None where no simulator
    does)."""
    from vlaforge.sim import SIMULATORS

    rates = {s.embodiment: s.control_hz for s in (SIMULATORS.get(n) for n in SIMULATORS.names())}
    return {e: rates.get(e) for e in embodiments}


class PolicyServer:
    """Serves ``policy`` (a :class:`vlaforge.policy.Policy`, or anything with its ``config``, ``stats`` and
    ``predict_chunks``). ``serve(host, port)`` runs it on the current event loop; ``run_in_thread`` in its
    own."""

    def __init__(self, policy: Any, *, token: str | None = None, max_batch: int = 8,
                 batch_window_ms: float = 0.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 control_hz: float | None = None,
                 max_connections: int = 64, precision: str | None = None,
                 executor: concurrent.futures.Executor | None = None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: expected an int >= 1, got {max_batch!r}")
        if not (batch_window_ms >= 0 and np.isfinite(batch_window_ms)):
            raise ValueError(f"batch_window_ms: expected a finite number >= 0, got {batch_window_ms!r}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: expected at least 1024, got {max_message_bytes}")
        if control_hz is not None and not control_hz > 0:
            raise ValueError(f"control_hz: expected a positive rate, got {control_hz!r}")
        if token is not None and not token:
            raise ValueError("token: expected a non-empty str or None")
        self.policy, self.max_batch, self.window_s = policy, max_batch, batch_window_ms / 1e3
        self.max_message_bytes, self.max_connections = int(max_message_bytes), int(max_connections)
        self._expected = None if token is None else f"Bearer {token}".encode()
        pc = policy.config
        hz = control_rates(list(pc.embodiments))
        if control_hz is not None:
            hz = {e: float(control_hz) for e in hz}
        self.chunk_size = int(pc.chunk_size)
        self.rates = hz
        self.metadata: dict[str, Any] = {
            "type": "metadata", "protocol": PROTOCOL_VERSION, "server": _server_name(),
            "embodiments": {e: {"state_dim": s.state_dim, "action_dim": s.action_dim, "control_hz": hz[e],
                                **({"cameras": list(s.cameras)} if s.cameras else {}),
                                "stats": {k: {n: np.asarray(v, np.float32) for n, v in st.items()}
                                          for k, st in policy.stats[e].items()}}
                            for e, s in pc.embodiments.items()},
            "cameras": list(pc.cameras), "image_size": int(pc.image_size), "chunk_size": self.chunk_size,
            "head": pc.head, "image_encodings": list(IMAGE_ENCODINGS),
            "max_message_bytes": self.max_message_bytes, "max_batch": max_batch, "precision": precision,
        }
        self._metadata_bytes = pack(self.metadata)
        self.counters = {"connections": 0, "open": 0, "refused": 0, "requests": 0, "errors": 0, "batches": 0,
                         "batched_requests": 0, "largest_batch": 0}
        self._queue: asyncio.Queue[_Request] | None = None
        # one inference thread: a worker thread by default; `vlaforge serve` runs it on the main thread
        self._pool = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlaforge-infer")

    # -- inference (the one inference thread) ----------------------------------------------------------------
    def infer(self, frames: list[dict[str, Any]]) -> list[np.ndarray]:
        """One forward pass over ``frames`` -> one (H, D) float32 chunk each (runs in the inference
        thread)."""
        return self.policy.predict_chunks(frames)

    def _infer_isolated(self, frames: list[dict[str, Any]]) -> list[Any]:
        """:meth:`infer` on the batch; if the batch fails, each frame alone, so one bad frame fails only
        itself."""
        try:
            return list(self.infer(frames))
        except Exception as batch_error:  # noqa: BLE001 - sorted per frame below
            if len(frames) == 1:
                return [batch_error]
        out: list[Any] = []
        for f in frames:
            try:
                out.append(self.infer([f])[0])
            except Exception as e:  # noqa: BLE001 - becomes that request's error reply
                out.append(e)
        return out

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            if self.window_s > 0:
                deadline = loop.time() + self.window_s
                while len(items) < self.max_batch and (left := deadline - loop.time()) > 0:
                    try:
                        items.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
            t0 = time.perf_counter()
            results = await loop.run_in_executor(self._pool, self._infer_isolated, [r.frame for r in items])
            t1 = time.perf_counter()
            c = self.counters
            c["batches"] += 1
            c["batched_requests"] += len(items)
            c["largest_batch"] = max(c["largest_batch"], len(items))
            for r, res in zip(items, results):
                if not r.future.done():  # the connection may have gone meanwhile
                    timing = {"queue_ms": (t0 - r.received) * 1e3, "infer_ms": (t1 - t0) * 1e3,
                              "batch_size": len(items)}
                    r.future.set_result((res, timing))

    # -- connections (the event loop) ------------------------------------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Any:
        """Before the websocket handshake: /healthz, the connection limit, the token."""
        if request.path.split("?")[0] == "/healthz":
            body = {"status": "ok", "protocol": PROTOCOL_VERSION, "open_connections": self.counters["open"]}
            return connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
        if self._expected is not None:
            got = request.headers.get(AUTH_HEADER, "").encode()
            if not hmac.compare_digest(got, self._expected):
                self.counters["refused"] += 1
                log.warning("refused a connection from %s: missing or wrong token", connection.remote_address)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        if self.counters["open"] >= self.max_connections:
            self.counters["refused"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"the server holds its limit of {self.max_connections} connections\n")
        return None

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        if ws.subprotocol != SUBPROTOCOL:
            await ws.close(1002, f"expected the websocket subprotocol {SUBPROTOCOL!r}")
            return
        c = self.counters
        c["connections"] += 1
        c["open"] += 1
        log.info("connection from %s", ws.remote_address)
        try:
            await ws.send(self._metadata_bytes)
            async for raw in ws:
                received = time.perf_counter()
                reply = await self._answer(raw, received)
                await ws.send(pack(reply))
        except ConnectionClosed:
            pass
        finally:
            c["open"] -= 1
            log.info("closed %s", ws.remote_address)

    async def _answer(self, raw: Any, received: float) -> dict[str, Any]:
        c = self.counters
        rid = None
        try:
            m = unpack(raw, self.max_message_bytes)
            rid = m.get("id")
            if message_type(m, ("infer", "metadata")) == "metadata":
                return self.metadata
            if not isinstance(rid, int) or isinstance(rid, bool):
                raise ProtocolError("bad_message", f"id: expected an int, got {type(rid).__name__}")
            frame = validate_observation(m.get("obs"), self.metadata)
        except ProtocolError as e:
            c["errors"] += 1
            return error_reply(rid, e.code, str(e))
        c["requests"] += 1
        ts = frame.pop("timestamp", None)
        assert self._queue is not None
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(frame, future, received))
        result, timing = await future
        if isinstance(result, Exception):
            c["errors"] += 1
            code = "bad_observation" if isinstance(result, (ValueError, KeyError, TypeError)) else "internal"
            if code == "internal":
                log.error("inference failed: %r", result, exc_info=result)
            return error_reply(rid, code, f"{type(result).__name__}: {result}"[:500])
        chunk = np.asarray(result, dtype=np.float32)
        steps = np.arange(chunk.shape[0], dtype=np.int32)
        reply: dict[str, Any] = {"type": "chunk", "id": rid, "action": chunk, "step": steps}
        hz = self.rates.get(frame["embodiment"])
        if hz:
            reply["t_s"] = steps.astype(np.float64) / hz
        if ts is not None:
            reply["timestamp"] = ts
        timing["total_ms"] = (time.perf_counter() - received) * 1e3
        reply["server_timing"] = timing
        return reply

    async def serve(self, host: str = "127.0.0.1", port: int = 8000, ready: Any = None,
                    stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the task is cancelled). ``ready(bound_port)`` is called once
        listening."""
        from websockets.asyncio.server import serve

        self._queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batcher())
        try:
            async with serve(self._handler, host, port, subprotocols=[SUBPROTOCOL], compression=None,
                             process_request=self._process_request, max_size=self.max_message_bytes,
                             max_queue=4, server_header=None, ping_interval=20, ping_timeout=20) as server:
                bound = server.sockets[0].getsockname()[1]
                log.info("serving on ws://%s:%d (protocol %d)", host, bound, PROTOCOL_VERSION)
                if ready is not None:
                    ready(bound)
                await (stop.wait() if stop is not None else asyncio.Future())
        finally:
            batcher.cancel()

    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> "RunningServer":
        """Start serving in a background thread (its own event loop); returns once it listens."""
        return RunningServer(self, host, port)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class MainThreadExecutor(concurrent.futures.Executor):
    """Runs submitted calls on the thread that calls :meth:`run`, one at a time: ``vlaforge serve`` gives the
    process's main thread to inference and the event loop to a background thread. Measured on a 2-core AMD
    EPYC (docs/protocol.md): a bf16 forward pass of the `default` policy took ~10 ms on the main thread and
    ~20 ms on any other thread (torch's OpenMP intra-op team is only that fast for the thread that first
    created it)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("MainThreadExecutor: shut down")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def run(self, until: threading.Event) -> None:
        """Run submitted calls until ``until`` is set (checked at least every 0.1 s)."""
        while not until.is_set():
            try:
                future, fn, args, kwargs = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as e:  # noqa: BLE001 - the caller's future carries it
                    future.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        while cancel_futures:
            try:
                self._queue.get_nowait()[0].cancel()
            except queue.Empty:
                break


class RunningServer:
    """A :class:`PolicyServer` serving in a daemon thread: ``.url``, ``.port``, ``.stop()``; a context
    manager."""

    def __init__(self, server: PolicyServer, host: str, port: int):
        self.server, self.host = server, host
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(port,), name="vlaforge-serve", daemon=True)
        self._thread.start()
        if not self._bound.wait(30):
            raise TimeoutError("the policy server did not start listening within 30 s")
        if self._error is not None:
            raise self._error

    def _run(self, port: int) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

            def ready(p: int) -> None:
                self.port = p
                self._bound.set()

            await self.server.serve(self.host, port, ready=ready, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - handed to the thread that started it
            self._error = e
            self._bound.set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.server.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _server_name() -> str:
    from vlaforge import __version__

    return f"vlaforge {__version__}"


@dataclass(frozen=True)
class ServeConfig:
    """``vlaforge serve``'s settings."""

    checkpoint: str
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: str | None = None
    max_batch: int = 8
    batch_window_ms: float = 0.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    control_hz: float | None = None
    bf16: Any = "auto"
    threads: int | None = None
    insecure: bool = False  # listen beyond loopback without a token (anyone who reaches the port may use it)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and self.token_file is None and not self.insecure:
            raise ValueError(f"--host {self.host}: serving beyond loopback needs --token-file (or "
                             f"--insecure, if the network itself is trusted)")


def serve(cfg: ServeConfig) -> None:
    """Load the checkpoint, choose its precision, warm it up and serve until SIGINT / SIGTERM."""
    import signal

    import torch

    from vlaforge.policy import Policy

    token = read_token(cfg.token_file) if cfg.token_file else None
    if cfg.host not in LOOPBACK and token is None:
        log.warning("serving on %s without a token (--insecure): anyone who reaches this port can use the "
                    "policy", cfg.host)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    policy = Policy.load(cfg.checkpoint)
    precision = policy.set_precision(cfg.bf16)
    log.info("%s", precision.describe())
    inference = MainThreadExecutor()
    server = PolicyServer(policy, token=token, max_batch=cfg.max_batch, batch_window_ms=cfg.batch_window_ms,
                          max_message_bytes=cfg.max_message_bytes, control_hz=cfg.control_hz,
                          precision=precision.name, executor=inference)
    policy.predict_chunks([policy.example_frame()])  # warm-up, on this (the inference) thread

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    running = server.run_in_thread(cfg.host, cfg.port)  # the event loop, in the background
    try:
        inference.run(until=done)
    finally:
        running.stop()
        log.info("stopped: %s", json.dumps(server.counters))
