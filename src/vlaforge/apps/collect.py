"""Scripted-expert demonstrations from a simulator (Meta-World, robosuite) into a dataset
(``vlaforge collect``).

The tasks of one dataset share one robot (its ``robot_type``, the policy's embodiment): Meta-World's Sawyer
tasks, or one robosuite robot set-up's (``vlaforge.sim.simulator_for_task`` finds each task's simulator).

Each task's episodes use seeds ``seed_start, seed_start + 1, ...`` (demonstrations default to 0.., disjoint
from the evaluation seeds 1000+). A rollout runs the clipped expert until success, then ``post_success_steps``
more frames, or until ``max_steps``. By default only successful episodes are kept; the summary counts tries
and failures per task. ``workers > 1`` runs tasks in spawned worker processes (one renderer each) that feed
rollouts to the single writer in this process. ``resume`` continues a killed run: per task it counts the
episodes already committed and goes on after the highest seed used.

``action_noise`` > 0 (noise injection, as in DART, Laskey et al. 2017): the robot executes the expert's action
plus temporally correlated Gaussian noise on the hand's xyz (stationary std ``action_noise``, correlation over
~10 steps), while the frame records the expert's clean action for the state actually reached. The
demonstrations then visit states a little off the expert's path, each labelled with the expert's way back:
what a cloned policy needs once its own errors take it there. The noise of episode ``seed`` is drawn from
``seed``, so a dataset is reproducible.
"""

from __future__ import annotations

import os
import queue as queue_mod
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.types import ACTION, OBS_ENV_STATE

#: evaluation uses seeds from here on; demonstrations should stay below
EVAL_SEED_START = 1000


@dataclass
class CollectConfig:
    out: Path
    tasks: list[str]
    episodes_per_task: int = 50
    image_size: int = 96
    cameras: tuple[str, ...] = ("corner",)
    workers: int = 1
    resume: bool = False
    keep_failed: bool = False
    seed_start: int = 0
    max_steps: int = 300
    post_success_steps: int = 10
    max_tries_factor: float = 2.0  # give up on a task after episodes * factor + 5 tries
    progress: bool = True
    action_noise: float = 0.0  # std of the correlated noise added to the executed hand xyz (not recorded)
    # Meta-World's scripted policies, or "centred": reach-v3's expert aims the gripper centre, not the hand,
    # at the goal (vlaforge.sim.metaworld.CENTRED_EXPERT_TASKS; issue 18)
    expert: str = "metaworld"


@dataclass
class TaskTally:
    kept: int = 0
    tried: int = 0
    failed: int = 0
    frames: int = 0
    previously_kept: int = 0


@dataclass
class CollectSummary:
    out: Path
    per_task: dict[str, TaskTally] = field(default_factory=dict)
    wall_s: float = 0.0
    episodes_total: int = 0
    frames_total: int = 0

    def lines(self) -> list[str]:
        out = [f"{'task':28s} {'kept':>5s} {'tried':>6s} {'failed':>7s} {'frames':>7s}"]
        for task, t in self.per_task.items():
            prev = f" (+{t.previously_kept} before)" if t.previously_kept else ""
            out.append(f"{task:28s} {t.kept:5d} {t.tried:6d} {t.failed:7d} {t.frames:7d}{prev}")
        kept = sum(t.kept for t in self.per_task.values())
        tried = sum(t.tried for t in self.per_task.values())
        out.append(
            f"kept {kept} of {tried} tried in {self.wall_s:.1f}s; dataset {self.out}: "
            f"{self.episodes_total} episodes, {self.frames_total} frames"
        )
        return out


# ---------------------------------------------------------------------------------------------- rollouts


# per step: the injected noise keeps ~90% of its last value (a ~10-step time constant)
NOISE_CORRELATION = 0.9


class _ExpertRecorder:
    """The scripted expert as the episode loop's actor, recording demonstration frames: each frame is the
    observation, the expert's (clean) action and ``next.success``; the env executes the action plus the
    correlated noise. Ends the episode ``post_success_steps`` steps after the first success."""

    def __init__(self, env, seed: int, post_success_steps: int, action_noise: float = 0.0):
        self.env, self.post_success_steps, self.action_noise = env, post_success_steps, float(action_noise)
        self.rng = np.random.default_rng([int(seed), 0xDA27])
        self.noise = np.zeros(env.action_space.shape, np.float32)
        self.moves = list(getattr(env, "motion_dims", (0, 1, 2)))  # the hand's xyz (per arm)
        self.innovation = self.action_noise * np.sqrt(1.0 - NOISE_CORRELATION**2)
        self.frames: list[dict] = []
        self.success, self.after = False, 0

    def act(self, obs) -> np.ndarray:
        action = self.env.expert_action()
        frame = dict(obs)
        frame[ACTION] = action
        self.frames.append(frame)
        if self.action_noise > 0:
            drift = self.innovation * self.rng.standard_normal(len(self.moves))
            self.noise[self.moves] = NOISE_CORRELATION * self.noise[self.moves] + drift
            return np.clip(action + self.noise, -1.0, 1.0).astype(np.float32)
        return action

    def observe(self, step) -> bool:
        self.frames[-1]["next.success"] = step.success
        self.success = self.success or step.success
        if self.success:
            self.after += 1
        return self.after > self.post_success_steps


