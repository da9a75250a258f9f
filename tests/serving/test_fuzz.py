"""10,000+ malformed messages at a live server: each gets one reply (an error, or a chunk where a mutation
happened to stay valid), nothing crashes, memory stays bounded, and a valid request afterwards gets the right
chunk."""

from __future__ import annotations

import resource

import msgpack
import numpy as np

from tests.serving.conftest import frame
from tests.serving.test_server import raw_socket
from vlaforge.serving.client import PolicyClient
from vlaforge.serving.protocol import encode_observation, infer_request, pack, unpack
from vlaforge.serving.server import PolicyServer

N_MALFORMED = 10_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def malformed(policy, rng: np.random.Generator, n: int):
    """(kind, message) pairs: every way a request can be wrong that we could think of, drawn at random."""
    good = frame(policy, 0)
    wire = encode_observation(good, policy.config.cameras)
    valid = pack(infer_request(1, wire))
    state_key, cam_key = "observation.state", f"observation.images.{policy.config.cameras[0]}"

    def nd(dtype, shape, nbytes):
        return {"__nd__": 1, "dtype": dtype, "shape": shape, "data": b"\0" * nbytes}

    def obs(**change):
        o = dict(wire)
        for k, v in change.items():
            if v is _DROP:
                o.pop(k, None)
            else:
                o[k] = v
        return o

    wrong_obs = [
        lambda: obs(embodiment=str(rng.integers(1e6))),
        lambda: obs(embodiment=int(rng.integers(100))),
        lambda: obs(task=None), lambda: obs(task=b"bytes"),
        lambda: obs(task="x" * int(rng.integers(1001, 3000))),
        lambda: obs(**{state_key: nd("<f4", [int(rng.integers(0, 50))], 0)}),
        lambda: obs(**{state_key: nd("<f4", [2**31, 2**31, 2**31], 16)}),  # a huge declared shape
        lambda: obs(**{state_key: nd("|O", [4], 32)}),
        lambda: obs(**{state_key: "1,2,3,4"}), lambda: obs(**{state_key: [0.0] * 4}),
        lambda: obs(**{state_key: nd("<f4", [4], 16) | {"data": b"\xff" * 16}}),  # NaN state
        lambda: obs(**{cam_key: nd("|u1", [int(rng.integers(1, 200)), 3, 3], 0)}),
        lambda: obs(**{cam_key: {"__jpeg__": rng.bytes(int(rng.integers(0, 300)))}}),
        lambda: obs(**{cam_key: {"__jpeg__": b"\xff\xd8\xff\xe0" + rng.bytes(100)}}),
        lambda: obs(**{cam_key: _DROP}), lambda: obs(**{state_key: _DROP}),
        lambda: obs(**{"observation.images.nowhere": wire[cam_key]}),
        lambda: obs(timestamp="yesterday"), lambda: obs(timestamp=float("nan")),
    ]
    kinds = ["random_bytes", "truncated", "bad_type", "bad_id", "wrong_obs", "not_a_map", "deep", "mutated",
             "text"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "random_bytes":
            yield kind, rng.bytes(int(rng.integers(0, 400)))
        elif kind == "truncated":
            yield kind, valid[: int(rng.integers(0, len(valid)))]
        elif kind == "bad_type":
            yield kind, pack({"type": ["", "INFER", "shutdown", "load_model", "eval", 3][i % 6], "id": i})
        elif kind == "bad_id":
            yield kind, pack({"type": "infer", "id": ["1", "x", 1.5, None, True][i % 5], "obs": wire})
        elif kind == "wrong_obs":
            yield kind, pack(infer_request(i, wrong_obs[int(rng.integers(len(wrong_obs)))]()))
        elif kind == "not_a_map":
            yield kind, msgpack.packb([[1, 2], 5, "infer", None, True][i % 5])
        elif kind == "deep":
            nest: object = {"type": "infer"}
            for _ in range(int(rng.integers(10, 60))):
                nest = [nest]
            yield kind, msgpack.packb({"type": "infer", "id": i, "obs": nest})
        elif kind == "mutated" and i % 27 == 7:  # few: a mutation that stays valid runs the model
            b = bytearray(valid)
            for j in rng.integers(0, len(b), int(rng.integers(1, 8))):
                b[j] = int(rng.integers(0, 256))
            yield kind, bytes(b)
        elif kind == "text":
            yield kind, "infer " + str(i)
        else:
            yield "random_bytes", rng.bytes(int(rng.integers(1, 64)))


class _Drop:
    pass


_DROP = _Drop()


def test_ten_thousand_malformed_messages_then_a_valid_request(policy):
    server = PolicyServer(policy, max_message_bytes=256 * 1024)
    rng = np.random.default_rng(0)
    sent = replied = chunks = 0
    kinds: dict[str, int] = {}
    with server.run_in_thread() as running:
        # warm up, then measure memory from here
        with PolicyClient(running.url) as c:
            c.predict_chunk(frame(policy, 0))
        rss0 = _rss_mb()
        ws = raw_socket(running.url, token=None)
        pending = 0
        for kind, msg in malformed(policy, rng, N_MALFORMED):
            ws.send(msg)
            sent += 1
            pending += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            if pending == 64:  # a flood: 64 in flight before the first reply is read
                for _ in range(pending):
                    r = unpack(ws.recv(timeout=30))
                    replied += 1
                    chunks += r["type"] == "chunk"
                    assert r["type"] in ("error", "chunk") and (r["type"] == "chunk"
                                                                or r["code"] and r["message"])
                pending = 0
        for _ in range(pending):
            unpack(ws.recv(timeout=30))
            replied += 1
        ws.close()
        rss1 = _rss_mb()
        with PolicyClient(running.url) as c:  # the server still answers a valid request, correctly
            f = frame(policy, 5)
            np.testing.assert_allclose(c.predict_chunk(f), policy.predict_chunk(f), atol=1e-6)
    assert sent == replied >= N_MALFORMED and len(kinds) >= 8, (sent, replied, kinds)
    assert server.counters["errors"] >= N_MALFORMED - chunks - 100
    assert rss1 - rss0 < 100, f"memory grew by {rss1 - rss0:.0f} MB over {sent} malformed messages"


def test_oversized_floods_close_the_connection_not_the_server(policy):
    server = PolicyServer(policy, max_message_bytes=32 * 1024)
    from websockets.exceptions import ConnectionClosed

    with server.run_in_thread() as running:
        for _ in range(20):
            ws = raw_socket(running.url, token=None)
            try:
                for _ in range(5):
                    ws.send(b"\x00" * (64 * 1024))
                ws.recv(timeout=5)
            except ConnectionClosed:
                pass
            finally:
                ws.close()
        with PolicyClient(running.url) as c:
            assert c.predict_chunk(frame(policy, 1)).shape == (policy.config.chunk_size, 4)
