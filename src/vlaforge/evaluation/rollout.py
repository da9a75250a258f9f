"""Run a policy in Meta-World on fixed seeds, in parallel worker processes, and collect metrics.

Episode seeds are ``seed, seed + 1, ...`` for every task (disjoint from demonstration seeds, which start at 0).
Each worker loads the checkpoint once and keeps one environment (one renderer) per task. Chunks are played
through the runtime's ``ChunkExecutor`` (``recycle`` with ``execute_steps`` actions per chunk by default: open
loop over half the chunk, then predict again).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from vlaforge.evaluation.metrics import EpisodeResult, episode_from_trace

SIM_EMBODIMENT = "sawyer"
SIM_STATE_DIM = SIM_ACTION_DIM = 4


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    tasks: tuple[str, ...] = ("drawer-open-v3",)
    episodes: int = 20
    seed: int = 1000
    execute_steps: int | None = None  # actions played per chunk; None = half the chunk
    strategy: str = "recycle"  # ChunkExecutor strategy: recycle | ensemble | async
    workers: int = 1
    max_steps: int = 300
    stop_on_success: bool = True  # end an episode at its first success (success = the test held at some step)
    videos: int = 1  # episodes per task recorded as mp4 (the first ones)
    instructions: Mapping[str, str] = field(default_factory=dict)  # task -> instruction override (swap tests)
    out: str | None = None
    bf16: Any = "auto"  # inference under bf16 autocast: auto | True | False (vlaforge.precision)

    def __post_init__(self) -> None:
        from vlaforge.precision import normalize_setting
        from vlaforge.runtime.chunking import STRATEGIES

        normalize_setting(self.bf16)  # raises on anything but auto / true / false
        if self.strategy not in STRATEGIES:  # here, before any rollout (or, in the demo, any training) starts
            raise ValueError(f"EvalConfig.strategy: expected one of {STRATEGIES}, got {self.strategy!r}")


class IncompatibleCheckpoint(ValueError):
    """The checkpoint cannot run in this simulator as it is (cameras, embodiment, sizes)."""


def check_compatible(policy_config) -> None:
    """Raise a clear error when a checkpoint's cameras or embodiment do not fit Meta-World's Sawyer."""
    from vlaforge.sim.metaworld import CAMERAS

    unknown = [c for c in policy_config.cameras if c not in CAMERAS]
    if unknown:
        raise IncompatibleCheckpoint(f"checkpoint cameras {list(policy_config.cameras)}: Meta-World has no camera "
                                     f"{unknown}; it has {list(CAMERAS)}")
    spec = policy_config.embodiments.get(SIM_EMBODIMENT)
    if spec is None:
        raise IncompatibleCheckpoint(f"checkpoint embodiments {list(policy_config.embodiments)}: expected "
                                     f"{SIM_EMBODIMENT!r} (Meta-World's robot)")
    if (spec.state_dim, spec.action_dim) != (SIM_STATE_DIM, SIM_ACTION_DIM):
        raise IncompatibleCheckpoint(f"embodiment {SIM_EMBODIMENT!r}: Meta-World has state 4 / action 4, the "
                                     f"checkpoint expects state {spec.state_dim} / action {spec.action_dim}")


# ----------------------------------------------------------------------------------------------------------------
# one process: a policy and its environments

_STATE: dict[str, Any] = {}


def _init_worker(cfg: EvalConfig, threads: int) -> None:
    import torch

    from vlaforge.policy import Policy

    torch.set_num_threads(threads)
    policy = Policy.load(cfg.checkpoint)
    check_compatible(policy.config)
    policy.set_precision(cfg.bf16, warn=False)  # the parent resolved "auto" (choose_precision) and warned
    _STATE.clear()
    _STATE.update(cfg=cfg, policy=policy, envs={})


def _env(task: str):
    from vlaforge.sim.metaworld import MetaWorldEnv

    envs = _STATE["envs"]
    if task not in envs:
        cfg, pc = _STATE["cfg"], _STATE["policy"].config
        envs[task] = MetaWorldEnv(task, cameras=pc.cameras, image_size=pc.image_size, max_steps=cfg.max_steps,
                                  instruction=cfg.instructions.get(task))
    return envs[task]


def _run_episode(item: tuple[str, int, bool]) -> EpisodeResult:
    from vlaforge.runtime.chunking import ChunkExecutor

    task, seed, record = item
    cfg: EvalConfig = _STATE["cfg"]
    policy = _STATE["policy"]
    env = _env(task)
    h = policy.config.chunk_size
    k = cfg.execute_steps or max(1, h // 2)
    executor = ChunkExecutor(policy, strategy=cfg.strategy, recompute_every=min(k, h))
    frames, actions, successes = [], [], []
    first_cam = "observation.images." + policy.config.cameras[0]
    try:
        obs, _ = env.reset(seed=seed)
        t0 = time.perf_counter()
        for _ in range(cfg.max_steps):
            if record:
                frames.append(obs[first_cam])
            action = executor.act(obs)
            obs, _, terminated, truncated, info = env.step(action)
            actions.append(action)
            successes.append(bool(info["is_success"]))
            if (successes[-1] and cfg.stop_on_success) or terminated or truncated:
                break
        control_s = time.perf_counter() - t0
        latencies = [t * 1000 for t in executor.pop_inference_times()]
        calls = executor.policy_calls
    finally:
        executor.close()
    result = episode_from_trace(task, seed, actions, successes, chunk_latency_ms=latencies, policy_calls=calls,
                                control_s=control_s)
    if record and cfg.out:
        from vlaforge.evaluation.report import write_episode_video

        if frames:
            frames.append(obs[first_cam])
        path = Path(cfg.out) / "videos" / f"{task}_seed{seed}.mp4"
        write_episode_video(path, frames, result.success, label=f"{task} seed {seed}")
        result.video = str(path.relative_to(cfg.out))
    return result


def _close_envs() -> None:
    for env in _STATE.get("envs", {}).values():
        env.close()


# ----------------------------------------------------------------------------------------------------------------
# the job


def run_evaluation(cfg: EvalConfig, progress: bool = True) -> list[EpisodeResult]:
    """Every (task, seed) episode, in ``cfg.workers`` processes, with a progress bar over episodes."""
    from tqdm import tqdm

    from vlaforge.policy import Policy

    # fail here, before starting any worker: a worker whose start-up fails would be restarted by the pool
    check_compatible(Policy.load(cfg.checkpoint).config)
    items = [(t, cfg.seed + i, i < cfg.videos) for i in range(cfg.episodes) for t in cfg.tasks]
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(items), desc="eval episodes", unit="ep", disable=not progress, dynamic_ncols=True)
    done = {"ok": 0}

    def update(r: EpisodeResult) -> None:
        results.append(r)
        done["ok"] += r.success
        bar.set_postfix(success=f"{done['ok']}/{len(results)}")
        bar.update(1)

    try:
        if cfg.workers <= 1:
            _init_worker(cfg, threads=max(1, min(2, os.cpu_count() or 1)))
            try:
                for item in items:
                    update(_run_episode(item))
            finally:
                _close_envs()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            threads = max(1, (os.cpu_count() or 1) // cfg.workers)
            with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, threads)) as pool:
                # interleave tasks so each worker's environments stay warm and the bar moves evenly
                for r in pool.imap_unordered(_run_episode, items, chunksize=1):
                    update(r)
    finally:
        bar.close()
    order = {(t, s): i for i, (t, s, _) in enumerate(items)}
    return sorted(results, key=lambda r: order[(r.task, r.seed)])


def evaluate(cfg: EvalConfig, progress: bool = True, print_table: bool = True) -> dict:
    """Run the episodes, write results.json, report.md, report.html (+ plot, videos), return the results dict."""
    from vlaforge.evaluation.metrics import summarize
    from vlaforge.evaluation.report import format_table, write_report

    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    from vlaforge.policy import Policy

    policy = Policy.load(cfg.checkpoint)  # a missing or broken checkpoint fails here, with its own message
    check_compatible(policy.config)
    chunk = policy.config.chunk_size
    precision = policy.set_precision(cfg.bf16)  # decided once: the workers take it as a plain bool
    del policy
    if progress:
        print(precision.describe())
    t0 = time.perf_counter()
    episodes = run_evaluation(replace(cfg, bf16=precision.bf16), progress=progress)
    summary = summarize(episodes)
    results = {
        "checkpoint": str(cfg.checkpoint), "tasks": list(cfg.tasks), "episodes_per_task": cfg.episodes,
        "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "strategy": cfg.strategy,
        "execute_steps": cfg.execute_steps or max(1, chunk // 2), "max_steps": cfg.max_steps, "instructions": dict(cfg.instructions),
        "precision": precision.to_dict(),
        "wall_s": round(time.perf_counter() - t0, 1), **summary,
        "episodes": [e.to_dict() | {"chunk_latency_ms": None} for e in episodes],
    }
    if cfg.out:
        write_report(Path(cfg.out), results)
    if print_table:
        print(format_table(results))
        if cfg.out:
            print(f"report: {Path(cfg.out) / 'report.html'}")
    return results
