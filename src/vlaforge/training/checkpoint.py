"""Training checkpoints that lose nothing, written atomically; loading without pickle.

A training checkpoint directory (``<run>/checkpoints/last``):

    policy/             the raw (non-EMA) weights as a policy checkpoint: config.json, model.safetensors,
                        norm_stats.json (``Policy.load`` opens it)
    ema.safetensors     the EMA weights
    optimizer.pt        {"optimizer": AdamW state, "scheduler": LambdaLR state} (tensors and plain values)
    rng.pt              per process: python, numpy, torch (and CUDA) generator states
    state.json          step, stage, data sampler position, EMA update count, best validation loss, fresh
                        parameter names, world size

It is written to a temp directory beside the target and renamed over it, so a kill at any moment leaves the
previous checkpoint or the new one, never a mix. ``.pt`` files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.fsutil import atomic_dir

STATE_FILE, EMA_FILE, OPTIM_FILE, RNG_FILE, POLICY_DIR = (
    "state.json", "ema.safetensors", "optimizer.pt", "rng.pt", "policy")
FORMAT_VERSION = 1


class TrainingCheckpointError(ValueError):
    """A training checkpoint that is missing, incomplete or does not fit the run."""


# ------------------------------------------------------------------------------------------------- RNG states


def capture_rng() -> dict[str, Any]:
    """The generator states this process draws from: python ``random``, numpy's global, torch CPU
    (and CUDA)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [int(version), torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ save / load


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    stage: int  # the stage the optimizer state belongs to
    sampler_position: int  # samples of the global data stream consumed (step * batch_size)
    ema_updates: int
    best_val: float | None = None
    best_step: int | None = None
    fresh: list[str] = field(default_factory=list)
    world_size: int = 1
    batch_size: int = 0
    seed: int = 0
    bf16: bool | None = None  # the precision the run chose at its start (bf16=auto); None: not recorded

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **self.__dict__}

    @classmethod
    def from_json(cls, d: dict[str, Any], path: Path) -> TrainingState:
        if d.get("format_version") != FORMAT_VERSION:
            raise TrainingCheckpointError(f"{path}: expected format_version {FORMAT_VERSION}, "
                                          f"got {d.get('format_version')!r}")
        d = {k: v for k, v in d.items() if k != "format_version"}
        try:
            return cls(**d)
        except TypeError as e:
            raise TrainingCheckpointError(f"{path}: unexpected contents ({e})") from None


def save_training_checkpoint(directory: Path, policy, ema_state: dict[str, torch.Tensor], optimizer,
                             scheduler, rng_states: list[dict[str, Any]], state: TrainingState) -> Path:
    """Write a training checkpoint to ``directory`` atomically (temp dir, then rename)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        policy.save(tmp / POLICY_DIR)
        save_file(ema_state, str(tmp / EMA_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / OPTIM_FILE)
        torch.save({"ranks": rng_states}, tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state.to_json(), indent=2))
    return directory


@dataclass
class LoadedCheckpoint:
    state: TrainingState
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optim: dict[str, Any]
    rng: list[dict[str, Any]]


def load_training_checkpoint(directory: Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Read a training checkpoint: safetensors for weights, ``torch.load(weights_only=True)`` for the rest."""
    from safetensors.torch import load_file

    directory = Path(directory)
    missing = [f for f in (STATE_FILE, EMA_FILE, OPTIM_FILE, RNG_FILE, f"{POLICY_DIR}/model.safetensors")
               if not (directory / f).is_file()]
    if missing:
        raise TrainingCheckpointError(f"{directory}: not a complete training checkpoint (missing {missing})")
    try:
        state = TrainingState.from_json(json.loads((directory / STATE_FILE).read_text()),
                                        directory / STATE_FILE)
    except json.JSONDecodeError as e:
        raise TrainingCheckpointError(f"{directory / STATE_FILE}: expected JSON, "
                                      f"got a parse error: {e}") from None
    weights = load_file(str(directory / POLICY_DIR / "model.safetensors"), device=str(map_location))
    ema = load_file(str(directory / EMA_FILE), device=str(map_location))
    optim = torch.load(directory / OPTIM_FILE, map_location=map_location, weights_only=True)
    rng = torch.load(directory / RNG_FILE, map_location="cpu", weights_only=True)["ranks"]
    return LoadedCheckpoint(state, weights, ema, optim, rng)