def rollout(env, seed: int, post_success_steps: int, action_noise: float = 0.0) -> tuple[list[dict], bool]:
    """One expert episode: frame dicts (observation + action + next.success) and whether it succeeded.

    ``action_noise`` > 0: the executed action is the expert's plus correlated noise on xyz; the recorded one
    is the expert's (see the module docstring). Played by the one episode loop (``vlaforge.sim.episode``)
    until the env ends the episode (its ``max_steps``) or ``post_success_steps`` after the first success."""
    from vlaforge.sim.episode import run_episode

    expert = _ExpertRecorder(env, seed, post_success_steps, action_noise)
    run_episode(env, expert, seed=seed, stop_on_success=False)
    return expert.frames, expert.success


def _plan(task: str, need: int, first_seed: int, factor: float) -> list[int]:
    return list(range(first_seed, first_seed + int(need * factor) + 5)) if need > 0 else []


def _run_task(task: str, need: int, seeds: list[int], opts: Mapping[str, Any], emit) -> None:
    """Roll out ``task`` on ``seeds`` until ``need`` are kept: ``emit("episode" | "failed", task, seed, ok,
    frames)`` for each (frames only for a kept one)."""
    from vlaforge.sim import simulator_for_task

    extra = {"expert": opts["expert"]} if opts["expert"] != "metaworld" else {}
    env = simulator_for_task(task).make_env(task, cameras=tuple(opts["cameras"]),
                                            image_size=opts["image_size"], max_steps=opts["max_steps"],
                                            **extra)
    try:
        kept = 0
        for seed in seeds:
            if kept >= need:
                break
            frames, ok = rollout(env, seed, opts["post_success_steps"], opts["action_noise"])
            if ok or opts["keep_failed"]:
                kept += 1
                emit("episode", task, seed, ok, frames)
            else:
                emit("failed", task, seed, ok, None)
    finally:
        env.close()


def _task_worker(jobs: list[tuple[str, int, list[int]]], cfg: dict, out_q, parent: int) -> None:
    """Run in a spawned process: roll out each job's seeds until ``need`` are kept; send episodes to out_q."""

    def send(*msg) -> None:
        while True:
            try:
                out_q.put(msg, timeout=1.0)
                return
            except queue_mod.Full:
                if os.getppid() != parent:  # the writer is gone (killed): stop
                    os._exit(0)

    try:
        for task, need, seeds in jobs:
            _run_task(task, need, seeds, cfg, send)
            send("task_done", task, None, None, None)
    except BaseException:  # noqa: BLE001 (any failure goes back to the writer, which raises it)
        send("error", traceback.format_exc(), None, None, None)


# ---------------------------------------------------------------------------------------------- the writer


