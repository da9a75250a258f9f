"""``vlaforge console``: the operator's seat in a browser. A simulated robot (any registered simulator's task)
runs here at ``control_hz``; a web page served by this process (no CDN: every asset comes from here) shows it
live and lets a person drive it, record demonstrations, take over a deployed policy and stop it.

    cfg = ConsoleConfig(task="drawer-open-v3", record="data/teleop", checkpoint=None)
    with ConsoleServer(Console(cfg)).run_in_thread() as running:   # running.url: open it in a browser
        ...

What one control tick does (``Console.tick``), in order:

1. ``ESTOP`` latched (the page's button, or the safety layer's own checks): hold; only ``reset`` clears it.
2. mode ``teleop``: the controlling page's command (hand velocity per axis and gripper, from the keyboard or
   a gamepad, each in [-1, 1]) through the safety layer (``SafetyLayer``: box, velocity, acceleration). A
   command older than ``command_timeout_s`` (a stalled or closed page) is no command: the robot holds.
3. mode ``policy``: ``Controller.step`` (chunk executor, safety, monitor, and the confidence gate when the
   checkpoint has a calibrated ``confidence.json``). A ``LOW_CONFIDENCE`` verdict pauses the run (mode
   ``ask``): the robot holds and the page asks the person to take over or resume. While a person drives after
   a take-over, every ``chunk_size`` of their actions becomes a correction for the ``OnlineAdapter``, which
   adapts between episodes; ``resume`` hands control back to the policy.
4. ``env.step``; the frame and the action go to the recorder when recording (``record`` /
   ``save`` / ``discard``, atomic like ``vlaforge collect``); the episode ends after ``max_steps`` (then the
   next seed is loaded). An episode that ends while recording stops the robot (status ``END``: no more
   simulator steps) until the person saves or discards the recording; the next seed loads after that.

Everything that touches the simulator runs on the thread that ticks (its renderer's EGL context is that
thread's): a page's ``next_episode`` takes effect at the next tick.

Connections: the first page to connect (with the token) controls; others get a read-only view until one
sends ``take_control``. A closed controlling connection stops teleoperation at once (hold from the next
tick). Messages (JSON text; the camera view goes as binary JPEG): ``docs/console.md``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.types import ACTION, OBS_STATE, TASK, image_key

MODES = ("teleop", "policy", "ask")
PAGE_DIR = Path(__file__).with_name("console_page")


@dataclass(frozen=True)
class ConsoleConfig:
    task: str
    checkpoint: str | None = None  # a policy to deploy and take over from; None: teleoperation only
    record: str | None = None  # dataset directory for the recorded episodes
    cameras: tuple[str, ...] = ()  # () : the policy's cameras, else the simulator's first
    image_size: int = 96
    control_hz: float = 20.0
    seed: int = 0  # the first episode's layout; each next episode takes the next seed
    max_steps: int = 400
    speed: float = 1.0  # full key / stick deflection in action units
    command_timeout_s: float = 0.5
    adapt_every: int = 4  # corrections between adaptations (between episodes)
    token: str | None = None
    out: str | None = None  # the report at the end: console_report.json (+ the monitor's, with a policy)

    def __post_init__(self) -> None:
        from vlaforge.sim import simulator_for_task

        simulator_for_task(self.task)  # an unknown task: a ValueError with a did-you-mean
        if not 1 <= self.control_hz <= 200:
            raise ValueError(f"control_hz: expected 1..200, got {self.control_hz}")
        if not 0 < self.speed <= 1:
            raise ValueError(f"speed: expected a value in (0, 1], got {self.speed}")
        if self.max_steps < 1 or self.image_size < 16:
            raise ValueError(f"expected max_steps >= 1 and image_size >= 16, got {self.max_steps}, "
                             f"{self.image_size}")


@dataclass
class _Client:
    ident: int
    send: Any  # callable(message: str | bytes) -> None, thread-safe
    controls: bool = False


@dataclass
class _Command:
    axes: np.ndarray  # (D,) in [-1, 1]
    at: float  # monotonic seconds


@dataclass
class Tally:
    episodes: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    confidence: deque = field(default_factory=lambda: deque(maxlen=200))


class Console:
    """The robot side of the console: the simulator, the runtime and the recorder, advanced one ``tick`` at a
    time (``start`` runs ticks in a thread at ``control_hz``). Thread-safe: page messages arrive on the web
    server's thread (``handle``), ticks run on the loop's."""

    def __init__(self, cfg: ConsoleConfig):
        from vlaforge.runtime.safety import SafetyConfig, SafetyLayer
        from vlaforge.sim import simulator_for_task

        self.cfg = cfg
        self.sim = sim = simulator_for_task(cfg.task)
        self.policy = self.controller = self.adapter = None
        cameras = cfg.cameras
        if cfg.checkpoint:
            self._load_policy(cfg.checkpoint)
            cameras = cameras or tuple(self.policy.config.cameras_of(sim.embodiment))
        self.cameras = cameras or (sim.cameras[0],)
        size = self.policy.config.image_size if self.policy is not None else cfg.image_size
        self.env = sim.make_env(cfg.task, cameras=self.cameras, image_size=size, max_steps=cfg.max_steps)
        space = self.env.action_space
        self.dim = int(space.shape[0])
        dt = 1.0 / cfg.control_hz
        # teleoperation goes through the same kind of layer as the policy: the action box and rate limits
        self.safety = SafetyLayer(SafetyConfig(low=space.low, high=space.high, max_velocity=4.0 / dt,
                                               max_acceleration=40.0 / dt, max_force=50.0, dt=dt,
                                               hold_action=np.zeros(self.dim),
                                               initial_action=np.zeros(self.dim)))
        self.recorder = self._recorder() if cfg.record else None
        self.lock = threading.RLock()
        self.clients: dict[int, _Client] = {}
        self._next_client = 0
        self.mode = "teleop"
        self.command: _Command | None = None
        self.instruction = self.env.instruction if hasattr(self.env, "instruction") else cfg.task
        self.recording = False
        self.seed = cfg.seed
        self.tally = Tally()
        self.status, self.step_count, self.success = "OK", 0, False
        self.chunk: np.ndarray | None = None
        self.clamped = 0
        self.refused = 0
        self._correction: list[tuple[dict, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.obs: dict[str, Any] = {}
        self._next_episode = False
        self.episode_over = False
        self._started = False  # the first reset renders: it happens on the thread that ticks (EGL contexts
        # belong to the thread that made them)

    # -- set-up ---------------------------------------------------------------------------------------------
    def _load_policy(self, checkpoint: str) -> None:
        from vlaforge.apps.deploy_sim import DeploySimConfig, build_safety
        from vlaforge.online.adaptation import OnlineAdapter
        from vlaforge.policy import Policy
        from vlaforge.runtime import ChunkExecutor, Controller, Monitor

        policy = Policy.load(checkpoint)
        policy.set_precision("auto")
        emb = self.sim.embodiment
        if emb not in policy.config.embodiments:
            raise ValueError(f"checkpoint: the policy has no head for {emb!r} (the robot of {self.cfg.task});"
                             f" "
                             f"it has {sorted(policy.config.embodiments)}")
        dt = 1.0 / self.cfg.control_hz
        safety = build_safety(policy, emb, DeploySimConfig(checkpoint=checkpoint, task=self.cfg.task), dt)
        h = policy.config.chunk_size
        executor = ChunkExecutor(policy, strategy="recycle", recompute_every=max(1, h // 2))
        self.monitor = Monitor(policy.stats, emb, latency_budget_s=dt)
        estimator = None
        if (Path(checkpoint) / "confidence.json").is_file():
            from vlaforge.online.confidence import ConfidenceEstimator

            estimator = ConfidenceEstimator.load(policy, checkpoint)
        self.estimator = estimator
        self.controller = Controller(policy, safety, executor, self.monitor, confidence=estimator,
                                     on_low_confidence=self._on_low_confidence)
        self.adapter = OnlineAdapter(policy, adapt_every=self.cfg.adapt_every, steps=20, auto_adapt=False)
        self.policy = policy

    def _recorder(self) -> Any:
        from vlaforge.apps.collect import recorder_for

        return recorder_for(self.sim, self.cfg.record, self.cameras, self.env.image_size,
                            resume=Path(self.cfg.record).is_dir())

    # -- the page's messages ---------------------------------------------------------------------------------
    def connect(self, send: Any) -> int:
        """A page connected (already authenticated); the first one controls."""
        with self.lock:
            ident = self._next_client
            self._next_client += 1
            controls = not any(c.controls for c in self.clients.values())
            self.clients[ident] = _Client(ident, send, controls)
        self.publish()
        return ident

    def disconnect(self, ident: int) -> None:
        """The page went away: if it controlled, its command ends now (the robot holds from the next tick)."""
        with self.lock:
            client = self.clients.pop(ident, None)
            if client is not None and client.controls:
                self.command = None
        self.publish()

    def handle(self, ident: int, raw: str | bytes) -> dict[str, Any] | None:
        """One message from a page; returns an error reply for it (or None)."""
        try:
            try:
                m = json.loads(raw)
            except json.JSONDecodeError:
                raise ValueError(f"expected a JSON object, got {str(raw)[:60]!r}") from None
            if not isinstance(m, dict) or not isinstance(m.get("type"), str):
                raise ValueError(f"expected a JSON object with a 'type', got {str(raw)[:60]!r}")
            return self._handle(ident, m)
        except (ValueError, TypeError, KeyError) as e:
            with self.lock:
                self.refused += 1
            return {"type": "error", "message": str(e)[:300]}

    def _handle(self, ident: int, m: dict[str, Any]) -> dict[str, Any] | None:
        kind = m["type"]
        with self.lock:
            client = self.clients.get(ident)
            if client is None:
                raise ValueError("not connected")
            if kind == "take_control":
                for c in self.clients.values():
                    c.controls = c.ident == ident
                self.command = None
            elif kind == "estop":  # anyone watching may stop the robot
                self._estop("operator (page)")
            elif not client.controls:
                raise ValueError(f"{kind}: this page has a read-only view; send take_control first")
            elif kind == "command":
                self.command = _Command(self._parse_axes(m.get("axes")), time.monotonic())
            elif kind == "reset":
                self.safety.reset(clear_estop=True)
                if self.controller is not None:
                    self.controller.reset()
                self.status = "OK"
            elif kind == "mode":
                self._set_mode(m.get("mode"))
            elif kind == "resume":
                self._set_mode("policy")
            elif kind == "record":
                self._record(m.get("action"))
            elif kind == "next_episode":
                self._next_episode = True  # on the next tick: the simulator belongs to the loop's thread
            elif kind == "instruction":
                text = m.get("text")
                if not isinstance(text, str) or not text.strip() or len(text) > 300:
                    raise ValueError(f"instruction: expected a non-empty text of at most 300 characters, got "
                                     f"{str(text)[:60]!r}")
                self.instruction = text.strip()
            else:
                raise ValueError(f"type: expected one of command, estop, reset, mode, resume, record, "
                                 f"next_episode, instruction, take_control; got {kind[:40]!r}")
        self.publish()
        return None

    def _parse_axes(self, axes: Any) -> np.ndarray:
        """A page's command: D finite numbers; out of [-1, 1] is clamped (and counted), not refused."""
        if not isinstance(axes, list) or len(axes) != self.dim:
            raise ValueError(f"command.axes: expected a list of {self.dim} numbers, got {str(axes)[:80]}")
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"command.axes: expected numbers, got {str(axes)[:80]}")
        a = np.asarray(axes, np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"command.axes: expected finite numbers, got {a.tolist()}")
        if np.any(np.abs(a) > 1):
            self.clamped += 1
        return np.clip(a, -1, 1) * self.cfg.speed

    def _set_mode(self, mode: Any) -> None:
        if mode not in ("teleop", "policy"):
            raise ValueError(f"mode: expected teleop or policy, got {str(mode)[:40]!r}")
        if mode == "policy" and self.controller is None:
            raise ValueError("mode: policy needs a checkpoint (vlaforge console --checkpoint DIR)")
        if self.mode == "ask" and mode == "teleop":
            self._correction = []  # a take-over: the person's actions become corrections
        if mode == "policy" and self.controller is not None:
            self.controller.executor.reset()
        self.mode = "takeover" if (self.mode == "ask" and mode == "teleop") else mode
        self.command = None

    def _record(self, action: Any) -> None:
        if self.recorder is None:
            raise ValueError("record: the console was started without --record DATASET")
        if action == "start":
            self.recorder.discard_episode()
            self.recording = True
        elif action == "save":
            if self.recorder.buffered_frames == 0:
                raise ValueError("record save: no frames recorded since start")
            self.recorder.save_episode(self.cfg.task, seed=self.seed, success=self.success,
                                       instruction=self.instruction)
            self.recorder.discard_episode()
            self.recording = False
        elif action == "discard":
            self.recorder.discard_episode()
            self.recording = False
        else:
            raise ValueError(f"record.action: expected start, save or discard, got {str(action)[:40]!r}")

    def _estop(self, reason: str) -> None:
        self.safety.trigger_estop(reason)
        if self.controller is not None:
            self.controller.safety.trigger_estop(reason)
        self.status = "ESTOP"

    def _on_low_confidence(self, obs: Any, verdict: Any) -> Any:
        self.mode = "ask"  # the robot holds until the person takes over or resumes
        return None

    # -- episodes and ticks ----------------------------------------------------------------------------------
    def new_episode(self, seed: int) -> None:
        with self.lock:
            self.seed = seed
            self.obs, _ = self.env.reset(seed=seed)
            self.safety.reset(clear_estop=False)
            self.step_count, self.success, self.chunk = 0, False, None
            self.episode_over = False  # set when the episode ends while recording (it waits for save/discard)
            if self.recorder is not None and self.recording:
                self.recorder.discard_episode()  # a new layout: what was recorded belongs to the old one
            self.recording = False

    def _end_episode(self, success: bool) -> None:
        self.tally.episodes.append({"seed": self.seed, "success": bool(success), "steps": self.step_count,
                                    "mode": self.mode})
        if self.controller is not None:
            self.controller.end_episode(bool(success))  # the outcome to the monitor; a fresh plan next
        if self.adapter is not None and self.adapter.due:
            self.adapter.adapt()
        self.new_episode(self.seed + 1)

    def tick(self) -> dict[str, Any]:
        """One control period; returns what happened (status, action, mode)."""
        now = time.monotonic()  # the page's command counts as fresh against the tick's start
        with self.lock:
            if not self._started:
                self._started = True
                self.new_episode(self.seed)
            if self._next_episode:
                self._next_episode = False
                self._end_episode(self.success)
            if self.episode_over:
                if not self.recording:  # saved or discarded: the next layout
                    self._end_episode(self.success)
                else:  # the simulator's episode is over: nothing to step until the recording is kept or not
                    self.status = "END"
                    return {"status": self.status, "action": [0.0] * self.dim, "mode": self.mode,
                            "source": "hold", "step": self.step_count, "success": self.success}
            t0 = time.perf_counter()
            obs = dict(self.obs)
            obs[TASK] = self.instruction
            source = "hold"
            if self.safety.estopped or (self.controller is not None and self.controller.safety.estopped):
                safe, self.status = self.safety.hold(), "ESTOP"
                action = safe.action
            elif self.mode in ("teleop", "takeover"):
                cmd = self.command
                fresh = cmd is not None and now - cmd.at <= self.cfg.command_timeout_s
                safe = self.safety(cmd.axes) if fresh else self.safety.hold()
                action, source = safe.action, "person" if fresh else "hold"
                self.status = "OK" if fresh else "HOLD"
            else:  # policy / ask
                res = self.controller.step(obs)
                action, self.status, source = res.action, res.status, "policy"
                if "confidence" in res.info:
                    c = res.info["confidence"]
                    self.tally.confidence.append(float(getattr(c, "score", np.nan)))
                self.chunk = self.controller.executor.planned
            self.tally.latency_ms.append((time.perf_counter() - t0) * 1e3)
            if self.mode == "takeover" and source == "person":
                self._collect_correction(obs, action)
            if self.recorder is not None and self.recording:
                frame = {k: v for k, v in obs.items()
                         if k == OBS_STATE or k.startswith("observation.images.")}
                if self.recorder.env_state_dim and "observation.environment_state" in obs:
                    frame["observation.environment_state"] = obs["observation.environment_state"]
                self.recorder.add_frame(frame | {ACTION: np.asarray(action, np.float32)})
            self.obs, _, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
            self.step_count += 1
            self.success = self.success or bool(info.get("is_success", False))
            done = terminated or truncated
            out = {"status": self.status, "action": np.asarray(action).tolist(), "mode": self.mode,
                   "source": source, "step": self.step_count, "success": self.success}
            if done and self.recording:
                self.episode_over = True
            elif done:
                self._end_episode(self.success)
        return out


    def _collect_correction(self, obs: dict[str, Any], action: np.ndarray) -> None:
        self._correction.append((obs, np.asarray(action, np.float32)))
        h = self.policy.config.chunk_size
        if len(self._correction) == h:
            first = self._correction[0][0]
            chunk = np.stack([a for _, a in self._correction])
            self.adapter.add_correction(first, chunk, observations=[o for o, _ in self._correction],
                                        task_name=self.cfg.task)
            self._correction = []

    # -- what the pages see ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            eps = self.tally.episodes
            rate = sum(e["success"] for e in eps) / len(eps) if eps else None
            lat = list(self.tally.latency_ms)
            monitor = None
            if self.controller is not None:
                monitor = {"drift_alarm": self.monitor.drift_alarm,
                           "latency_alarm": self.monitor.latency_alarm}
            return {
                "type": "state", "task": self.cfg.task, "instruction": self.instruction, "mode": self.mode,
                "status": self.status, "step": self.step_count, "seed": self.seed, "success": self.success,
                "state": np.asarray(self.obs.get(OBS_STATE, [])).round(4).tolist(),
                "chunk": None if self.chunk is None else self.chunk.round(3).tolist(),
                "recording": self.recording,
                "recorded": None if self.recorder is None else self.recorder.num_episodes,
                "buffered": None if self.recorder is None else self.recorder.buffered_frames,
                "episodes": len(eps), "success_rate": rate, "latency_ms": lat[-50:],
                "budget_ms": 1000.0 / self.cfg.control_hz, "confidence": list(self.tally.confidence)[-50:],
                "monitor": monitor, "clamped": self.clamped, "refused": self.refused,
                "corrections": None if self.adapter is None else self.adapter.corrections_total,
                "adapted_version": None if self.adapter is None else self.adapter.version,
                "has_policy": self.controller is not None, "action_dim": self.dim,
                "clients": len(self.clients),
            }

    def frame_jpeg(self) -> bytes | None:
        """The cameras side by side, as JPEG (None before the first tick)."""
        import io

        from PIL import Image

        with self.lock:
            if not self.obs:
                return None
            ims = [np.asarray(self.obs[image_key(c)]) for c in self.cameras]
        buf = io.BytesIO()
        Image.fromarray(np.concatenate(ims, axis=1)).save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    def publish(self) -> None:
        """The state (JSON) to every page, each told whether it controls."""
        snap = self.snapshot()
        with self.lock:
            clients = list(self.clients.values())
        for c in clients:
            c.send(json.dumps(snap | {"role": "control" if c.controls else "view"}))

    def publish_frame(self) -> None:
        jpeg = self.frame_jpeg()
        if jpeg is None:
            return
        with self.lock:
            clients = list(self.clients.values())
        for c in clients:
            c.send(jpeg)

    # -- the loop --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="console-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = 1.0 / self.cfg.control_hz
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # the loop ends: the pages must not keep showing a live robot
                self._estop(f"the control tick failed: {e!r}"[:200])
                self.publish()
                raise
            self.publish()
            self.publish_frame()
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                nxt = time.monotonic()  # behind: do not try to catch up in a burst

    def report(self) -> dict[str, Any]:
        """The session: episodes (seed, success, steps, mode), success rate, corrections, refused and clamped
        messages, the monitor's report (with a policy)."""
        snap = self.snapshot()
        return {"task": self.cfg.task, "episodes": list(self.tally.episodes),
                "success_rate": snap["success_rate"],
                "recorded": snap["recorded"], "corrections": snap["corrections"],
                "adapted_version": snap["adapted_version"], "refused": self.refused, "clamped": self.clamped,
                "monitor": None if self.controller is None else self.monitor.report()}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.cfg.out:
            from vlaforge.fsutil import write_json_atomic

            out = Path(self.cfg.out)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "console_report.json", self.report(), default=str)
            if self.controller is not None:
                self.monitor.plot(out / "monitor.png")
        if self.recorder is not None:
            self.recorder.close()
        if self.adapter is not None:
            self.adapter.close()
        self.env.close()
