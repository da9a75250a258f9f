"""Training: the loop (stages, EMA, DDP), recipes, checkpoints.

    from vlaforge.training import TrainConfig, StageConfig, get_preset, train, resume
    result = train(get_preset("debug").replace(dataset="data/d", out="runs/r"))

Kept light: configs and presets import no torch; ``train`` / ``resume`` import the trainer when called.
"""

from __future__ import annotations

from vlaforge.training.config import PARAMETER_GROUPS, StageConfig, TrainConfig
from vlaforge.training.recipe import get_preset, preset_names

__all__ = [
    "PARAMETER_GROUPS",
    "StageConfig",
    "TrainConfig",
    "build_config",
    "get_preset",
    "preset_names",
    "resume",
    "train",
]


def train(config: TrainConfig, **kwargs):
    """Run a training config (see ``vlaforge.training.trainer.train``)."""
    from vlaforge.training.trainer import train as _train

    return _train(config, **kwargs)


def resume(run_dir, overrides=(), **kwargs):
    """Continue an interrupted run (see ``vlaforge.training.trainer.resume``)."""
    from vlaforge.training.trainer import resume as _resume

    return _resume(run_dir, overrides, **kwargs)


def build_config(preset: str = "scratch", overrides=(), policy_preset: str | None = None) -> TrainConfig:
    """The config a command line describes (see ``vlaforge.training.commandline.build_config``)."""
    from vlaforge.training.commandline import build_config as _build

    return _build(preset, overrides, policy_preset)
