"""Policy inference latency: parameter count and ``predict_chunk`` p50/p99 per head.

`default` preset, 96x96, one camera, ``torch.set_num_threads(2)``, >= 200 timed calls after warm-up.
Targets (benchmark, not test): `default` <= 15 M parameters; flow head with 10 steps p50 <= 15 ms.

    .venv/bin/python benchmarks/latency.py [--calls 300]
    .venv/bin/python benchmarks/latency.py --checkpoint runs/mt10/train-flow/checkpoint --name latency_mt10

``--checkpoint`` times that trained policy alone (its head, cameras and sizes) instead of every head of the
`default` preset.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vlaforge import presets  # noqa: E402
from vlaforge.benchmarking import command, machine, markdown_table, write
from vlaforge.config import head_names  # noqa: E402
from vlaforge.policy import Policy  # noqa: E402


def stats(p: int, d: int) -> dict:
    def s(n):
        return {"mean": [0.0] * n, "std": [1.0] * n, "min": [-1.0] * n, "max": [1.0] * n, "q01": [-1.0] * n,
                "q99": [1.0] * n}
    return {"sawyer": {"observation.state": s(p), "action": s(d)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--bf16", default="auto",
                    help="inference precision: auto (vlaforge.precision), true, false")
    ap.add_argument("--checkpoint", default="", help="time this trained policy instead of the presets")
    ap.add_argument("--name", default="latency",
                    help="results file name (e.g. latency_avx2 for the other kind)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    if args.checkpoint:
        policies = [Policy.load(args.checkpoint)]
    else:
        policies = [Policy(presets.get("default").replace(head=h), stats(4, 4)) for h in head_names()]
    for policy in policies:
        cfg = policy.eval().config
        head = cfg.head
        precision = policy.set_precision(args.bf16)
        print(precision.describe(), flush=True)
        emb, spec = next(iter(cfg.embodiments.items()))
        obs = {f"observation.images.{c}": rng.integers(0, 255, (cfg.image_size, cfg.image_size, 3),
                                                       dtype=np.uint8) for c in cfg.cameras}
        obs.update({"observation.state": np.zeros(spec.state_dim, np.float32), "task": "open the drawer",
                    "embodiment": emb})
        for _ in range(args.warmup):
            policy.predict_chunk(obs)
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            policy.predict_chunk(obs)
            times.append((time.perf_counter() - t0) * 1000)
        steps = policy.heads[emb].sampling_steps
        rows.append({"head": head, "precision": precision.name,
                     "params_M": round(policy.num_parameters() / 1e6, 2), "sampling_steps": steps,
                     "p50_ms": round(float(np.percentile(times, 50)), 2),
                     "p99_ms": round(float(np.percentile(times, 99)), 2), "calls": args.calls})
        print(rows[-1], flush=True)
    table = markdown_table(rows, ["head", "precision", "params_M", "sampling_steps", "p50_ms", "p99_ms",
                                  "calls"])
    used = sorted({r["precision"] for r in rows})
    payload = {"preset": None if args.checkpoint else "default", "checkpoint": args.checkpoint or None,
               "image_size": cfg.image_size, "cameras": len(cfg.cameras), "bf16": args.bf16, "rows": rows,
               "machine": machine(precision="/".join(used)),
               "targets": {"params_M_max": 15, "flow_p50_ms_max": 15},
               "reference": "LeRobot ACT (51.6 M parameters): ~28 ms per chunk on this machine "
                            "with 2 threads"}
    write(args.name, payload, table, command("latency.py"))


if __name__ == "__main__":
    main()
