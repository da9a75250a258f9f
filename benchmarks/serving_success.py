"""Success through the wire: the same checkpoint and seeds in-process, through ``vlaforge serve`` from a
robot-side process in which torch cannot be imported (``vlaforge deploy-sim --server``), and closed through
ROS 2 topics (the ``vlaforge ros2`` node and a simulated robot node, also without torch, the policy served).

In-process and served runs use the same runtime (safety, chunk executor, monitor) on the same seeds; with a
deterministic head they must agree episode by episode. The ROS 2 loop is timer-driven (an action every control
period from the newest inputs, as on a robot), so its episodes may differ while its success should not.

    .venv/bin/python benchmarks/serving_success.py --checkpoint runs/demo/train/checkpoint [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write

#: run first in each robot-side process: importing torch fails there (and any attempt fails the run)
NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise SystemExit(f"robot side tried to import {name}")
    sys.meta_path.insert(0, NoTorch())
""")

ROS_LOOP = textwrap.dedent("""
    import json, sys
    from vlaforge.apps.ros2 import run_sim_episodes
    from vlaforge.serving.client import PolicyClient
    url, task, seeds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with PolicyClient(url) as client:
        print("RESULT " + json.dumps(run_sim_episodes(client, task, seeds)))
    assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
""")


def serve(ckpt: str, threads: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-c", "from vlaforge.cli import main; main()", "serve", "--checkpoint", ckpt,
           "--port", "0", "--threads", str(threads)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    t0, lines = time.monotonic(), []
    while time.monotonic() - t0 < 300:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"serving on (ws://\S+) ", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError("vlaforge serve did not start:\n" + "".join(lines))


def deploy(args: list[str], out: Path, robot_only: bool) -> list[dict]:
    code = (NO_TORCH if robot_only else "") + "from vlaforge.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", code, "deploy-sim", *args, "--out", str(out)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"deploy-sim {args} failed:\n{res.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())["episodes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--tasks", default="button-press-topdown-v3,drawer-close-v3,drawer-open-v3")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, in-process and of the server")
    ap.add_argument("--name", default="serving_success")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    seeds = list(range(args.seed, args.seed + args.episodes))
    rows, per_episode = [], {}
    server, url = serve(args.checkpoint, args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="vlaforge-serving-success-") as tmp:
            for task in tasks:
                common = ["--task", task, "--episodes", str(args.episodes), "--seed", str(args.seed)]
                t0 = time.perf_counter()
                local = deploy(["--checkpoint", args.checkpoint, "--threads", str(args.threads), *common],
                               Path(tmp) / f"{task}-local", robot_only=False)
                t1 = time.perf_counter()
                served = deploy(["--server", url, *common], Path(tmp) / f"{task}-served", robot_only=True)
                t2 = time.perf_counter()
                res = subprocess.run([sys.executable, "-c", NO_TORCH + ROS_LOOP, url, task,
                                      json.dumps(seeds)], capture_output=True, text=True)
                t3 = time.perf_counter()
                found = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
                if res.returncode != 0 or not found:
                    raise RuntimeError(f"the ROS 2 loop failed:\n{res.stderr[-3000:]}")
                ros = json.loads(found[0][len("RESULT "):])
                same = [a["success"] == b["success"] and a["steps"] == b["steps"]
                        for a, b in zip(local, served)]
                rows.append({
                    "task": task, "episodes": args.episodes,
                    "in_process": f"{sum(e['success'] for e in local)}/{len(local)}",
                    "served_no_torch": f"{sum(e['success'] for e in served)}/{len(served)}",
                    "ros2_served_no_torch": f"{sum(e['success'] for e in ros)}/{len(ros)}",
                    "served_episodes_identical": f"{sum(same)}/{len(same)}",
                    "wall_s (local/served/ros2)": f"{t1 - t0:.0f}/{t2 - t1:.0f}/{t3 - t2:.0f}"})
                per_episode[task] = {"in_process": [(e["success"], e["steps"]) for e in local],
                                     "served": [(e["success"], e["steps"]) for e in served],
                                     "ros2": [(e["success"], e["steps"]) for e in ros]}
                print(rows[-1], flush=True)
    finally:
        server.terminate()
        server.wait(30)
    cols = ["task", "episodes", "in_process", "served_no_torch", "ros2_served_no_torch",
            "served_episodes_identical", "wall_s (local/served/ros2)"]
    payload = {"checkpoint": args.checkpoint, "seeds": seeds, "rows": rows, "per_episode": per_episode,
               "machine": machine()}
    write(args.name, payload, markdown_table(rows, cols), command("serving_success.py"))


if __name__ == "__main__":
    main()
