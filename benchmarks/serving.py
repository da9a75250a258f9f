"""Serving over loopback: round trip per request for 1, 4 and 8 robots, raw against JPEG bytes, batching's
throughput, and the overhead over an in-process ``predict_chunk`` measured in the same run.

A `default`-preset policy (96 px, one camera; regression head unless --head) is saved to a temporary
checkpoint and served by ``vlaforge serve`` in its own process (--threads torch threads); the robots are
threads of this process, each with its own ``PolicyClient``, sending their next frame as soon as the last
chunk arrives (closed loop). Goals: loopback overhead <= 3 ms p50 at one client; 8 clients with p99 <= 2x
the single-client p99; batching >= 2x the requests per second of unbatched at 8 clients.

    .venv/bin/python benchmarks/serving.py [--requests 200] [--threads 2] [--head regression]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import command, machine, markdown_table, write


def stats(p: int, d: int) -> dict:
    def s(n):
        return {"mean": [0.0] * n, "std": [1.0] * n, "min": [-1.0] * n, "max": [1.0] * n, "q01": [-1.0] * n,
                "q99": [1.0] * n}
    return {"sawyer": {"observation.state": s(p), "action": s(d)}}


def camera_frame(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A camera-like image (smooth shading plus a little sensor noise), so JPEG sizes are realistic."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([180 * x + 40, 120 * y + 60, 90 * (1 - x * y) + 50], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def frames(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"observation.images.corner": camera_frame(rng),
             "observation.state": rng.normal(size=4).astype(np.float32),
             "task": "open the drawer", "embodiment": "sawyer"} for _ in range(n)]


class Server:
    """``vlaforge serve`` in a child process; ``.url`` once it listens."""

    def __init__(self, ckpt: Path, threads: int, max_batch: int, window_ms: float, bf16: str):
        cmd = [sys.executable, "-c", "from vlaforge.cli import main; main()", "serve",
               "--checkpoint", str(ckpt), "--port", "0", "--threads", str(threads),
               "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms), "--bf16", bf16]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.url, self.precision, lines = None, None, []
        t0 = time.monotonic()
        while self.url is None and time.monotonic() - t0 < 300:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("vlaforge serve exited:\n" + "".join(lines))
            lines.append(line)
            if "precision:" in line:
                self.precision = line.split("precision:")[1].split()[0]
            m = re.search(r"serving on (ws://\S+) ", line)
            self.url = m.group(1) if m else None
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep draining its log

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def closed_loop(url: str, n_clients: int, requests: int, encoding: str = "raw", warmup: int = 5) -> dict:
    """``n_clients`` robots, ``requests`` timed requests each -> round trips, server timings, requests/s."""
    from vlaforge.serving.client import PolicyClient

    clients = [PolicyClient(url, image_encoding=encoding) for _ in range(n_clients)]
    data = [frames(8, seed=i) for i in range(n_clients)]
    for c, fs in zip(clients, data):
        for j in range(warmup):
            c.predict(fs[j % len(fs)])
    rtts: list[list[float]] = [[] for _ in clients]
    batch: list[int] = []
    infer: list[float] = []
    nbytes: list[int] = []
    wire: list[float] = []  # round trip less the forward pass: transport, (de)coding, validation, queueing
    barrier = threading.Barrier(n_clients + 1)
    errors: list[BaseException] = []

    def robot(i: int) -> None:
        try:
            barrier.wait()
            for j in range(requests):
                r = clients[i].predict(data[i][j % len(data[i])])
                rtts[i].append(r.round_trip_ms)
                wire.append(r.round_trip_ms - float(r.server_timing["infer_ms"]))
                batch.append(int(r.server_timing["batch_size"]))
                infer.append(float(r.server_timing["infer_ms"]))
                nbytes.append(r.request_bytes)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    allr = np.concatenate([np.asarray(r) for r in rtts])
    return {"clients": n_clients, "encoding": encoding, "requests": int(allr.size),
            "p50_ms": round(float(np.percentile(allr, 50)), 2),
            "p99_ms": round(float(np.percentile(allr, 99)), 2),
            "req_per_s": round(allr.size / wall, 1), "mean_batch": round(float(np.mean(batch)), 2),
            "infer_p50_ms": round(float(np.percentile(infer, 50)), 2),
            "wire_p50_ms": round(float(np.percentile(wire, 50)), 2),
            "request_bytes": int(np.median(nbytes))}


def in_process(ckpt: Path, threads: int, bf16: str, calls: int) -> dict:
    import torch

    from vlaforge.policy import Policy

    torch.set_num_threads(threads)
    policy = Policy.load(ckpt)
    precision = policy.set_precision(bf16)
    fs = frames(8, seed=0)
    for j in range(10):
        policy.predict_chunk(fs[j % 8])
    times = []
    for j in range(calls):
        t0 = time.perf_counter()
        policy.predict_chunk(fs[j % 8])
        times.append((time.perf_counter() - t0) * 1e3)
    return {"precision": precision.name, "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2), "calls": calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="timed requests of the single client (others: "
                                                              "a share of it, at least 40)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (and in-process)")
    ap.add_argument("--head", default="regression")
    ap.add_argument("--bf16", default="auto")
    ap.add_argument("--name", default="serving")
    args = ap.parse_args()
    from vlaforge import presets
    from vlaforge.policy import Policy

    with tempfile.TemporaryDirectory(prefix="vlaforge-serving-") as tmp:
        import torch

        torch.manual_seed(0)
        ckpt = Policy(presets.get("default").replace(head=args.head), stats(4, 4)).save(Path(tmp) / "ckpt")
        local = in_process(ckpt, args.threads, args.bf16, args.requests)
        print("in-process", local, flush=True)
        rows = []
        server = Server(ckpt, args.threads, max_batch=8, window_ms=0.0, bf16=args.bf16)
        server_precision = server.precision
        try:
            for n in (1, 4, 8):
                req = args.requests if n == 1 else max(40, args.requests // n * 2)
                rows.append(closed_loop(server.url, n, req) | {"batching": "on (max 8)"})
                print(rows[-1], flush=True)
            rows.append(closed_loop(server.url, 1, args.requests // 2, encoding="jpeg")
                        | {"batching": "on (max 8)"})
            print(rows[-1], flush=True)
        finally:
            server.stop()
        unbatched = Server(ckpt, args.threads, max_batch=1, window_ms=0.0, bf16=args.bf16)
        try:
            rows.append(closed_loop(unbatched.url, 8, max(40, args.requests // 4)) | {"batching": "off"})
            print(rows[-1], flush=True)
        finally:
            unbatched.stop()
    one, eight = rows[0], rows[2]
    off = rows[-1]
    raw_bytes, jpeg_bytes = rows[0]["request_bytes"], rows[3]["request_bytes"]
    verdict = {
        "overhead_p50_ms": round(one["p50_ms"] - local["p50_ms"], 2),
        "wire_p50_ms_1_client": one["wire_p50_ms"],
        "p99_ratio_8_vs_1": round(eight["p99_ms"] / one["p99_ms"], 2),
        "batching_throughput_gain_8": round(eight["req_per_s"] / off["req_per_s"], 2),
        "jpeg_bytes_fraction": round(jpeg_bytes / raw_bytes, 3),
    }
    verdict |= {"overhead_met": verdict["overhead_p50_ms"] <= 3.0,
                "p99_ratio_met": verdict["p99_ratio_8_vs_1"] <= 2.0,
                "batching_gain_met": verdict["batching_throughput_gain_8"] >= 2.0}
    print(verdict, flush=True)
    cols = ["clients", "batching", "encoding", "requests", "p50_ms", "p99_ms", "req_per_s", "mean_batch",
            "infer_p50_ms", "wire_p50_ms", "request_bytes"]
    table = markdown_table(rows, cols) + (
        f"\nIn-process `predict_chunk` in the same run: p50 {local['p50_ms']} ms, p99 {local['p99_ms']} ms "
        f"({local['precision']}); the server ran {server_precision}. `wire_p50_ms`: round trip less the "
        f"server's forward pass (transport, coding, validation and, with several clients, waiting for the "
        f"batch).\n\n"
        + markdown_table([{"goal": "loopback overhead p50 (1 client) <= 3 ms",
                           "measured": verdict["overhead_p50_ms"], "met": verdict["overhead_met"]},
                          {"goal": "of it, outside the server's forward pass (1 client, information)",
                           "measured": verdict["wire_p50_ms_1_client"], "met": ""},
                          {"goal": "p99 at 8 clients <= 2x p99 at 1", "measured": verdict["p99_ratio_8_vs_1"],
                           "met": verdict["p99_ratio_met"]},
                          {"goal": "batching >= 2x requests/s of unbatched at 8 clients",
                           "measured": verdict["batching_throughput_gain_8"],
                           "met": verdict["batching_gain_met"]},
                          {"goal": "JPEG bytes / raw bytes per request (information)",
                           "measured": verdict["jpeg_bytes_fraction"], "met": ""}],
                         ["goal", "measured", "met"]))
    payload = {"preset": "default", "head": args.head, "image_size": 96, "cameras": 1,
               "server_threads": args.threads, "server_precision": server_precision, "in_process": local,
               "rows": rows, "verdict": verdict,
               "machine": machine(precision=local["precision"])}
    write(args.name, payload, table, command("serving.py"))


if __name__ == "__main__":
    main()
