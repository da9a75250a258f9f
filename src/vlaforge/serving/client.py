"""The robot side of ``vlaforge serve``: a policy that lives on another machine, with ``predict_chunk`` like a
local one.

    client = PolicyClient("ws://gpu-box:8000", token=open("token").read().strip(), image_encoding="jpeg")
    client.metadata["chunk_size"], client.config.cameras, client.stats["sawyer"]["action"]["min"]
    chunk = client.predict_chunk(obs)        # (H, D) float32, physical units
    client.last_reply.server_timing          # {"queue_ms", "infer_ms", "total_ms", "batch_size"}

numpy, msgpack and websockets only (Pillow when ``image_encoding="jpeg"``): a robot's computer needs no torch
(tests/serving prove it in a process where importing torch fails). ``SafetyLayer``, ``ChunkExecutor``,
``Monitor`` and ``Controller`` take the client as their policy: it has ``config.chunk_size``, ``stats`` and
``predict_chunk``. Calls are thread-safe (the async chunk strategy calls from its worker thread).

A dropped connection is reopened with exponential backoff and the request sent again (inference has no side
effects); a missing or wrong token is :class:`AuthenticationError` at once, without retries; an error reply is
:class:`ServerError` (its ``code`` from the protocol) and the connection stays usable; no reply within
``timeout_s`` is :class:`ServerTimeout` (a late reply is recognised by its id and dropped).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.serving.protocol import (
    AUTH_HEADER,
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    ProtocolError,
    encode_observation,
    infer_request,
    pack,
    unpack,
)


class ServerError(ValueError):
    """The server answered a request with an error (``code``: ``bad_observation``,
    ``unknown_embodiment``, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"policy server: {code}: {message}")
        self.code = code


class AuthenticationError(PermissionError):
    """The server refused the handshake: no token, or the wrong one."""


class ServerTimeout(TimeoutError):
    """No reply within the client's ``timeout_s``."""


class ServerUnavailable(ConnectionError):
    """The server could not be reached, after every retry."""


@dataclass(frozen=True)
class ServedEmbodiment:
    state_dim: int
    action_dim: int
    control_hz: float | None = None
    cameras: tuple[str, ...] = ()  # the robot's own camera names where they differ from the policy's


@dataclass(frozen=True)
class ServedConfig:
    """What a served policy says about itself: the fields of ``PolicyConfig`` the robot side reads."""

    chunk_size: int
    cameras: tuple[str, ...]
    image_size: int
    head: str
    embodiments: dict[str, ServedEmbodiment] = field(default_factory=dict)

    def cameras_of(self, embodiment: str) -> tuple[str, ...]:
        """The camera names ``embodiment``'s observations use (as ``PolicyConfig.cameras_of``)."""
        return self.embodiments[embodiment].cameras or self.cameras


@dataclass(frozen=True)
class Reply:
    """One answered request: the chunk, per-action step indices (and offsets in seconds when the control rate
    is known), the server's timing and the round trip as the client saw it."""

    action: np.ndarray  # (H, D) float32
    step: np.ndarray  # (H,) int32
    t_s: np.ndarray | None  # (H,) seconds after the observation
    server_timing: dict[str, float]
    round_trip_ms: float
    request_bytes: int


