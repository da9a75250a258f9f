"""``vlaforge deploy-sim``: the deployment runtime driving Meta-World as it would drive a robot.

    result = run_deploy_sim(DeploySimConfig(checkpoint="ckpt", task="drawer-open-v3", episodes=3,
                                            inject=("nan", "force", "slow")))

Per step of the episode loop (``vlaforge.sim.episode``): observation -> ``Controller.step``
(ChunkExecutor, SafetyLayer built from the policy's action statistics, Monitor, optional confidence gate)
-> the safe action -> ``env.step``. A live status line shows the status, step latency and safety
interventions; at the end the monitor's report (``monitor_report.json``) and plot (``monitor.png``) and
the episode summary (``summary.json``) are written to ``out``.

Fault injection (``inject``, each at step ``inject_step`` of every episode):

- ``nan``   the first chunk predicted at or after that step is all NaN -> the safety layer refuses it:
            ``HOLD`` (``hold_reason == "non_finite"``), then the next chunk plays again;
- ``slow``  the first inference at or after that step sleeps ``slow_s`` (> ``max_chunk_age_s``) -> the
            chunk is stale when it arrives and is never executed: ``HOLD`` (``hold_reason == "stale"``);
- ``force`` a force/torque reading above ``max_force`` is passed with that step -> ``ESTOP``: the robot
            stops at once and the episode ends there (in sim a person then resets the controller).
- ``push``  for ``fault_steps`` steps the world adds ``push`` to every action the robot executes (a person
            or an obstacle shoving the arm); the controller does not know.
- ``stuck`` for ``fault_steps`` steps the arm does not follow: the robot executes zeros (a stalled joint).
- ``outage`` for ``fault_steps`` steps every inference raises ``ConnectionError`` (the policy server is down).

Recovery (``recovery=True``): a forward model of the hand's position, identified in the simulator first
(300 steps of random actions, ``ForwardModel.identify``), checks the motion; deviations re-plan, retry, move
home (the state the episode started in) and escalate (``vlaforge.runtime.recovery``); ``smoothing`` blends
actions; ``fallback="expert"`` plays the scripted expert where the policy's step would hold (a stand-in for
a conservative or scripted fallback controller).

Corrections (``corrections=True``): the scripted expert plays the person, DAgger-style. Every
``recompute_every`` steps the policy's first action for the current observation is compared with
``env.expert_action()``; when they differ by more than ``correction_threshold`` (L2, action units) the
controller hands over (status ``LOW_CONFIDENCE``, ``info["source"] == "human"``) and receives the expert's
chunk: the expert rolled forward ``H`` steps from the current state on a snapshot of the simulator, which is
then restored (``env.snapshot()`` / ``env.restore(snapshot)``). MuJoCo is deterministic, so playing the
chunk reproduces the rolled-out path (unless the safety layer changes an action); the rolled-out observations
go with the chunk to the :class:`~vlaforge.online.adaptation.OnlineAdapter`, which records them and adapts
between episodes. The simulator is not paced to real time unless ``realtime=True``: latencies are compute
time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vlaforge.fsutil import write_json_atomic

INJECTIONS = ("nan", "force", "slow", "push", "stuck", "outage")
FALLBACKS = ("expert",)


@dataclass(frozen=True)
class DeploySimConfig:
    checkpoint: str | None  # the policy in this process, or
    task: str
    server: str | None = None  # ws://HOST:PORT: a policy served by `vlaforge serve`
                               # (this process needs no torch)
    token_file: str | None = None  # the server's token (with server)
    image_encoding: str = "raw"  # raw | jpeg: how camera frames go to the server
    episodes: int = 3
    strategy: str = "recycle"  # recycle | ensemble | async
    recompute_every: int | None = None  # None: half the chunk
    inject: tuple[str, ...] = ()
    inject_step: int = 20
    slow_s: float | None = None  # None: 3 x max_chunk_age_s
    max_chunk_age_s: float = 0.5
    fault_steps: int = 30  # push / stuck / outage: how long the fault lasts
    push: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)  # added to the executed action while pushed (sideways)
    # recovery behaviours (vlaforge.runtime.recovery)
    recovery: bool = False
    deviation: float = 0.04  # m: the hand's position off the 8-step prediction by more
    max_retries: int = 2
    retry_window: int = 20  # steps after a re-plan in which a deviation is a retry (max_steps: the episode)
    max_home_steps: int = 150
    smoothing: float = 0.0
    fallback: str | None = None  # expert: the scripted expert where the policy's step would hold
    out: str | None = "deploy-sim"
    seed: int = 1000
    max_steps: int = 300
    stop_on_success: bool = True
    # safety layer (action units: Meta-World's hand-velocity commands in [-1, 1], control period 1/80 s)
    margin: float = 0.1
    max_velocity: float = 80.0  # 1 unit per step
    max_acceleration: float = 6400.0  # 1 unit per step, per step
    max_force: float = 50.0
    escalate_after: int = 3
    realtime: bool = False
    # confidence gate and corrections
    confidence: bool = False  # use the checkpoint's confidence.json
    low_confidence_hold_steps: int = 5  # without corrections: hold this long, then resume
    corrections: bool = False
    correction_threshold: float = 0.5
    adapt_every: int = 50
    adapt_steps: int = 20
    dataset: str | None = None  # replay data for the adapter (a dataset directory)
    threads: int | None = 1  # torch intra-op threads for the run (None: leave torch's setting)
    bf16: Any = "auto"  # inference under bf16 autocast: auto | True | False (vlaforge.precision)
    vision_cache: float | None = None  # reuse vision features while a frame changes <= this (0-255)
    progress: bool = True

    def __post_init__(self) -> None:
        inject = tuple(self.inject)
        bad = [x for x in inject if x not in INJECTIONS]
        if bad:
            raise ValueError(f"inject: expected any of {INJECTIONS}, got {bad}")
        object.__setattr__(self, "inject", inject)
        from vlaforge.precision import normalize_setting
        from vlaforge.runtime.chunking import STRATEGIES
        from vlaforge.sim import simulator_for_task

        normalize_setting(self.bf16)  # auto / true / false, else a ValueError
        if (self.checkpoint is None) == (self.server is None):
            raise ValueError(f"expected a checkpoint (the policy in this process) or a server URL (a served "
                             f"policy), exactly one; got checkpoint={self.checkpoint!r}, "
                             f"server={self.server!r}")
        if self.server is not None and (self.confidence or self.corrections):
            raise ValueError("confidence and corrections read the model itself: they need --checkpoint, not "
                             "--server")
        if self.token_file is not None and self.server is None:
            raise ValueError("token_file: only with a server")
        if self.image_encoding not in ("raw", "jpeg"):
            raise ValueError(f"image_encoding: expected 'raw' or 'jpeg', got {self.image_encoding!r}")
        simulator_for_task(self.task)  # an unknown name is a ValueError with a did-you-mean
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if self.episodes < 1 or self.max_steps < 1 or self.inject_step < 0:
            raise ValueError(f"expected episodes >= 1, max_steps >= 1, inject_step >= 0; "
                             f"got {self.episodes}, {self.max_steps}, {self.inject_step}")
        if not self.max_chunk_age_s > 0:
            raise ValueError(f"max_chunk_age_s: expected a positive number of seconds, "
                             f"got {self.max_chunk_age_s!r}")
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise ValueError(f"fallback: expected one of {FALLBACKS} or None, got {self.fallback!r}")
        if self.fault_steps < 1:
            raise ValueError(f"fault_steps: expected >= 1, got {self.fault_steps}")
        if self.slow_s is not None and not self.slow_s > self.max_chunk_age_s:
            raise ValueError(f"slow_s: expected more than max_chunk_age_s={self.max_chunk_age_s} (else the "
                             f"slow chunk is not stale), got {self.slow_s!r}")

    @property
    def slow_delay_s(self) -> float:
        return self.slow_s if self.slow_s is not None else 3.0 * self.max_chunk_age_s


# ------------------------------------------------------------------------------------------ faults

class FaultInjector:
    """Which faults fire, at which step; the loop sets ``step`` before each controller step."""

    def __init__(self, kinds: tuple[str, ...], at_step: int, slow_s: float, max_force: float,
                 fault_steps: int = 30):
        self.kinds, self.at_step, self.slow_s, self.max_force = set(kinds), at_step, slow_s, max_force
        self.fault_steps = fault_steps
        self.step = 0
        self.fired: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.new_episode()

    def new_episode(self) -> None:
        with self._lock:
            self.step = 0
            self._done: set[str] = set()

    def take(self, kind: str) -> bool:
        """True exactly once per episode: the first time ``kind`` is armed and the step has come."""
        with self._lock:
            if kind in self.kinds and kind not in self._done and self.step >= self.at_step:
                self._done.add(kind)
                self.fired.append({"kind": kind, "step": self.step})
                return True
            return False

    def active(self, kind: str) -> bool:
        """``kind`` (push / stuck / outage) is armed and this step is within its ``fault_steps`` window."""
        if kind not in self.kinds or not self.at_step <= self.step < self.at_step + self.fault_steps:
            return False
        self.take(kind)  # recorded once, at its first step
        return True

    def force_reading(self) -> np.ndarray | None:
        """A 6-axis force/torque reading: a spike (2 x max_force on z) at the fault step, else None
        (the simulator has no force sensor here)."""
        if self.step == self.at_step and self.take("force"):
            f = np.zeros(6)
            f[2] = 2.0 * self.max_force
            return f
        return None


class FaultyPolicy:
    """Wraps ``predict_chunk`` with the ``nan`` and ``slow`` faults; everything else passes through."""

    def __init__(self, policy: Any, faults: FaultInjector):
        self._policy, self._faults = policy, faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def predict_chunk(self, obs: Mapping[str, Any]) -> np.ndarray:
        if self._faults.active("outage"):
            raise ConnectionError("injected outage: the policy is unavailable")
        slow = self._faults.take("slow")
        chunk = self._policy.predict_chunk(obs)
        if slow:
            time.sleep(self._faults.slow_s)
        if self._faults.take("nan"):
            chunk = np.full_like(chunk, np.nan)
        return chunk


# ------------------------------------------------------------------------------------- the expert's chunk

def expert_rollout(env: Any, obs: Mapping[str, Any], horizon: int) -> tuple[np.ndarray, list[dict]]:
    """The expert's next ``K <= horizon`` actions (K, D) from the current state (whose observation is
    ``obs``) and the K observations they start from (``obs`` first), rolled out on a snapshot that is then
    restored (``env.snapshot()`` / ``env.restore``)."""
    from vlaforge.sim.episode import run_episode

    k = min(horizon, env.max_steps - env.steps)
    if k <= 0:
        return np.zeros((0, env.action_space.shape[0]), np.float32), []
    snap = env.snapshot()
    try:
        ep = run_episode(env, lambda o: env.expert_action(), start=obs, max_steps=k, stop_on_success=False,
                         record=lambda o: o)
    finally:
        env.restore(snap)
    return np.stack(ep.actions).astype(np.float32), ep.frames[:k]


class SimSupervisor:
    """The controller's confidence hook in simulation, and the person behind ``on_low_confidence``.

    The verdict (a dict with ``proceed``) combines the confidence estimator (when given) and, with an
    adapter, the DAgger check ``|policy action - expert action| > threshold``. When told not to proceed it
    gives the expert's chunk (and stores it as a correction) if an adapter is given; otherwise it holds for
    ``hold_steps`` steps and then resumes (no person in the loop in sim)."""

    def __init__(self, env: Any, policy: Any, estimator: Any = None, adapter: Any = None,
                 threshold: float = 0.5, hold_steps: int = 5):
        self.env, self.policy, self.estimator, self.adapter = env, policy, estimator, adapter
        self.threshold, self.hold_steps = float(threshold), int(hold_steps)
        self.horizon = int(policy.config.chunk_size)
        self._held = 0
        self.corrections = 0
        self.low_confidence = 0
        self.adapt_results: list[Any] = []

    def __call__(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        verdict: dict[str, Any] = {"proceed": True}
        if self.estimator is not None:
            c = self.estimator.estimate(obs)
            verdict.update(score=c.score, threshold=c.threshold)
            if not c.proceed:
                verdict.update(proceed=False, reason="low_confidence")
        if self.adapter is not None and verdict["proceed"]:
            gap = float(np.linalg.norm(self.policy.predict_chunk(obs)[0] - self.env.expert_action()))
            verdict["gap"] = gap
            if gap > self.threshold:
                verdict.update(proceed=False, reason="stray")
        return verdict

    def on_low_confidence(self, obs: Mapping[str, Any], verdict: Mapping[str, Any]) -> Any:
        self.low_confidence += 1
        if self.adapter is not None:
            chunk, frames = expert_rollout(self.env, obs, self.horizon)
            if len(chunk) == 0:
                return "resume"
            self.corrections += 1
            result = self.adapter.add_correction(obs, chunk, observations=frames,
                                                 task_name=self.env.task_name)
            if result is not None:
                self.adapt_results.append(result)
            return chunk
        self._held += 1
        if self._held > self.hold_steps:
            self._held = 0
            return "resume"
        return None


# ------------------------------------------------------------------------------------------ the deployment

def build_safety(policy: Any, embodiment: str, cfg: DeploySimConfig, dt: float, action_low=None,
                 action_high=None):
    """The safety layer from the policy's action statistics, intersected with the robot's action box."""
    from vlaforge.runtime.safety import SafetyConfig, SafetyLayer

    sc = SafetyConfig.from_dataset_stats(policy.stats[embodiment]["action"], margin=cfg.margin,
                                         min_width=0.05, max_velocity=cfg.max_velocity,
                                         max_acceleration=cfg.max_acceleration, max_force=cfg.max_force,
                                         dt=dt)
    low, high = np.asarray(sc.low), np.asarray(sc.high)
    if action_low is not None:
        low, high = np.maximum(low, action_low), np.minimum(high, action_high)
    hold = np.clip(np.zeros_like(low), low, high)  # velocity commands: stand still
    return SafetyLayer(sc.replace(low=low, high=high, hold_action=hold))


def build_recovery(cfg: DeploySimConfig, env: Any) -> Any:
    """The recovery behaviours: with ``cfg.recovery`` the forward model identified in ``env`` (home is set per
    episode, to where it starts); else smoothing alone."""
    from vlaforge.runtime.recovery import ForwardModel, Recovery, RecoveryConfig

    if not cfg.recovery:
        return Recovery(RecoveryConfig(smoothing=cfg.smoothing))
    from vlaforge.sim import simulator_for_task

    names = simulator_for_task(cfg.task).names()[0]
    position = [i for i, n in enumerate(names) if n.endswith(("_x", "_y", "_z"))]  # the hand, not the gripper
    model = ForwardModel.identify(env, dims=position or None)
    rc = RecoveryConfig(deviation_threshold=cfg.deviation, max_retries=cfg.max_retries,
                        retry_window=cfg.retry_window, home_state=tuple(np.zeros(len(model.dims))),
                        max_home_steps=cfg.max_home_steps, smoothing=cfg.smoothing)
    return Recovery(rc, model)


class SimDeployment:
    """One policy, one task, the full runtime stack; ``run_episode(seed)`` per episode; ``close()``."""

    def __init__(self, policy: Any, cfg: DeploySimConfig, estimator: Any = None, adapter: Any = None):
        from vlaforge.runtime.chunking import ChunkExecutor
        from vlaforge.runtime.controller import Controller
        from vlaforge.runtime.monitor import Monitor
        from vlaforge.sim import simulator_for_task

        self.cfg, self.policy, self.adapter = cfg, policy, adapter
        pc = policy.config
        sim = simulator_for_task(cfg.task)
        self.env = sim.make_env(cfg.task, cameras=pc.cameras_of(sim.embodiment), image_size=pc.image_size,
                                max_steps=cfg.max_steps)
        self.dt = 1.0 / float(type(self.env).metadata["render_fps"])
        embodiment = sim.embodiment
        h = pc.chunk_size
        k = cfg.recompute_every or max(1, h // 2)
        if not 1 <= k <= h:
            raise ValueError(f"recompute_every: expected 1..{h} (the chunk size), got {k}")
        self.faults = FaultInjector(cfg.inject, cfg.inject_step, cfg.slow_delay_s, cfg.max_force,
                                    cfg.fault_steps)
        faulty = {"nan", "slow", "outage"} & set(cfg.inject)
        self.deployed = FaultyPolicy(policy, self.faults) if faulty else policy
        space = self.env.action_space
        self.safety = build_safety(policy, embodiment, cfg, self.dt, space.low, space.high)
        self.executor = ChunkExecutor(self.deployed, strategy=cfg.strategy, recompute_every=k,
                                      max_chunk_age_s=cfg.max_chunk_age_s)
        self.monitor = Monitor(policy.stats, embodiment, latency_budget_s=self.dt)
        self.supervisor = None
        gate, every = None, 1
        if estimator is not None or adapter is not None:
            self.supervisor = SimSupervisor(self.env, policy, estimator, adapter, cfg.correction_threshold,
                                            cfg.low_confidence_hold_steps)
            gate = self.supervisor
            every = 1 if estimator is not None else k  # the DAgger check alone: once per chunk
        ask = None if self.supervisor is None else self.supervisor.on_low_confidence
        self.recovery = build_recovery(cfg, self.env) if cfg.recovery or cfg.smoothing else None
        env = self.env
        fallback = (lambda obs: np.clip(env.expert_action(), -1, 1)) if cfg.fallback == "expert" else None
        self.controller = Controller(self.deployed, self.safety, self.executor, self.monitor,
                                     escalate_after=cfg.escalate_after, confidence=gate,
                                     on_low_confidence=ask, confidence_every=every, recovery=self.recovery,
                                     fallback=fallback)
        self.episodes: list[dict[str, Any]] = []

    def run_episode(self, seed: int, bar: Any = None) -> dict[str, Any]:
        from vlaforge.sim.episode import run_episode

        cfg, ctl = self.cfg, self.controller
        self.faults.new_episode()
        fired_before = len(self.faults.fired)
        sup = self.supervisor
        actor = _ControlActor(self, bar)
        ep = run_episode(self.env, actor, seed=seed, max_steps=cfg.max_steps,
                         stop_on_success=cfg.stop_on_success, period_s=self.dt if cfg.realtime else None)
        success = ep.success
        next_status = ctl.end_episode(success)
        operator_reset = next_status in ("ESTOP", "ESCALATE")
        if operator_reset:
            ctl.reset()  # in sim, the person clears the stop / looks at the failures at once
        adapt = None
        if self.adapter is not None and self.adapter.due:
            self.executor.wait_idle(timeout=30.0)  # an async call still in flight must not race the update
            adapt = self.adapter.adapt().to_dict()  # between episodes: the robot is at rest
        lat = actor.latency
        fault_end = cfg.inject_step + cfg.fault_steps
        timed = {"push", "stuck", "outage"} & set(cfg.inject)
        rec = None
        if self.recovery is not None:
            rec = {k: v - actor.recovery0[k] for k, v in self.recovery.totals.items()}
        summary = {
            "seed": seed, "success": success, "steps": actor.steps, "final_status": actor.final,
            "statuses": dict(actor.statuses), "safety_interventions": actor.interventions,
            "safety_reasons": dict(actor.reasons), "hold_reasons": dict(actor.hold_reasons),
            "faults": self.faults.fired[fired_before:],
            "corrections": (sup.corrections - actor.corrections0) if sup else 0,
            "latency_ms": {"p50": 1000 * float(np.percentile(lat, 50)),
                           "p99": 1000 * float(np.percentile(lat, 99))},
            "next_status": next_status, "operator_reset": operator_reset, "adaptation": adapt,
            "violations": actor.violations, "recovery": rec,
            # a push / stuck / outage: steps from the end of the fault to success (None: no success)
            "steps_to_recover": actor.steps - fault_end if timed and success else None,
        }
        summary["episode"] = len(self.episodes)
        self.episodes.append(summary)
        return summary

    def close(self) -> None:
        self.executor.close()
        self.env.close()


class _ControlActor:
    """One deploy-sim episode as the episode loop's actor: the fault step, ``Controller.step``, the counts and
    the live status line; None (stop before stepping) on ``ESTOP``."""

    def __init__(self, dep: SimDeployment, bar: Any = None):
        self.dep, self.bar = dep, bar
        self.statuses: Counter = Counter()
        self.reasons: Counter = Counter()
        self.hold_reasons: Counter = Counter()
        self.latency: deque = deque(maxlen=100)
        self.interventions, self.final, self.steps = 0, "OK", 0
        self.corrections0 = dep.supervisor.corrections if dep.supervisor else 0
        self.recovery0 = dict(dep.recovery.totals) if dep.recovery is not None else {}
        self.violations = 0  # actions sent outside the safety layer's box or velocity limit
        self._sent: np.ndarray | None = None

    def begin(self, obs: Mapping[str, Any]) -> None:
        from vlaforge.types import OBS_STATE

        if not self.dep.episodes:  # as on a robot: warm the policy (language encoder, kernels) first
            self.dep.policy.predict_chunk(obs)
        rec = self.dep.recovery
        if rec is not None and rec.model is not None:  # home: where this episode started
            rec.set_home(np.asarray(obs[OBS_STATE], np.float64)[rec.model.dims])

    def _count_violation(self, action: np.ndarray) -> None:
        sc, eps = self.dep.safety.config, 1e-5
        low, high = np.asarray(sc.low), np.asarray(sc.high)
        outside = bool(np.any(action < low - eps) or np.any(action > high + eps))
        jump = 0.0 if self._sent is None else float(np.max(np.abs(action - self._sent)
                                                           - np.asarray(sc.max_velocity) * sc.dt))
        self.violations += int(outside or jump > eps)
        self._sent = action

    def act(self, obs: Mapping[str, Any]) -> np.ndarray | None:
        dep, t = self.dep, self.steps
        dep.faults.step = t
        res = dep.controller.step(obs, force=dep.faults.force_reading())
        self.statuses[res.status] += 1
        self.reasons.update(res.info.get("safety_reasons", ()))
        self.interventions += bool(res.info.get("safety_reasons"))
        if "hold_reason" in res.info:
            self.hold_reasons[res.info["hold_reason"]] += 1
        self.latency.append(res.info["latency_s"])
        self.final, self.steps = res.status, t + 1
        self._count_violation(np.asarray(res.action, np.float64))
        if self.bar is not None:
            self.bar.update(1)
            line = (f"{res.status:<14} step {1000 * res.info['latency_s']:6.1f} ms "
                    f"p99 {1000 * float(np.percentile(self.latency, 99)):6.1f} ms  "
                    f"safety {self.interventions}  holds {self.statuses['HOLD']}")
            sup = dep.supervisor
            if sup is not None and dep.adapter is not None:
                line += f"  corrections {sup.corrections - self.corrections0}"
            self.bar.set_postfix_str(line, refresh=False)
        if res.status == "ESTOP":
            return None  # the robot is stopped; a person has to look at it before it moves again
        if dep.faults.active("stuck"):
            return np.zeros_like(res.action)  # the arm does not follow
        if dep.faults.active("push"):
            push = np.asarray(dep.cfg.push, np.float32)
            if push.shape != res.action.shape:
                raise ValueError(f"push: expected {res.action.shape[0]} values (the action size), got "
                                 f"{push.shape[0]}")
            return np.clip(res.action + push, -1.0, 1.0)  # the world moves the arm more than commanded
        return res.action


def run_deploy_sim(cfg: DeploySimConfig, policy: Any = None) -> dict[str, Any]:
    """Load the checkpoint (unless ``policy`` is given), run the episodes, write the outputs (when
    ``cfg.out``) and return the summary."""
    from tqdm import tqdm

    from vlaforge.evaluation.rollout import check_compatible

    if cfg.server is not None and policy is None:  # the robot side alone: no torch in this process
        from vlaforge.serving.client import PolicyClient
        from vlaforge.serving.protocol import read_token

        token = read_token(cfg.token_file) if cfg.token_file else None
        policy = PolicyClient(cfg.server, token=token, image_encoding=cfg.image_encoding)
        precision = None
        if cfg.progress:
            served = policy.metadata
            print(f"policy served by {served['server']} at {cfg.server}: {served['head']} head, "
                  f"{served['precision'] or 'precision not said'}, chunk {served['chunk_size']}")
    else:
        if cfg.threads is not None:
            import torch

            # one thread by default: on a loaded 2-core machine two intra-op threads stall each other, an
            # inference then takes far longer than the chunk's age limit and every chunk is held as stale
            torch.set_num_threads(cfg.threads)
        if policy is None:
            from vlaforge.policy import Policy

            policy = Policy.load(cfg.checkpoint)
        precision = policy.set_precision(cfg.bf16)
        if cfg.progress:
            print(precision.describe())
    cache = None
    if cfg.vision_cache is not None:
        if not hasattr(policy, "set_vision_cache"):
            raise ValueError("vision_cache: needs a policy loaded in this process (--checkpoint), "
                             "not --server")
        cache = policy.set_vision_cache(cfg.vision_cache)
    check_compatible(policy.config, [cfg.task])
    out = Path(cfg.out) if cfg.out else None
    estimator = adapter = None
    if cfg.confidence:
        from vlaforge.online.confidence import ConfidenceEstimator

        estimator = ConfidenceEstimator.load(policy, cfg.checkpoint)
    if cfg.corrections:
        from vlaforge.online.adaptation import OnlineAdapter

        replay = None
        if cfg.dataset:
            from vlaforge.data import ChunkDataset

            replay = ChunkDataset(cfg.dataset, policy.config.chunk_size, split="train", progress=cfg.progress)
        adapter = OnlineAdapter(policy, adapt_every=cfg.adapt_every, steps=cfg.adapt_steps, replay=replay,
                                record_to=None if out is None else out / "corrections",
                                versions_dir=None if out is None else out / "versions", auto_adapt=False)
    dep = SimDeployment(policy, cfg, estimator, adapter)
    t0 = time.perf_counter()
    try:
        for i in range(cfg.episodes):
            seed = cfg.seed + i
            with tqdm(total=cfg.max_steps, desc=f"{cfg.task} ep {i} seed {seed}", unit="step",
                      disable=not cfg.progress, dynamic_ncols=True, leave=True) as bar:
                ep = dep.run_episode(seed, bar)
                outcome = "success" if ep["success"] else "failure"
                bar.set_description(f"{cfg.task} ep {i} seed {seed} {outcome}")
            if ep["adaptation"] and cfg.progress:
                a = ep["adaptation"]
                print(f"adapted -> version {a['version']}: {a['steps']} steps in {a['wall_s']:.1f} s, "
                      f"loss {a['loss_first']:.3f} -> {a['loss_last']:.3f}")
    finally:
        dep.close()
        if adapter is not None:
            adapter.close()
        if cfg.server is not None:
            policy.close()
    report = dep.monitor.report()
    seen = sorted({s for e in dep.episodes for s in e["statuses"]})
    result = {"config": asdict(cfg), "precision": None if precision is None else precision.to_dict(),
              "wall_s": time.perf_counter() - t0,
              "episodes": dep.episodes,
              "success_rate": sum(e["success"] for e in dep.episodes) / len(dep.episodes),
              "statuses_seen": seen, "faults": dep.faults.fired, "monitor": report,
              "corrections_total": 0 if adapter is None else adapter.corrections_total,
              "adapter_version": None if adapter is None else adapter.version,
              "vision_cache": None if cache is None else {"threshold": cache.threshold, "reused": cache.hits,
                                                          "encoded": cache.misses}}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "monitor_report.json", report, default=_jsonable)
        dep.monitor.plot(out / "monitor.png")
        write_json_atomic(out / "summary.json", result, default=_jsonable)
    return result


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    lines = [f"{'ep':>3s} {'seed':>6s} {'success':>7s} {'steps':>5s} {'final':>14s} {'safety':>6s}  statuses"]
    for e in result["episodes"]:
        st = ", ".join(f"{k} {v}" for k, v in sorted(e["statuses"].items()))
        faults = ", ".join(f"{f['kind']}@{f['step']}" for f in e["faults"])
        extra = f"  faults: {faults}" if faults else ""
        extra += f"  corrections {e['corrections']}" if e["corrections"] else ""
        lines.append(f"{e['episode']:3d} {e['seed']:6d} {str(e['success']):>7s} {e['steps']:5d} "
                     f"{e['final_status']:>14s} {e['safety_interventions']:6d}  {st}{extra}")
    lat = result["monitor"]["latency"]["step"]
    p50 = "n/a" if lat.get("p50") is None else f"{1000 * lat['p50']:.1f}"
    p99 = "n/a" if lat.get("p99") is None else f"{1000 * lat['p99']:.1f}"
    lines.append(f"success {result['success_rate']:.2f}; statuses seen {', '.join(result['statuses_seen'])}; "
                 f"step latency p50 {p50} ms p99 {p99} ms; alarms {result['monitor']['alarms'] or 'none'}")
    vc = result.get("vision_cache")
    if vc:
        lines.append(f"vision cache (threshold {vc['threshold']:g}): reused {vc['reused']} of "
                     f"{vc['reused'] + vc['encoded']} camera frames")
    return lines


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return str(x)
