"""The safety layer: the last thing between a policy and the robot.

``SafetyLayer(SafetyConfig(...))(action, force=None) -> SafeAction(action, modified, reasons)``.

Units: actions are in physical units (the policy's output space). ``max_velocity`` is in action
units per second and ``max_acceleration`` in action units per second squared; with the control
period ``dt`` the layer turns them into per-step limits:

    step_t  = y_t - y_{t-1}                      |step_t|           <= max_velocity * dt
                                                 |step_t - step_{t-1}| <= max_acceleration * dt**2

where ``y`` are the layer's own previous *outputs* (what the robot was actually told to do).

Order of operations for one action (documented in docs/runtime.md):

0. force/torque reading above ``max_force`` (or non-finite) -> the emergency stop latches;
   a latched layer outputs the hold action, exactly, until ``reset()``.
1. non-finite input (NaN / Inf anywhere) -> the target becomes the hold target
   (``hold_action`` if configured, else the last safe output); reason ``non_finite``.
2. workspace: the target is clipped to ``[low, high]``; reason ``workspace``.
3. velocity: the step is clipped per dimension (``velocity_mode="per_dim"``) or scaled back along
   its direction to the norm limit (``"norm"``); reason ``velocity``.
4. acceleration and braking: the step is clipped into the window the acceleration limit allows
   around the previous step, intersected with the window from which the robot can still stop
   before a workspace bound while decelerating at the acceleration limit; reasons
   ``acceleration`` / ``braking``. (In ``"norm"`` mode a step that the box clip pushed above the
   norm limit is then pulled back towards the braking step; still reason ``velocity``.)

Why this order always leaves an admissible output: the layer keeps the invariant "from the
current output, braking at the acceleration limit stays inside the bounds". Given it, the
*braking step* (the previous step shrunk towards zero by one acceleration quantum per dimension)
satisfies the velocity limit, the acceleration limit and the braking window at once, so the
intersection of all three is never empty and clipping into it in the order above lands inside
all of them. The output is inside the bounds because the braking window implies it; a final
clip to the float32 bounds that lie inside the float64 ones absorbs float32 rounding. Changes
smaller than 1e-6 of the workspace width are rounding and are not reported as modifications.

First action: the layer starts from ``initial_action`` (config or ``reset(initial_action=...)``)
at rest. Without one, the first finite action is only clipped to the workspace and becomes the
reference (at rest) for the limits of the next ones; a first action that is not finite yields
the hold target, or the centre of the workspace when no ``hold_action`` is configured.

Lowering the velocity limit while moving (``set_velocity_scale``, used by the controller's
conservative mode) can make it unreachable in one step; the layer then decelerates at the
acceleration limit (acceleration and bounds keep priority over the lowered velocity).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

REASONS = ("non_finite", "workspace", "velocity", "acceleration", "braking", "force", "estop", "hold")
VELOCITY_MODES = ("per_dim", "norm")


def _vec(name: str, value: Any, dim: int | None, allow_inf: bool = False) -> np.ndarray:
    """A float64 (D,) vector from a scalar or a sequence; a clear error otherwise."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 and dim is not None:
        arr = np.full(dim, float(arr))
    if arr.ndim != 1 or (dim is not None and arr.shape != (dim,)):
        want = f"a scalar or shape ({dim},)" if dim is not None else "a 1-d array"
        raise ValueError(f"SafetyConfig.{name}: expected {want}, got shape {arr.shape}")
    if np.isnan(arr).any() or (not allow_inf and not np.isfinite(arr).all()):
        raise ValueError(f"SafetyConfig.{name}: expected finite values, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class SafetyConfig:
    """Limits of one robot. Arrays are (D,) in action units; scalars broadcast to every dimension.

    ``max_velocity`` / ``max_acceleration`` / ``max_force`` may be ``inf`` (no limit) but must be
    positive. ``max_force`` is compared against ``abs(force)`` elementwise (scalar or an array that
    broadcasts against the force reading).
    """

    low: Any
    high: Any
    max_velocity: Any
    max_acceleration: Any
    max_force: Any
    dt: float
    hold_action: Any = None
    velocity_mode: Literal["per_dim", "norm"] = "per_dim"
    initial_action: Any = None

    def __post_init__(self) -> None:
        low = _vec("low", self.low, None)
        dim = low.shape[0]
        if dim == 0:
            raise ValueError("SafetyConfig.low: expected at least one dimension, got shape (0,)")
        high = _vec("high", self.high, dim)
        if not (low < high).all():
            bad = np.flatnonzero(~(low < high)).tolist()
            raise ValueError(f"SafetyConfig: expected low < high in every dimension, not so in dims {bad}")
        if not (low.astype(np.float32) < high.astype(np.float32)).all():
            raise ValueError("SafetyConfig: low and high must stay distinct in float32")
        if self.velocity_mode not in VELOCITY_MODES:
            raise ValueError(f"SafetyConfig.velocity_mode: expected one of {VELOCITY_MODES}, got "
                             f"{self.velocity_mode!r}")
        if self.velocity_mode == "norm":
            vmax = np.asarray(self.max_velocity, dtype=np.float64)
            if vmax.ndim != 0:
                raise ValueError(f"SafetyConfig.max_velocity: expected a scalar with velocity_mode='norm', "
                                 f"got shape {vmax.shape}")
            vmax = _vec("max_velocity", vmax, dim, allow_inf=True)
        else:
            vmax = _vec("max_velocity", self.max_velocity, dim, allow_inf=True)
        amax = _vec("max_acceleration", self.max_acceleration, dim, allow_inf=True)
        fmax = np.asarray(self.max_force, dtype=np.float64)
        for name, arr in (("max_velocity", vmax), ("max_acceleration", amax), ("max_force", fmax)):
            if np.isnan(arr).any() or not (arr > 0).all():
                raise ValueError(f"SafetyConfig.{name}: expected positive limits (inf = no limit), "
                                 f"got {np.asarray(arr).tolist()}")
        dt = float(self.dt)
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"SafetyConfig.dt: expected a positive finite control period in seconds, "
                             f"got {self.dt!r}")
        fmax = fmax.copy()
        fmax.setflags(write=False)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("low", low)
        set_("high", high)
        set_("max_velocity", vmax)
        set_("max_acceleration", amax)
        set_("max_force", fmax)
        set_("dt", dt)
        for name in ("hold_action", "initial_action"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = _vec(name, value, dim)
            if not ((arr >= low) & (arr <= high)).all():
                raise ValueError(f"SafetyConfig.{name}: expected values inside [low, high], "
                                 f"got {arr.tolist()}")
            set_(name, arr)

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def replace(self, **changes: Any) -> "SafetyConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dataset_stats(cls, action_stats: Mapping[str, Any], margin: float = 0.1, *,
                           min_width: float = 0.0, **limits: Any) -> "SafetyConfig":
        """Workspace bounds from one embodiment's action statistics (``stats[emb]["action"]``).

        ``low = min - margin * (max - min)``, ``high = max + margin * (max - min)``; a dimension whose
        widened range is narrower than ``min_width`` is widened symmetrically to ``min_width``.
        A dimension with zero spread and ``min_width=0`` is an error (it would freeze that joint).
        The other limits (``max_velocity``, ``max_acceleration``, ``max_force``, ``dt``, ...) are
        passed through as keyword arguments: statistics of positions say nothing about them.
        """
        for key in ("min", "max"):
            if key not in action_stats:
                raise KeyError(f"action statistics: expected keys 'min' and 'max', "
                               f"got {sorted(action_stats)}")
        lo = np.asarray(action_stats["min"], dtype=np.float64)
        hi = np.asarray(action_stats["max"], dtype=np.float64)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError(f"action statistics: expected min and max of equal shape (D,), got {lo.shape} "
                             f"and {hi.shape}")
        if not (np.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin: expected a non-negative fraction of the range, got {margin!r}")
        span = hi - lo
        if (span < 0).any():
            raise ValueError(f"action statistics: min > max in dims {np.flatnonzero(span < 0).tolist()}")
        low, high = lo - margin * span, hi + margin * span
        short = (high - low) < min_width
        centre = (low + high) / 2
        low = np.where(short, centre - min_width / 2, low)
        high = np.where(short, centre + min_width / 2, high)
        if not (high > low).all():
            raise ValueError("action statistics: zero spread in dims "
                             f"{np.flatnonzero(high <= low).tolist()}; "
                             "pass min_width > 0 to give those dimensions a workspace")
        return cls(low=low, high=high, **limits)


@dataclass(frozen=True, eq=False)
class SafeAction:
    """What the layer let through. ``action``: float32 (D,); ``reasons``: names from ``REASONS``."""

    action: np.ndarray
    modified: bool
    reasons: tuple[str, ...] = ()
    estop: bool = False


def _reach(room: np.ndarray, quantum: np.ndarray) -> np.ndarray:
    """Largest step s >= 0 such that s plus the braking distance after it fits in ``room``.

    Braking decelerates by ``quantum`` (= max_acceleration * dt**2) per step: after a step s the
    robot still travels (s - q) + (s - 2q) + ... (positive terms only), n = floor(s / q) terms.
    f(s) = s + n*s - q*n*(n+1)/2 is increasing; invert it piece by piece.
    """
    room = np.maximum(room, 0.0)  # (D,)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n = np.floor((np.sqrt(1.0 + 8.0 * room / quantum) - 1.0) / 2.0)
        s = room / (n + 1.0) + n * quantum / 2.0
    s = np.where(np.isinf(quantum), room, s)
    return np.where(np.isfinite(s), s, 0.0)  # overflow: no step (the conservative side)


class SafetyLayer:
    """Clips, rate-limits and stops actions; see the module docstring for the order and its guarantee.

    Not thread-safe: one layer per control loop.
    """

    def __init__(self, config: SafetyConfig):
        if not isinstance(config, SafetyConfig):
            raise TypeError(f"SafetyLayer: expected a SafetyConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self._low32 = self._inside32(c.low, up=True)
        self._high32 = self._inside32(c.high, up=False)
        self._tol = 1e-6 * (c.high - c.low)  # (D,) changes below this are float rounding, not modifications
        self._velocity_scale = 1.0
        self._estop = False
        self.estop_reason: str | None = None
        self.reset()

    @staticmethod
    def _inside32(bound: np.ndarray, up: bool) -> np.ndarray:
        """The float32 bound that lies on the inner side of the float64 one (no ulp outside)."""
        b32 = bound.astype(np.float32)
        if up:
            return np.where(b32.astype(np.float64) < bound, np.nextafter(b32, np.float32(np.inf)), b32)
        return np.where(b32.astype(np.float64) > bound, np.nextafter(b32, np.float32(-np.inf)), b32)

    # -- state --------------------------------------------------------------------------------------
    def reset(self, initial_action: Any = None, clear_estop: bool = True) -> None:
        """Forget the motion history (the next action is a first action) and, by default, the estop."""
        init = self.config.initial_action if initial_action is None else initial_action
        if init is not None:
            init = self._check(init, "initial_action")
            if not np.isfinite(init).all():
                raise ValueError("initial_action: expected finite values")
            init = np.clip(init, self.config.low, self.config.high)
        self._prev: np.ndarray | None = None if init is None else init  # (D,) last output
        self._prev_step = np.zeros(self.config.dim)  # (D,) last output - the one before
        if clear_estop:
            self._estop = False
            self.estop_reason = None

    @property
    def estopped(self) -> bool:
        return self._estop

    @property
    def last_output(self) -> np.ndarray | None:
        return None if self._prev is None else self._prev.astype(np.float32)

    @property
    def velocity_scale(self) -> float:
        return self._velocity_scale

    def set_velocity_scale(self, scale: float) -> None:
        """Scale ``max_velocity`` by ``scale`` in (0, 1] (1 restores the configured limit)."""
        scale = float(scale)
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"velocity scale: expected a value in (0, 1], got {scale!r}")
        self._velocity_scale = scale

    def trigger_estop(self, reason: str = "external") -> None:
        """Latch the emergency stop from outside (a button, a watchdog)."""
        self._estop = True
        self.estop_reason = reason

    # -- checks -------------------------------------------------------------------------------------
    def _check(self, action: Any, name: str = "action") -> np.ndarray:
        arr = action if isinstance(action, np.ndarray) else np.asarray(action)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
        if arr.shape != (self.config.dim,):
            raise ValueError(f"{name}: expected shape ({self.config.dim},), got {arr.shape}")
        return arr.astype(np.float64)

    def _check_force(self, force: Any) -> str | None:
        """None when the reading is fine, else why the estop latches."""
        f = np.asarray(force)
        if f.dtype.kind not in "fiu":
            raise TypeError(f"force: expected a numeric array, got dtype {f.dtype}")
        try:
            np.broadcast_shapes(f.shape, self.config.max_force.shape)
        except ValueError:
            raise ValueError(f"force: expected a shape that broadcasts with max_force "
                             f"{self.config.max_force.shape}, got {f.shape}") from None
        f = f.astype(np.float64)
        if not np.isfinite(f).all():
            return "force_non_finite"
        if (np.abs(f) > self.config.max_force).any():
            return "force_limit"
        return None

    def _hold_target(self) -> np.ndarray:
        c = self.config
        if c.hold_action is not None:
            return c.hold_action
        if self._prev is not None:
            return self._prev
        return (c.low + c.high) / 2.0

    # -- the layer ----------------------------------------------------------------------------------
    def __call__(self, action: Any, force: Any = None) -> SafeAction:
        x = self._check(action)  # (D,)
        reasons: list[str] = []
        if force is not None:
            why = self._check_force(force)
            if why is not None and not self._estop:
                self.trigger_estop(why)
                reasons.append("force")
        if self._estop:
            return self._emit_estop(reasons)
        if not np.isfinite(x).all():
            reasons.append("non_finite")
            x = self._hold_target()
        return self._limit(x, reasons)

    def hold(self, force: Any = None) -> SafeAction:
        """Move towards the hold target under all limits (a smooth stop); reason ``hold``."""
        reasons = ["hold"]
        if force is not None and (why := self._check_force(force)) is not None and not self._estop:
            self.trigger_estop(why)
            reasons.append("force")
        if self._estop:
            return self._emit_estop(reasons[1:])
        return self._limit(self._hold_target(), reasons)

    def _emit_estop(self, reasons: list[str]) -> SafeAction:
        out = self._hold_target()
        out32 = np.clip(out.astype(np.float32), self._low32, self._high32)
        self._prev = out32.astype(np.float64)
        self._prev_step = np.zeros(self.config.dim)  # the stop is immediate
        return SafeAction(out32, True, tuple(reasons) + ("estop",), estop=True)

    def _limit(self, x: np.ndarray, reasons: list[str]) -> SafeAction:
        c = self.config
        xc = np.clip(x, c.low, c.high)  # (D,) target inside the workspace
        if (xc != x).any():
            reasons.append("workspace")
        if self._prev is None:  # first action without a reference: it becomes the reference, at rest
            out = xc
        else:
            out = self._prev + self._limit_step(xc - self._prev, reasons)
        out32 = np.clip(out.astype(np.float32), self._low32, self._high32)
        out64 = out32.astype(np.float64)
        self._prev_step = np.zeros(c.dim) if self._prev is None else out64 - self._prev
        self._prev = out64
        return SafeAction(out32, bool(reasons), tuple(dict.fromkeys(reasons)))

    def _limit_step(self, step: np.ndarray, reasons: list[str]) -> np.ndarray:
        """Velocity, then acceleration and braking, for one step. (D,) -> (D,)."""
        c, prev, a = self.config, self._prev, self._prev_step
        v = c.max_velocity * self._velocity_scale * c.dt  # (D,) per-step velocity limit
        q = c.max_acceleration * c.dt * c.dt  # (D,) per-step change of the step
        with np.errstate(invalid="ignore"):
            acc_lo, acc_hi = a - q, a + q  # inf q -> +-inf
        up, down = _reach(c.high - prev, q), _reach(prev - c.low, q)
        w_lo, w_hi = np.maximum(acc_lo, -down), np.minimum(acc_hi, up)
        # the braking step: provably inside the window; also the fallback when rounding empties it
        brake = np.sign(a) * np.maximum(np.abs(a) - np.where(np.isinf(q), np.abs(a), q), 0.0)
        brake = np.clip(brake, -down, up)
        empty = w_lo > w_hi
        w_lo, w_hi = np.where(empty, brake, w_lo), np.where(empty, brake, w_hi)

        if c.velocity_mode == "per_dim":
            sv = np.clip(step, -v, v)
            feasible = (w_lo <= v) & (w_hi >= -v)  # else the lowered limit yields to deceleration
            sv = np.where(feasible, sv, step)
            if (np.abs(sv - step) > self._tol).any():
                reasons.append("velocity")
            out = np.clip(sv, w_lo, w_hi)
            self._attribute(sv, out, acc_lo, acc_hi, -down, up, reasons)
            return out

        vn = float(v[0])  # norm mode: one scalar limit
        norm = float(np.linalg.norm(step))
        sv = step * (vn / norm) if norm > vn else step
        if norm - vn > self._tol.min():
            reasons.append("velocity")
        out = np.clip(sv, w_lo, w_hi)
        self._attribute(sv, out, acc_lo, acc_hi, -down, up, reasons)
        if np.linalg.norm(out) > vn:  # the box clip left the ball: pull back towards the braking step
            p, d = brake, out - brake
            pp, pd, dd = p @ p, p @ d, d @ d
            if pp >= vn * vn or dd == 0.0:
                lam = 0.0
            else:
                lam = (-pd + np.sqrt(max(pd * pd - dd * (pp - vn * vn), 0.0))) / dd
            pulled = np.clip(p + min(max(lam, 0.0), 1.0) * d, w_lo, w_hi)
            if (np.abs(pulled - out) > self._tol).any() and "velocity" not in reasons:
                reasons.append("velocity")
            out = pulled
        return out

    def _attribute(self, before, after, acc_lo, acc_hi, brk_lo, brk_hi, reasons: list[str]) -> None:
        """Name what the window clip enforced: the acceleration limit or the braking distance."""
        moved = np.abs(after - before) > self._tol
        if not moved.any():
            return
        hit_hi = moved & (after < before)
        hit_lo = moved & (after > before)
        acc = (hit_hi & (acc_hi <= brk_hi)) | (hit_lo & (acc_lo >= brk_lo))
        if acc.any():
            reasons.append("acceleration")
        if (moved & ~acc).any():
            reasons.append("braking")
