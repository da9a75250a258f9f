"""The policy server with its real client over loopback: the served chunk is the in-process chunk; tokens
are checked before any model work; bad requests get error replies on a connection that stays usable; batching
keeps every client's answer its own; a slow forward pass stalls no other connection."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from tests.serving.conftest import TOKEN, frame, tiny_policy
from vlaforge.serving.client import (
    AuthenticationError,
    PolicyClient,
    ServerError,
    ServerTimeout,
    ServerUnavailable,
)
from vlaforge.serving.protocol import PROTOCOL_VERSION, SUBPROTOCOL, pack, unpack
from vlaforge.serving.server import PolicyServer, ServeConfig


class SlowServer(PolicyServer):
    """The real server whose forward pass takes ``delay_s`` longer (a big model, a busy machine)."""

    delay_s = 1.0

    def infer(self, frames):
        time.sleep(self.delay_s)
        return super().infer(frames)


def raw_socket(url: str, token: str | None = TOKEN, **kw):
    from websockets.sync.client import connect

    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    ws = connect(url, subprotocols=[SUBPROTOCOL], additional_headers=headers, compression=None, proxy=None,
                 legacy=True, **kw)
    assert unpack(ws.recv(timeout=5))["type"] == "metadata"
    return ws


def test_metadata_describes_the_policy(served, policy):
    running, _ = served
    with PolicyClient(running.url, token=TOKEN) as c:
        m = c.metadata
        assert m["protocol"] == PROTOCOL_VERSION and m["chunk_size"] == policy.config.chunk_size
        assert m["cameras"] == list(policy.config.cameras) and m["image_size"] == policy.config.image_size
        assert m["head"] == "regression" and m["embodiments"]["sawyer"]["control_hz"] == 80.0
        assert set(m["image_encodings"]) == {"raw", "jpeg"}
        cfg = c.config
        assert cfg.embodiments["sawyer"].state_dim == 4 and cfg.embodiments["sawyer"].action_dim == 4
        np.testing.assert_array_equal(c.stats["sawyer"]["action"]["max"],
                                      policy.stats["sawyer"]["action"]["max"])
        assert "checkpoint" not in json.dumps({k: v for k, v in m.items() if k != "embodiments"})


def test_served_chunks_equal_in_process_chunks(served, policy):
    running, _ = served
    with PolicyClient(running.url, token=TOKEN) as c:
        for seed in range(3):
            f = frame(policy, seed) | {"timestamp": 12.5}
            reply = c.predict(f)
            np.testing.assert_allclose(reply.action, policy.predict_chunk(f), rtol=0, atol=1e-6)
            h = policy.config.chunk_size
            np.testing.assert_array_equal(reply.step, np.arange(h))
            np.testing.assert_allclose(reply.t_s, np.arange(h) / 80.0)
            t = reply.server_timing
            assert t["batch_size"] == 1 and 0 <= t["queue_ms"] <= t["total_ms"] and t["infer_ms"] > 0
            assert reply.round_trip_ms >= t["total_ms"] * 0.5
        raw_bytes = reply.request_bytes
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)  # a camera-like image, not noise
    f = frame(policy, 0) | {"observation.images.corner": smooth}
    with PolicyClient(running.url, token=TOKEN, image_encoding="jpeg") as c:
        reply = c.predict(f)
        assert reply.request_bytes < raw_bytes / 3, (reply.request_bytes, raw_bytes)
        assert reply.action.shape == (policy.config.chunk_size, 4)  # lossy pixels: a nearby chunk, not the
                                                                     # same


def test_health_endpoint_needs_no_token(served):
    running, _ = served
    with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"


def test_tokens_are_checked_in_the_handshake_before_any_model_work(served):
    running, server = served
    for token in (None, "wrong-token", TOKEN + "x", ""):
        with pytest.raises(AuthenticationError, match="401"):
            PolicyClient(running.url, token=token, retries=3)
    assert server.counters["refused"] == 4
    assert server.counters["requests"] == 0 and server.counters["batches"] == 0  # nothing reached the model


def test_bad_requests_get_error_replies_and_the_connection_stays_usable(served, policy):
    running, server = served
    with PolicyClient(running.url, token=TOKEN) as c:
        good = frame(policy, 1)
        for bad, code in [({**good, "observation.state": np.zeros(3, np.float32)}, "bad_observation"),
                          ({**good, "embodiment": "ur5e"}, "unknown_embodiment"),
                          ({**good, "task": ""}, "bad_observation")]:
            with pytest.raises(ServerError) as e:
                c.predict_chunk(bad)
            assert e.value.code == code
        np.testing.assert_allclose(c.predict_chunk(good), policy.predict_chunk(good), atol=1e-6)
        assert c.reconnects == 0
    ws = raw_socket(running.url)
    for raw in (b"\x00garbage", pack({"type": "infer", "id": "seven", "obs": {}}), pack({"type": "shutdown"}),
                "a text frame"):
        ws.send(raw)
        reply = unpack(ws.recv(timeout=5))
        assert reply["type"] == "error" and reply["code"] == "bad_message", reply
    ws.send(pack({"type": "metadata"}))
    assert unpack(ws.recv(timeout=5))["type"] == "metadata"
    ws.close()
    assert server.counters["errors"] >= 7


def test_oversized_messages_close_only_their_connection(policy):
    from websockets.exceptions import ConnectionClosed

    server = PolicyServer(policy, max_message_bytes=64 * 1024)
    with server.run_in_thread() as running:
        ws = raw_socket(running.url, token=None)
        ws.send(b"\x00" * (200 * 1024))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009  # "message too big"
        with PolicyClient(running.url) as c:
            assert c.predict_chunk(frame(policy)).shape == (policy.config.chunk_size, 4)
            big = frame(policy) | {"task": "x" * 900}
            big["observation.images.corner"] = np.zeros((512, 512, 3), np.uint8)
            with pytest.raises(ValueError, match="at most 65536"):  # the client checks before sending
                c.predict_chunk(big)


def test_concurrent_clients_get_their_own_answers_under_batching(policy):
    server = PolicyServer(policy, max_batch=8, batch_window_ms=30)
    frames = [frame(policy, seed=i, task=f"task number {i}") for i in range(8)]
    expected = [policy.predict_chunk(f) for f in frames]
    got: dict[int, list] = {}
    errors: list[BaseException] = []
    with server.run_in_thread() as running:
        clients = [PolicyClient(running.url) for _ in frames]
        barrier = threading.Barrier(len(frames))

        def robot(i: int) -> None:
            try:
                barrier.wait()
                got[i] = [clients[i].predict(frames[i]) for _ in range(3)]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=robot, args=(i,)) for i in range(len(frames))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    assert not errors, errors
    for i, replies in got.items():
        for r in replies:
            np.testing.assert_allclose(r.action, expected[i], atol=1e-5)
    assert server.counters["largest_batch"] > 1, server.counters  # the batches really held several robots
    assert max(r.server_timing["batch_size"] for rs in got.values() for r in rs) > 1


def test_batched_prediction_equals_one_by_one_for_mixed_embodiments():
    policy = tiny_policy(embodiments={"aloha": (14, 14)})
    frames = [frame(policy, i, embodiment="aloha" if i % 2 else "sawyer", task=f"t{i % 3}") for i in range(5)]
    batched = policy.predict_chunks(frames)
    for f, b in zip(frames, batched):
        np.testing.assert_allclose(b, policy.predict_chunk(f), atol=1e-5)
    assert [b.shape[1] for b in batched] == [4, 14, 4, 14, 4]  # each robot its own action size, no padding


def test_each_robot_sends_its_own_camera_names():
    """A policy trained on two robots reads the Panda's ``agentview`` where the Sawyer has ``corner``: the
    metadata says so, the client sends that robot's cameras, the server checks them per robot."""
    from vlaforge.config import EmbodimentSpec
    from vlaforge.serving.client import PolicyClient, ServerError
    from vlaforge.serving.server import PolicyServer

    base = tiny_policy(embodiments={"panda": (9, 7)})
    embs = dict(base.config.embodiments) | {"panda": EmbodimentSpec(9, 7, cameras=("agentview",))}
    policy = type(base)(base.config.replace(embodiments=embs), base.stats).eval()
    policy.load_state_dict(base.state_dict())
    panda = {k.replace("corner", "agentview"): v for k, v in frame(policy, 1, embodiment="panda").items()}
    sawyer = frame(policy, 2)
    with PolicyServer(policy, token=TOKEN).run_in_thread() as running:
        with PolicyClient(running.url, token=TOKEN) as c:
            assert c.metadata["embodiments"]["panda"]["cameras"] == ["agentview"]
            assert c.config.cameras_of("panda") == ("agentview",)
            assert c.config.cameras_of("sawyer") == ("corner",)
            np.testing.assert_allclose(c.predict_chunk(panda), policy.predict_chunk(panda), atol=1e-5)
            np.testing.assert_allclose(c.predict_chunk(sawyer), policy.predict_chunk(sawyer), atol=1e-5)
            wrong = {k.replace("agentview", "corner"): v for k, v in panda.items()}
            with pytest.raises(ServerError, match="observation.images.agentview: missing"):
                c.predict_chunk(wrong)


