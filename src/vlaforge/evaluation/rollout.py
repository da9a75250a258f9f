"""Run a policy in a simulator (Meta-World, robosuite: the one whose catalogue has each task) on fixed seeds,
in parallel worker processes, and collect metrics.

Episode seeds are ``seed, seed + 1, ...`` for every task (disjoint from demonstration seeds, which start at
0). Each worker loads the checkpoint once and keeps one environment (one renderer) per task
(:class:`Rollouts`). Chunks are played through the runtime's ``ChunkExecutor`` (``recycle`` with
``execute_steps`` actions per chunk by default: open loop over half the chunk, then predict again) by the
one episode loop, ``vlaforge.sim.episode``.

An in-memory policy is evaluated as it is, without a checkpoint: ``evaluate(EvalConfig(tasks=...), policy=p)``
runs in this process (``workers`` must be <= 1: a live model is not sent to worker processes); ``cfg.bf16``
applies for the run, the policy's precision is put back afterwards, torch's thread count is left as it is.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from vlaforge.evaluation.metrics import EpisodeResult, episode_from_trace


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str | None = None  # a checkpoint directory; with evaluate(..., policy=...) only a label
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


def check_compatible(policy_config, tasks: Iterable[str] = ("drawer-open-v3",)) -> None:
    """Raise a clear error when a checkpoint's cameras or embodiment do not fit the simulator of each task
    (``vlaforge.sim.simulator_for_task``; the default task is Meta-World's Sawyer)."""
    from vlaforge.sim import simulator_for_task

    for spec in {s.name: s for s in map(simulator_for_task, tasks)}.values():
        robot = policy_config.embodiments.get(spec.embodiment)
        if robot is None:
            raise IncompatibleCheckpoint(f"checkpoint embodiments {list(policy_config.embodiments)}: "
                                         f"expected {spec.embodiment!r} ({spec.name}'s robot)")
        cams = policy_config.cameras_of(spec.embodiment)
        unknown = [c for c in cams if c not in spec.cameras]
        if unknown:
            raise IncompatibleCheckpoint(f"checkpoint cameras {list(cams)}: {spec.name} has "
                                         f"no camera {unknown}; it has {list(spec.cameras)}")
        if (robot.state_dim, robot.action_dim) != (spec.state_dim, spec.action_dim):
            raise IncompatibleCheckpoint(f"embodiment {spec.embodiment!r}: {spec.name} has state "
                                         f"{spec.state_dim} / action {spec.action_dim}, the checkpoint "
                                         f"expects state {robot.state_dim} / action {robot.action_dim}")


# ------------------------------------------------------------------------------------------------------------
# one process: a policy and its environments


class Rollouts:
    """One policy and one environment (one renderer) per task, in this process: what each worker holds, and
    what an in-process run (``workers <= 1`` or an in-memory policy) uses.
    ``episode((task, seed, record))``."""

    def __init__(self, cfg: EvalConfig, policy: Any):
        self.cfg, self.policy = cfg, policy
        self.envs: dict[str, Any] = {}

    def env(self, task: str):
        from vlaforge.sim import simulator_for_task

        if task not in self.envs:
            cfg, pc = self.cfg, self.policy.config
            sim = simulator_for_task(task)
            self.envs[task] = sim.make_env(
                task, cameras=pc.cameras_of(sim.embodiment), image_size=pc.image_size,
                max_steps=cfg.max_steps, instruction=cfg.instructions.get(task))
        return self.envs[task]

    def play(self, task: str, seed: int, record: Any = None) -> tuple[Any, list[float], int]:
        """The policy through the chunk executor for one episode of ``task`` at ``seed``
        (``vlaforge.sim.episode.run_episode``; ``record``: an observation key or a function of the
        observation, as there). Returns the episode, the chunk latencies in ms and the policy calls.

        A generative head's sampling noise comes from torch's generator seeded by (task, seed) for the
        episode (the caller's generator state is put back), so an episode plays the same whichever worker
        runs it and whatever ran before: a re-run of an evaluation gives the same figures."""
        import torch

        from vlaforge.runtime.chunking import ChunkExecutor
        from vlaforge.sim.episode import run_episode

        cfg, policy = self.cfg, self.policy
        h = policy.config.chunk_size
        k = cfg.execute_steps or max(1, h // 2)
        with torch.random.fork_rng():  # CPU and, where there is one, the CUDA generator
            torch.manual_seed(zlib.crc32(f"{task}/{seed}".encode()))
            executor = ChunkExecutor(policy, strategy=cfg.strategy, recompute_every=min(k, h))
            try:
                ep = run_episode(self.env(task), executor, seed=seed, max_steps=cfg.max_steps,
                                 stop_on_success=cfg.stop_on_success, record=record)
                return ep, [t * 1000 for t in executor.pop_inference_times()], executor.policy_calls
            finally:
                executor.close()

    def episode(self, item: tuple[str, int, bool]) -> EpisodeResult:
        """One episode (``play``), scored; with ``record`` its first camera becomes a video under ``out``."""
        from vlaforge.types import image_key

        task, seed, record = item
        cfg = self.cfg
        first_cam = image_key(self.env(task).cameras[0])
        ep, latencies, calls = self.play(task, seed, record=first_cam if record else None)
        result = episode_from_trace(task, seed, ep.actions, ep.successes, chunk_latency_ms=latencies,
                                    policy_calls=calls, control_s=ep.wall_s)
        if record and cfg.out:
            from vlaforge.evaluation.report import write_episode_video

            path = Path(cfg.out) / "videos" / f"{task}_seed{seed}.mp4"
            write_episode_video(path, ep.frames, result.success, label=f"{task} seed {seed}")
            result.video = str(path.relative_to(cfg.out))
        return result

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


_STATE: dict[str, Any] = {}  # a worker process's Rollouts


def _init_worker(cfg: EvalConfig, threads: int) -> None:
    import torch

    from vlaforge.policy import Policy

    torch.set_num_threads(threads)
    policy = Policy.load(cfg.checkpoint)
    check_compatible(policy.config, cfg.tasks)
    policy.set_precision(cfg.bf16, warn=False)  # the parent resolved "auto" (choose_precision) and warned
    _STATE.clear()
    _STATE["rollouts"] = Rollouts(cfg, policy)


def _run_episode(item: tuple[str, int, bool]) -> EpisodeResult:
    return _STATE["rollouts"].episode(item)


# ------------------------------------------------------------------------------------------------------------
# the job


def _check_source(cfg: EvalConfig, policy: Any) -> None:
    if policy is None and not cfg.checkpoint:
        raise ValueError("EvalConfig.checkpoint: expected a checkpoint directory (or pass policy=...)")
    if policy is not None and cfg.workers > 1:
        raise ValueError(f"EvalConfig.workers: an in-memory policy runs in this process (a live model is not "
                         f"sent to worker processes); expected workers <= 1, got {cfg.workers} (or save the "
                         f"policy and evaluate its checkpoint)")


def run_evaluation(cfg: EvalConfig, progress: bool = True, policy: Any = None) -> list[EpisodeResult]:
    """Every (task, seed) episode, in ``cfg.workers`` processes, with a progress bar over episodes.

    ``policy``: an in-memory policy instead of ``cfg.checkpoint``, run in this process (``workers`` <= 1) with
    ``cfg.bf16`` for the run (its precision is put back afterwards) and torch's thread setting left alone."""
    from tqdm import tqdm

    from vlaforge.policy import Policy

    _check_source(cfg, policy)
    # fail here, before starting any worker: a worker whose start-up fails would be restarted by the pool
    check_compatible((policy if policy is not None else Policy.load(cfg.checkpoint)).config, cfg.tasks)
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
        if policy is not None or cfg.workers <= 1:
            before = None
            if policy is None:
                _init_worker(cfg, threads=max(1, min(2, os.cpu_count() or 1)))
                rollouts = _STATE.pop("rollouts")
            else:
                before = policy.inference_precision
                policy.set_precision(cfg.bf16, warn=False)
                rollouts = Rollouts(cfg, policy)
            try:
                for item in items:
                    update(rollouts.episode(item))
            finally:
                rollouts.close()
                if before is not None:
                    policy.inference_precision = before
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


def evaluate(cfg: EvalConfig, progress: bool = True, print_table: bool = True, policy: Any = None) -> dict:
    """Run the episodes, write results.json, report.md, report.html (+ plot, videos), return the results dict.

    ``policy``: evaluate this in-memory policy (e.g. one being adapted) instead of loading ``cfg.checkpoint``
    (then only a label in the results, may be None); it runs in this process, see :func:`run_evaluation`."""
    from vlaforge.evaluation.metrics import summarize
    from vlaforge.evaluation.report import format_table, write_report

    _check_source(cfg, policy)
    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    live = policy is not None
    if not live:
        from vlaforge.policy import Policy

        policy = Policy.load(cfg.checkpoint)  # a missing or broken checkpoint fails here, with its message
    check_compatible(policy.config, cfg.tasks)
    chunk = policy.config.chunk_size
    before = policy.inference_precision
    precision = policy.set_precision(cfg.bf16)  # decided once: the workers take it as a plain bool
    if live:
        policy.inference_precision = before  # run_evaluation sets it for the run and puts it back
    else:
        policy = None
    if progress:
        print(precision.describe())
    t0 = time.perf_counter()
    episodes = run_evaluation(replace(cfg, bf16=precision.bf16), progress=progress, policy=policy)
    summary = summarize(episodes)
    results = {
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        "tasks": list(cfg.tasks), "episodes_per_task": cfg.episodes,
        "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "strategy": cfg.strategy,
        "execute_steps": cfg.execute_steps or max(1, chunk // 2), "max_steps": cfg.max_steps,
        "instructions": dict(cfg.instructions),
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