class PolicyClient(contextlib.AbstractContextManager):
    """A served policy (``url``: ``ws://host:port``). See the module docstring."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 10.0,
                 connect_timeout_s: float = 10.0, image_encoding: str = "raw", jpeg_quality: int = 90,
                 retries: int = 5, backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 max_message_bytes: int = 16 * 1024 * 1024):
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url: expected ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
        if image_encoding not in ("raw", "jpeg"):
            raise ValueError(f"image_encoding: expected 'raw' or 'jpeg', got {image_encoding!r}")
        for name, v in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s),
                        ("backoff_s", backoff_s)):
            if not v > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {v!r}")
        self.url, self.timeout_s, self.connect_timeout_s = url, float(timeout_s), float(connect_timeout_s)
        self.image_encoding, self.jpeg_quality = image_encoding, int(jpeg_quality)
        self.retries, self.backoff_s, self.max_backoff_s = (int(retries), float(backoff_s),
                                                            float(max_backoff_s))
        self.max_message_bytes = int(max_message_bytes)
        self._headers = {} if token is None else {AUTH_HEADER: f"Bearer {token}"}
        self._lock = threading.Lock()
        self._ws: Any = None
        self._next_id = 0
        self.reconnects = 0
        self.last_reply: Reply | None = None
        self.metadata: dict[str, Any] = {}
        self._connect()

    # -- connection ------------------------------------------------------------------------------------------
    def _open(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            ws = connect(self.url, subprotocols=[SUBPROTOCOL], additional_headers=self._headers,
                         compression=None, open_timeout=self.connect_timeout_s,
                         max_size=self.max_message_bytes, proxy=None,
                         legacy=True)  # a long-lived connection this object owns and closes
        except InvalidStatus as e:
            status = e.response.status_code
            if status == 401:
                raise AuthenticationError(
                    f"{self.url}: the server refused the token (HTTP 401): "
                    f"{'no token was sent' if not self._headers else 'wrong token'}") from None
            raise ServerUnavailable(f"{self.url}: the server refused the connection (HTTP {status}: "
                                    f"{e.response.body.decode(errors='replace').strip()[:200]})") from None
        try:
            meta = unpack(ws.recv(timeout=self.connect_timeout_s))
        except BaseException:
            ws.close()
            raise
        if meta.get("type") != "metadata" or meta.get("protocol") != PROTOCOL_VERSION:
            ws.close()
            raise ProtocolError("version", f"{self.url}: expected metadata of protocol {PROTOCOL_VERSION}, "
                                           f"got type {meta.get('type')!r} protocol {meta.get('protocol')!r}")
        self._ws, self.metadata = ws, meta

    def _connect(self) -> None:
        from websockets.exceptions import WebSocketException

        delay, last = self.backoff_s, None
        for attempt in range(self.retries + 1):
            try:
                self._open()
                return
            except AuthenticationError:
                raise  # another try cannot fix the token
            except (OSError, TimeoutError, WebSocketException) as e:  # not up yet, restarting, full:
                                                                      # try again
                last = e
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise ServerUnavailable(f"{self.url}: no policy server after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        with self._lock:
            if self._ws is not None:
                self._ws.close()
                self._ws = None

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the robot side reads ---------------------------------------------------------------------------
    @property
    def config(self) -> ServedConfig:
        m = self.metadata
        return ServedConfig(chunk_size=int(m["chunk_size"]), cameras=tuple(m["cameras"]),
                            image_size=int(m["image_size"]), head=str(m["head"]),
                            embodiments={e: ServedEmbodiment(int(s["state_dim"]), int(s["action_dim"]),
                                                             s.get("control_hz"), tuple(s.get("cameras", ())))
                                         for e, s in m["embodiments"].items()})

    @property
    def stats(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """The policy's normalization statistics, ``{embodiment: {key: {stat: float32 array}}}`` (copies)."""
        return {e: {k: {n: np.array(v, np.float32) for n, v in st.items()} for k, st in s["stats"].items()}
                for e, s in self.metadata["embodiments"].items()}

    @property
    def embodiments(self) -> list[str]:
        return list(self.metadata["embodiments"])

    # -- inference -------------------------------------------------------------------------------------------
    def predict_chunk(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One frame dict (DESIGN keys) -> np.float32 (H, D) in physical units, computed by the server."""
        return self.predict(obs).action

    def predict(self, obs: Mapping[str, Any]) -> Reply:
        """:meth:`predict_chunk` with everything the reply says (:class:`Reply`)."""
        emb = obs.get("embodiment")
        served = self.metadata["embodiments"].get(emb) if isinstance(emb, str) else None
        cameras = (served or {}).get("cameras") or self.metadata["cameras"]
        wire = encode_observation(obs, cameras, self.image_encoding, self.jpeg_quality)
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            payload = pack(infer_request(rid, wire))
            limit = int(self.metadata.get("max_message_bytes") or 0)
            if limit and len(payload) > limit:
                raise ValueError(f"request of {len(payload)} bytes: the server accepts at most {limit} (send "
                                 f"smaller images, or image_encoding='jpeg')")
            t0 = time.perf_counter()
            reply = self._exchange(payload, rid)
            rtt = (time.perf_counter() - t0) * 1e3
        if reply.get("type") == "error":
            raise ServerError(str(reply.get("code")), str(reply.get("message")))
        action = reply.get("action")
        if reply.get("type") != "chunk" or not isinstance(action, np.ndarray) or action.ndim != 2:
            raise ProtocolError("bad_message", f"expected a chunk reply, got type {reply.get('type')!r}")
        t_s = reply.get("t_s")
        out = Reply(action=action.astype(np.float32), step=np.asarray(reply.get("step")),
                    t_s=None if t_s is None else np.asarray(t_s),
                    server_timing=dict(reply.get("server_timing", {})),
                    round_trip_ms=rtt, request_bytes=len(payload))
        self.last_reply = out
        return out

    def _exchange(self, payload: bytes, rid: int) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        for attempt in range(2):  # the second time on a reopened connection
            if self._ws is None:
                self._connect()
                self.reconnects += 1
            try:
                self._ws.send(payload)
                deadline = time.monotonic() + self.timeout_s
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    reply = unpack(self._ws.recv(timeout=left))
                    if reply.get("id") == rid or (reply.get("type") == "error" and reply.get("id") is None):
                        return reply
                    # a late reply to a request that timed out: dropped
            except TimeoutError:
                raise ServerTimeout(f"{self.url}: no reply within {self.timeout_s} s") from None
            except (ConnectionClosed, OSError):
                self._ws = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")