def collect(cfg: CollectConfig) -> CollectSummary:
    """Collect demonstrations into ``cfg.out``; returns the per-task summary."""
    import multiprocessing as mp

    from tqdm import tqdm

    from vlaforge.sim import simulator_for_task

    t0 = time.perf_counter()
    if cfg.episodes_per_task < 1:
        raise ValueError(f"episodes_per_task: expected >= 1, got {cfg.episodes_per_task}")
    if not 0.0 <= cfg.action_noise <= 2.0:
        raise ValueError(f"action_noise: expected a std in [0, 2], got {cfg.action_noise}")
    sims = {task: simulator_for_task(task) for task in cfg.tasks}
    robots = sorted({s.embodiment for s in sims.values()})
    if len(robots) != 1:
        raise ValueError(f"tasks: one dataset holds one robot; these tasks use {robots} "
                         f"({', '.join(f'{t}: {s.embodiment}' for t, s in sims.items())}): collect each "
                         f"robot's tasks into a dataset of its own (training mixes datasets)")
    sim = sims[cfg.tasks[0]]
    if cfg.expert != "metaworld":
        from vlaforge.sim.metaworld import EXPERTS

        if sim.name != "metaworld" or cfg.expert not in EXPERTS:
            raise ValueError(f"expert: expected one of {EXPERTS} for Meta-World tasks (robosuite tasks take "
                             f"the default), got {cfg.expert!r} for {sim.name} tasks")
    unknown = [c for c in cfg.cameras if c not in sim.cameras]
    if unknown:
        raise ValueError(f"cameras: {sim.name} has no camera {unknown}; it has {list(sim.cameras)}")
    rec = recorder_for(sim, cfg.out, cfg.cameras, cfg.image_size, cfg.resume)
    summary = CollectSummary(out=Path(cfg.out))
    try:
        done = rec.episodes()
        # how the episodes were made, in each one's row: a resumed task must go on the same way
        made_by = {"expert": cfg.expert, "action_noise": float(cfg.action_noise)}
        jobs = []
        by_task: dict[str, list[dict]] = {}
        for e in done:
            by_task.setdefault(e["task_name"], []).append(e)
        for task in cfg.tasks:
            theirs = by_task.get(task, [])
            for e in theirs:
                differs = {k: (e[k], v) for k, v in made_by.items() if e.get(k) is not None and e[k] != v}
                if differs:
                    raise ValueError(
                        f"{cfg.out}: {task}'s episode {e['episode_index']} was recorded with "
                        + ", ".join(f"{k}={a!r}" for k, (a, _) in differs.items()) + "; this run has "
                        + ", ".join(f"{k}={b!r}" for k, (_, b) in differs.items())
                        + ": resume it with the same settings, or record into another dataset")
            mine = [e for e in theirs if e["success"] or cfg.keep_failed]
            used = [e["seed"] for e in theirs if e["seed"] is not None]
            first = max(used) + 1 if used else cfg.seed_start
            need = cfg.episodes_per_task - len(mine)
            summary.per_task[task] = TaskTally(previously_kept=len(mine))
            seeds = _plan(task, need, first, cfg.max_tries_factor)
            if seeds and seeds[-1] >= EVAL_SEED_START:
                import warnings

                warnings.warn(
                    f"{task}: demonstration seeds reach {seeds[-1]}, into the evaluation seeds "
                    f"({EVAL_SEED_START}+); lower --seed-start or --episodes-per-task",
                    stacklevel=2,
                )
            if need > 0:
                jobs.append((task, need, seeds))
        total = sum(need for _, need, _ in jobs)
        bar = tqdm(total=total, desc="collect", unit="ep", disable=not cfg.progress, dynamic_ncols=True)
        texts = {task: sim.instructions(task)[0] for task in cfg.tasks}
        opts = {
            "cameras": list(cfg.cameras),
            "image_size": cfg.image_size,
            "max_steps": cfg.max_steps,
            "post_success_steps": cfg.post_success_steps,
            "keep_failed": cfg.keep_failed,
            "action_noise": cfg.action_noise,
            "expert": cfg.expert,
        }

        def handle(kind, task, seed, ok, frames) -> None:
            tally = summary.per_task[task]
            tally.tried += 1
            tally.failed += 0 if ok else 1
            if kind == "episode":
                for f in frames:
                    if not rec.env_state_dim:
                        f.pop(OBS_ENV_STATE, None)
                    rec.add_frame(f)
                rec.save_episode(task=task, seed=seed, success=ok, instruction=texts[task], extras=made_by)
                tally.kept += 1
                tally.frames += len(frames)
                bar.update(1)
            bar.set_postfix(failed=sum(t.failed for t in summary.per_task.values()), refresh=False)

        if cfg.workers <= 1 or len(jobs) <= 1:
            _collect_inline(jobs, opts, handle)
        else:
            n = min(cfg.workers, len(jobs))
            ctx = mp.get_context("spawn")
            q = ctx.Queue(maxsize=2 * n)
            procs = [
                ctx.Process(target=_task_worker, args=(jobs[k::n], opts, q, os.getpid()), daemon=True)
                for k in range(n)
            ]
            for p in procs:
                p.start()
            try:
                running = len(jobs)
                while running:
                    try:
                        kind, a, seed, ok, frames = q.get(timeout=5.0)
                    except queue_mod.Empty:
                        if not any(p.is_alive() for p in procs):
                            raise RuntimeError("collect: every worker exited before finishing its tasks")
                        continue
                    if kind == "error":
                        raise RuntimeError(f"collect: a worker failed:\n{a}")
                    if kind == "task_done":
                        running -= 1
                        continue
                    handle(kind, a, seed, ok, frames)
            finally:
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                    p.join(timeout=5)
        bar.close()
    finally:
        rec.close()
    summary.episodes_total, summary.frames_total = rec.num_episodes, rec.num_frames
    summary.wall_s = time.perf_counter() - t0
    return summary


def _collect_inline(jobs, opts: dict[str, Any], handle) -> None:
    for task, need, seeds in jobs:
        _run_task(task, need, seeds, opts, handle)


def recorder_for(sim: Any, out: str | Path, cameras: Sequence[str], image_size: int, resume: bool) -> Any:
    """A ``DatasetRecorder`` for ``sim``'s robot: its rate, sizes and dimension names, and the object and goal
    positions (an auxiliary training target); a dataset recorded before they were is resumed without them."""
    from vlaforge.data import format as fmt
    from vlaforge.data.recorder import DatasetRecorder

    state_names, action_names, env_names = sim.names()
    info_path = Path(out) / fmt.INFO_PATH
    if resume and info_path.is_file() and OBS_ENV_STATE not in fmt.load_info(Path(out))["features"]:
        env_names = ()
    return DatasetRecorder(out, fps=int(sim.control_hz), cameras=tuple(cameras), image_size=image_size,
                           robot_type=sim.embodiment, state_dim=sim.state_dim, action_dim=sim.action_dim,
                           state_names=state_names, action_names=action_names, env_state_dim=len(env_names),
                           env_state_names=env_names or None, resume=resume)


def parse_cameras(spec: str | Sequence[str]) -> tuple[str, ...]:
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    cams = tuple(p.strip() for p in parts if p.strip())
    if not cams:
        raise ValueError(f"cameras: expected comma-separated camera names, got {spec!r}")
    return cams