def test_a_slow_forward_pass_stalls_no_other_connection(policy):
    server = SlowServer(policy)
    with server.run_in_thread() as running:
        slow = PolicyClient(running.url)
        busy = threading.Thread(target=slow.predict_chunk, args=(frame(policy),))
        busy.start()
        time.sleep(0.2)  # the inference thread is asleep in the forward pass now
        ws = raw_socket(running.url, token=None)
        t0 = time.perf_counter()
        ws.ping().wait(5)
        pong_s = time.perf_counter() - t0
        ws.send(b"not msgpack")
        assert unpack(ws.recv(timeout=5))["type"] == "error"
        answered_s = time.perf_counter() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert busy.is_alive()  # all of that while the forward pass still ran
        busy.join(10)
        ws.close()
        slow.close()
    assert pong_s < 0.3 and answered_s < 0.5, (pong_s, answered_s)


def test_a_timed_out_request_does_not_poison_the_next(policy):
    server = SlowServer(policy)
    server.delay_s = 0.8
    with server.run_in_thread() as running:
        c = PolicyClient(running.url, timeout_s=0.3)
        a, b = frame(policy, 1), frame(policy, 2)
        with pytest.raises(ServerTimeout):
            c.predict_chunk(a)
        c.timeout_s = 5.0
        np.testing.assert_allclose(c.predict_chunk(b), policy.predict_chunk(b), atol=1e-6)  # a's late reply
                                                                                             # dropped
        c.close()


