"""The deployment controller: one ``step(obs)`` per control period, composing executor, safety, monitor.

``Controller(policy, safety, executor, monitor).step(obs, force=None) -> StepResult(action, status, info)``

What one step does, in order (the first that applies decides the status):

1. ``ESTOP``      the safety layer's emergency stop is latched (a force spike now or earlier, or
                  ``safety.trigger_estop``): the hold action, until ``reset()``.
2. ``ESCALATE``   ``escalate_after`` consecutive failed episodes were reported with
                  ``end_episode(False)``: the robot holds and waits for a person, until ``reset()``.
3. human actions queued by the low-confidence callback are played (through the safety layer);
   status ``LOW_CONFIDENCE``, ``info["source"] = "human"``.
4. ``LOW_CONFIDENCE`` the optional ``confidence(obs)`` check says not to proceed: the robot holds
                  and ``on_low_confidence(obs, verdict)`` is asked; it may return a human action
                  chunk ((K, D) actions to play next, starting now), ``"resume"`` (run the policy
                  this step anyway) or ``None`` (keep holding).
5. the executor gives the policy's action. ``HOLD`` when it has no fresh action (a stale chunk,
                  older than ``max_chunk_age_s`` or than the executor's own limits, is never
                  executed), when the policy raised (``info["hold_reason"] == "policy_error"``,
                  the error in ``info["detail"]``) or when the policy's action is not finite
                  (the safety layer holds).
6. the safety layer checks the action and the force reading (a spike -> ``ESTOP``).
7. ``CONSERVATIVE`` the monitor's drift alarm (over the steps so far) is on: this step ran with the
                  safety layer's velocity limits scaled by ``conservative_scale``; they stay scaled
                  until the alarm clears (then ``OK`` and full speed again).

With a :class:`~vlaforge.runtime.recovery.Recovery` (``recovery=``), before step 4: the observed state is
checked against the motion the last action should have caused; a deviation re-plans (the chunk is dropped,
``info["replanned"]``), a repeated one past the retry budget moves the robot home (``RECOVERING``) and one
that home does not cure escalates (``ESCALATE``); the policy's actions are smoothed if configured. With a
``fallback`` (a callable ``obs -> action``, e.g. a scripted or conservative controller), a step that would
``HOLD`` (stale chunk, policy error, non-finite action) or hold for low confidence with no person answering
plays the fallback's action instead (``FALLBACK``, ``info["fallback_reason"]``).

The monitor (optional) gets every step's latency, the policy's raw action and the observed state,
and every policy call's duration.

"Hold" is ``safety.hold()``: a rate-limited move to the hold target (``hold_action`` or the last
safe output), so holding never jerks the robot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from vlaforge.runtime.chunking import ChunkExecutor, StaleChunkError
from vlaforge.runtime.monitor import Monitor
from vlaforge.runtime.recovery import Recovery
from vlaforge.runtime.safety import SafeAction, SafetyLayer
from vlaforge.types import OBS_STATE


class Status:
    """What a control step did (plain strings, so they log and serialize as themselves)."""

    ALL = ("OK", "CONSERVATIVE", "LOW_CONFIDENCE", "HOLD", "ESCALATE", "ESTOP", "RECOVERING", "FALLBACK")
    OK, CONSERVATIVE, LOW_CONFIDENCE, HOLD, ESCALATE, ESTOP, RECOVERING, FALLBACK = ALL


@dataclass(frozen=True)
class StepResult:
    action: np.ndarray  # float32 (D,), what to send to the robot
    status: str  # one of Status.ALL
    info: dict[str, Any] = field(default_factory=dict)


def _proceed(verdict: Any) -> bool:
    """Read a confidence verdict: a bool, an object with ``.proceed`` or a mapping with "proceed"."""
    if isinstance(verdict, (bool, np.bool_)):
        return bool(verdict)
    if isinstance(verdict, Mapping) and "proceed" in verdict:
        return bool(verdict["proceed"])
    if hasattr(verdict, "proceed"):
        return bool(verdict.proceed)
    raise TypeError("confidence check: expected a bool, a mapping with 'proceed' or an object with "
                    ".proceed, "
                    f"got {type(verdict).__name__}")


class Controller:
    """Runs a policy on a robot safely. Not thread-safe: call ``step`` from the control loop only."""

    def __init__(self, policy: Any, safety: SafetyLayer, executor: ChunkExecutor | None = None,
                 monitor: Monitor | None = None, escalate_after: int = 3, conservative_scale: float = 0.5,
                 confidence: Callable[[Any], Any] | Any = None,
                 on_low_confidence: Callable[[Any, Any], Any] | None = None,
                 max_chunk_age_s: float | None = None, confidence_every: int = 1,
                 clock: Callable[[], float] = time.perf_counter, recovery: Recovery | None = None,
                 fallback: Callable[[Any], Any] | None = None):
        if not isinstance(safety, SafetyLayer):
            raise TypeError(f"Controller.safety: expected a SafetyLayer, got {type(safety).__name__}")
        executor = executor if executor is not None else ChunkExecutor(policy)
        if executor.policy is not policy:
            raise ValueError("Controller: the executor wraps a different policy than the one given")
        if isinstance(escalate_after, bool) or not isinstance(escalate_after, int) or escalate_after < 1:
            raise ValueError(f"Controller.escalate_after: expected a positive int, got {escalate_after!r}")
        if not 0 < conservative_scale <= 1:
            raise ValueError(f"Controller.conservative_scale: expected a value in (0, 1], "
                             f"got {conservative_scale!r}")
        if max_chunk_age_s is not None and not max_chunk_age_s > 0:
            raise ValueError(f"Controller.max_chunk_age_s: expected a positive number or None, "
                             f"got {max_chunk_age_s!r}")
        if not isinstance(confidence_every, int) or confidence_every < 1:
            raise ValueError(f"Controller.confidence_every: expected a positive int, "
                             f"got {confidence_every!r}")
        if confidence is not None and not callable(confidence):
            if not callable(getattr(confidence, "estimate", None)):
                raise TypeError("Controller.confidence: expected a callable obs -> verdict or an object with "
                                f".estimate(obs), got {type(confidence).__name__}")
            confidence = confidence.estimate
        if recovery is not None and not isinstance(recovery, Recovery):
            raise TypeError(f"Controller.recovery: expected a Recovery, got {type(recovery).__name__}")
        if fallback is not None and not callable(fallback):
            raise TypeError(f"Controller.fallback: expected a callable obs -> action, got "
                            f"{type(fallback).__name__}")
        self.recovery, self.fallback = recovery, fallback
        self.policy = policy
        self.safety = safety
        self.executor = executor
        self.monitor = monitor
        self.escalate_after = escalate_after
        self.conservative_scale = float(conservative_scale)
        self.confidence = confidence
        self.on_low_confidence = on_low_confidence
        self.max_chunk_age_s = max_chunk_age_s
        self.confidence_every = confidence_every
        self.clock = clock
        self.consecutive_failures = 0
        self.status_counts = {s: 0 for s in Status.ALL}
        self.reset()

    # -- lifecycle ----------------------------------------------------------------------------------
    def reset(self, initial_action: Any = None) -> None:
        """A person cleared the situation: clear estop and escalation, restart executor and safety."""
        self.safety.reset(initial_action=initial_action, clear_estop=True)
        self.safety.set_velocity_scale(1.0)
        self.executor.reset()
        if self.recovery is not None:
            self.recovery.reset()
        self.escalated = False
        self.consecutive_failures = 0
        self._human: list[np.ndarray] = []
        self.steps = 0

    def end_episode(self, success: bool, initial_action: Any = None) -> str:
        """Report an episode's outcome; restarts executor and motion history (an estop stays latched).

        Returns the status the next step will start from (``ESCALATE`` after ``escalate_after``
        consecutive failures, ``ESTOP`` if latched, else ``OK``).
        """
        if self.monitor is not None:
            self.monitor.record_outcome(success)
        self.consecutive_failures = 0 if success else self.consecutive_failures + 1
        if self.consecutive_failures >= self.escalate_after:
            self.escalated = True
        self.executor.reset()
        if self.recovery is not None:
            self.recovery.reset()
        self.safety.reset(initial_action=initial_action, clear_estop=False)
        self._human = []
        self.steps = 0
        if self.safety.estopped:
            return Status.ESTOP
        return Status.ESCALATE if self.escalated else Status.OK

    # -- one control step ---------------------------------------------------------------------------
    def step(self, obs: Mapping[str, Any], force: Any = None) -> StepResult:
        t0 = self.clock()
        info: dict[str, Any] = {"step": self.steps}
        raw: np.ndarray | None = None
        drift = self._update_speed(info)  # the drift seen up to the last step sets this step's limits
        safe: SafeAction
        if self.safety.estopped:
            safe, status = self.safety.hold(force), Status.ESTOP
        elif self.escalated:
            safe, status = self.safety.hold(force), Status.ESCALATE
            info["consecutive_failures"] = self.consecutive_failures
        elif self._human:
            safe, status = self.safety(self._human.pop(0), force), Status.LOW_CONFIDENCE
            info["source"] = "human"
            info["human_remaining"] = len(self._human)
        else:
            safe, status, raw = self._recovering_step(obs, force, info)
        if safe.estop:
            status = Status.ESTOP
            info["estop_reason"] = self.safety.estop_reason
        if status == Status.OK and drift:
            status = Status.CONSERVATIVE
        info["safety_reasons"] = safe.reasons
        latency = self.clock() - t0
        info["latency_s"] = latency
        if self.monitor is not None:
            for dur in self.executor.pop_inference_times():
                self.monitor.record_inference(dur)
            state = obs.get(OBS_STATE) if isinstance(obs, Mapping) else None
            self.monitor.record_step(latency, action=raw, state=state)
        if self.recovery is not None:
            self.recovery.sent(obs.get(OBS_STATE) if isinstance(obs, Mapping) else None, safe.action)
        self.steps += 1
        self.status_counts[status] += 1
        return StepResult(safe.action, status, info)

    def _recovering_step(self, obs: Any, force: Any, info: dict[str, Any]):
        """The recovery check, then the policy (or the fallback where the policy's step would hold)."""
        decision = "policy"
        if self.recovery is not None:
            decision = self.recovery.check(obs.get(OBS_STATE) if isinstance(obs, Mapping) else None, info)
        if decision == "escalate":
            self.escalated = True
            return self.safety.hold(force), Status.ESCALATE, None
        if decision == "home":
            return self.safety(self.recovery.home_action(obs[OBS_STATE]), force), Status.RECOVERING, None
        if decision == "replan":
            self.executor.reset()
            info["replanned"] = True
        safe, status, raw = self._policy_step(obs, force, info)
        if "fallback_reason" in info:
            status = Status.FALLBACK
        return safe, status, raw

    def _hold(self, obs: Any, force: Any, info: dict[str, Any]) -> SafeAction:
        """Where the policy's step would hold: the fallback's action if there is one (and it works)."""
        if self.fallback is not None:
            try:
                action = np.asarray(self.fallback(obs), np.float32)
            except Exception as e:  # a broken fallback: hold, as without one
                info["fallback_error"] = repr(e)
            else:
                info["fallback_reason"] = info.get("hold_reason", "low_confidence")
                return self.safety(self._smooth(action), force)
        return self.safety.hold(force)

    def _smooth(self, action: Any) -> Any:
        return action if self.recovery is None else self.recovery.smooth(action)

    def _policy_step(self, obs: Any, force: Any, info: dict[str, Any]):
        """Steps 4-6 of the module docstring. -> (SafeAction, status, raw policy action or None)."""
        if self.confidence is not None and self.steps % self.confidence_every == 0:
            verdict = self.confidence(obs)
            info["confidence"] = verdict
            if not _proceed(verdict):
                answer = None if self.on_low_confidence is None else self.on_low_confidence(obs, verdict)
                if isinstance(answer, str):
                    if answer != "resume":
                        raise ValueError("on_low_confidence: expected a (K, D) action chunk, 'resume' or "
                                         "None, "
                                         f"got {answer!r}")
                    info["resumed"] = True
                elif answer is not None:
                    chunk = np.asarray(answer, dtype=np.float32)
                    if chunk.ndim == 1:
                        chunk = chunk[None]
                    if chunk.ndim != 2 or chunk.shape[1] != self.safety.config.dim or chunk.shape[0] == 0:
                        raise ValueError(f"on_low_confidence: expected a human action chunk (K, "
                                         f"{self.safety.config.dim}), got shape {chunk.shape}")
                    self._human = list(chunk[1:])
                    self.executor.reset()  # its chunks came from observations before the human took over
                    info["source"] = "human"
                    info["human_remaining"] = len(self._human)
                    return self.safety(chunk[0], force), Status.LOW_CONFIDENCE, None
                else:
                    return self._hold(obs, force, info), Status.LOW_CONFIDENCE, None
        try:
            raw = self.executor.act(obs)
        except StaleChunkError as e:
            info["hold_reason"] = "stale"
            info["detail"] = str(e)
            return self._hold(obs, force, info), Status.HOLD, None
        except Exception as e:  # a failing policy must not leave the robot without a command
            info["hold_reason"] = "policy_error"
            info["detail"] = repr(e)
            return self._hold(obs, force, info), Status.HOLD, None
        last = self.executor.last
        info["chunk_age_steps"] = last.age_steps
        info["chunk_age_s"] = last.age_s
        info["policy_called"] = last.policy_called
        if self.max_chunk_age_s is not None and last.age_s > self.max_chunk_age_s:
            info["hold_reason"] = "stale"
            info["detail"] = f"chunk is {last.age_s:.3f} s old, limit {self.max_chunk_age_s} s"
            return self._hold(obs, force, info), Status.HOLD, None
        if self.fallback is not None and not np.isfinite(raw).all():
            info["hold_reason"] = "non_finite"
            return self._hold(obs, force, info), Status.HOLD, raw
        safe = self.safety(self._smooth(raw), force)
        if "non_finite" in safe.reasons:
            info["hold_reason"] = "non_finite"
            return safe, Status.HOLD, raw
        return safe, Status.OK, raw

    def _update_speed(self, info: dict[str, Any]) -> bool:
        """Scale the velocity limits down while the drift alarm is on; restore them when it clears."""
        if self.monitor is None:
            return False
        alarm = self.monitor.drift_alarm
        self.safety.set_velocity_scale(self.conservative_scale if alarm else 1.0)
        info["drift_alarm"] = alarm
        info["velocity_scale"] = self.safety.velocity_scale
        return alarm