def test_the_client_reconnects_with_backoff(policy):
    server = PolicyServer(policy)
    running = server.run_in_thread()
    port = running.port
    c = PolicyClient(running.url, backoff_s=0.05, retries=40)
    f = frame(policy)
    c.predict_chunk(f)
    running.stop()
    restarted: list = []
    threading.Timer(0.4, lambda: restarted.append(PolicyServer(policy).run_in_thread(port=port))).start()
    try:
        np.testing.assert_allclose(c.predict_chunk(f), policy.predict_chunk(f), atol=1e-6)
        assert c.reconnects == 1
    finally:
        c.close()
        time.sleep(0.5)
        for r in restarted:
            r.stop()
    with pytest.raises(ServerUnavailable, match="3 attempts"):
        PolicyClient(f"ws://127.0.0.1:{port}", retries=2, backoff_s=0.01)


def test_the_runtime_takes_the_client_as_its_policy(served, policy):
    from vlaforge.runtime import ChunkExecutor, Controller, Monitor, SafetyConfig, SafetyLayer, Status

    running, _ = served
    with PolicyClient(running.url, token=TOKEN) as c:
        safety = SafetyLayer(SafetyConfig.from_dataset_stats(c.stats["sawyer"]["action"], max_velocity=80.0,
                                                             max_acceleration=6400.0, max_force=50.0,
                                                             dt=1 / 80))
        executor = ChunkExecutor(c, "recycle", recompute_every=4)
        controller = Controller(c, safety, executor, Monitor(c.stats, "sawyer", latency_budget_s=1.0))
        statuses = [controller.step(frame(policy, t)).status for t in range(12)]
        executor.close()
    assert set(statuses) <= {Status.OK, Status.CONSERVATIVE} and executor.policy_calls == 3, statuses


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="token-file"):
        ServeConfig(checkpoint="ckpt", host="0.0.0.0")
    assert ServeConfig(checkpoint="ckpt", host="0.0.0.0", insecure=True).insecure
    with pytest.raises(ValueError, match="max_batch"):
        PolicyServer(tiny_policy(), max_batch=0)
    with pytest.raises(ValueError, match="ws://"):
        PolicyClient("http://127.0.0.1:1")
