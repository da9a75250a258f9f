"""Typed, frozen configuration of a training run: the policy it trains and how it trains it.

    cfg = TrainConfig(policy=presets.get("tiny"), dataset="data/pick", out="runs/pick", steps=2000)
    cfg = apply_overrides(cfg, ["policy.head=tokens", "batch_size=32"])    # what CLI flags do

A run is a list of stages (``StageConfig``): each names the parameter groups that train, its learning rate
and its steps. Every field has an attribute docstring; ``vlaforge train --help`` is generated from them.
The resolved config is saved as ``config.json`` in the run directory (``to_dict`` / ``from_dict``).
No torch here: this module is imported by the CLI to print help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlaforge.config import PARAMETER_GROUPS, PolicyConfig
from vlaforge.names import did_you_mean
from vlaforge.precision import BF16Setting

CONFIG_VERSION = 1


def _not_int(v: Any) -> bool:
    return not isinstance(v, int) or isinstance(v, bool)


def _check_keys(cls, d: Mapping[str, Any], what: str) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValueError(f"{what}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], known, cutoff=0.5)} "
                         f"Known fields: {', '.join(known)}")


@dataclass(frozen=True)
class StageConfig:
    """One stage of a recipe: which parameter groups train, at what learning rate, for how many steps."""

    name: str = "train"
    """Name shown in the logs (``align``, ``cofinetune``, ...); distinct within a run."""
    train: tuple[str, ...] = PARAMETER_GROUPS
    """Parameter groups that train (of vision, language, state, fusion, heads); the rest are frozen: no
    gradient, weights unchanged."""
    lr: float = 0.0
    """Peak learning rate of the stage; 0 uses the run's ``lr``."""
    steps: int = 0
    """Optimizer steps of the stage; 0 takes a share (by ``weight``) of what the stages with explicit steps
    leave of the run's ``steps``."""
    weight: float = 1.0
    """Share of the remaining steps for a stage whose ``steps`` is 0, relative to the other such stages."""
    train_fresh: bool = True
    """Parameters that ``init`` did not provide (a new embodiment's head, state encoder and token) train in
    this stage even where their group is frozen."""

    def __post_init__(self) -> None:
        train = (self.train,) if isinstance(self.train, str) else tuple(self.train)
        object.__setattr__(self, "train", train)
        bad = [g for g in train if g not in PARAMETER_GROUPS]
        if bad:
            raise ValueError(f"StageConfig.train: expected names from {PARAMETER_GROUPS}, got {list(train)}"
                             f"{did_you_mean(bad[0], PARAMETER_GROUPS, cutoff=0.5)}")
        if not train:
            raise ValueError("StageConfig.train: expected at least one parameter group, got none")
        if len(set(train)) != len(train):
            raise ValueError(f"StageConfig.train: expected distinct groups, got {list(train)}")
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"StageConfig.name: expected a non-empty str, got {self.name!r}")
        if not self.lr >= 0:
            raise ValueError(f"StageConfig.lr: expected a float >= 0, got {self.lr!r}")
        if _not_int(self.steps) or self.steps < 0:
            raise ValueError(f"StageConfig.steps: expected an int >= 0, got {self.steps!r}")
        if not self.weight > 0:
            raise ValueError(f"StageConfig.weight: expected a float > 0, got {self.weight!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = list(self.train)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageConfig:
        _check_keys(cls, d, "StageConfig")
        return cls(**dict(d))


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the policy (``policy.*``), the data, the recipe (``stages``) and the optimizer."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy to train (its fields are listed under ``policy.*``)."""
    dataset: str = ""
    """Dataset directory (LeRobot v3 layout, as ``vlaforge collect`` writes); several robots' datasets
    comma-separated: one policy over all of them, each robot an equal share of the batches."""
    out: str = ""
    """Run directory: config.json, log.jsonl, train.log, checkpoints/, and the final checkpoint/."""
    init: str = ""
    """Policy checkpoint to start from (fine-tuning). Tensors are loaded by name and shape; a new embodiment
    of the dataset gets a fresh head, state encoder and embodiment token."""
    embodiments_from_data: bool = True
    """Take ``policy.embodiments`` (names, state and action sizes) from the dataset's statistics. Set false
    (or set ``policy.embodiments``) to use the config's list."""
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    """The recipe: a list of stages run in order. On the command line a JSON list, or one field at a time:
    ``--stages.0.lr=1e-4`` or ``--stages.align.lr=1e-4``."""
    steps: int = 10_000
    """Optimizer steps of the whole run, over all stages."""
    batch_size: int = 64
    """Global batch size; with N processes each takes batch_size / N."""
    lr: float = 3e-4
    """Peak learning rate for stages whose ``lr`` is 0."""
    weight_decay: float = 0.05
    """AdamW weight decay on weight matrices (never on norms, biases, embeddings or learned tokens)."""
    betas: tuple[float, ...] = (0.9, 0.95)
    """AdamW betas."""
    warmup: float = 0.05
    """Fraction of each stage's steps spent in linear warm-up from 0; a cosine decay follows."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at this fraction of the stage's peak learning rate."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (ramped up as min(decay, (1+n)/(10+n)) over the
    n updates so far). The EMA is what validation uses and what gets saved as the policy; 0 turns it off."""
    bf16: BF16Setting = "auto"
    """bfloat16 autocast for the forward pass (weights and optimizer stay float32): auto (bf16 only where this
    machine runs it natively and a timed probe finds it faster; fp32 otherwise, e.g. on AVX2-only CPUs), true
    or false. The choice and its reason are logged and kept for an exact resume (vlaforge.precision)."""
    seed: int = 0
    """Seed of the weights, the data order and the noise: two runs with the same config are identical."""
    augment: bool = True
    """Image augmentation of training samples (the dataset's own)."""
    paraphrase: bool = True
    """Replace instructions with paraphrases during training (the dataset's own)."""
    val_interval: int = 500
    """Steps between validation passes on the held-out episodes (and at the end); 0 validates only at the
    end."""
    val_batches: int = 20
    """Batches per validation pass (a fixed subset, the same every time); 0 uses the whole validation
    split."""
    log_interval: int = 50
    """Steps between log lines (log.jsonl, TensorBoard, progress bar)."""
    ckpt_interval: int = 1000
    """Steps between training checkpoints (and one at the end); 0 saves only at the end."""
    num_workers: int = 2
    """Data-loading worker processes per training process; 0 loads in the training process."""
    threads: int = 0
    """torch CPU threads per process; 0 leaves torch's default."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (cuda when available). Under torchrun each process takes cuda:LOCAL_RANK."""
    tensorboard: bool = True
    """Also write TensorBoard events to <out>/tensorboard when the tensorboard package is installed."""
    progress: bool = True
    """Show a progress bar with loss, rate and ETA."""

    def __post_init__(self) -> None:
        if isinstance(self.policy, Mapping):
            object.__setattr__(self, "policy", PolicyConfig.from_dict(self.policy))
        stages = tuple(StageConfig.from_dict(s) if isinstance(s, Mapping) else s for s in self.stages)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if not isinstance(self.policy, PolicyConfig):
            raise bad("policy", "a PolicyConfig")
        if not (isinstance(self.bf16, bool) or self.bf16 == "auto"):
            raise bad("bf16", "true, false or 'auto'")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if _not_int(v) or v <= 0:
                raise bad(name, "a positive int")
        for name in ("val_interval", "val_batches", "log_interval", "ckpt_interval", "num_workers", "threads",
                     "seed"):
            v = getattr(self, name)
            if _not_int(v) or v < 0:
                raise bad(name, "an int >= 0")
        if self.log_interval == 0:
            raise bad("log_interval", "a positive int")
        if not self.lr > 0:
            raise bad("lr", "a float > 0")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "a float >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "two floats in [0, 1)")
        if not 0 <= self.warmup < 1:
            raise bad("warmup", "a fraction in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "a fraction in [0, 1]")
        if not self.grad_clip >= 0:
            raise bad("grad_clip", "a float >= 0 (0: no clipping)")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "a float in [0, 1)")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if not self.stages:
            raise bad("stages", "at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise bad("stages", f"stages with distinct names (got {names})")
        self.stage_steps()  # raises when the steps do not add up

    def stage_steps(self) -> list[int]:
        """The steps of each stage: explicit ones as given, the rest share what is left by weight."""
        explicit = sum(s.steps for s in self.stages)
        auto = [s for s in self.stages if s.steps == 0]
        left = self.steps - explicit
        if left < 0 or (not auto and left != 0):
            raise ValueError(f"TrainConfig.stages: the stages' explicit steps add up to {explicit} "
                             f"but steps={self.steps}; set --steps={explicit}, "
                             f"or leave a stage's steps at 0 so it takes what is left")
        if auto and left < len(auto):
            raise ValueError(f"TrainConfig.steps: expected at least one step for each of the {len(auto)} "
                             f"stages without explicit steps, got {left} step(s) left for them")
        total_w = sum(s.weight for s in auto)
        out, given, seen = [], 0, 0.0
        for s in self.stages:
            if s.steps:
                out.append(s.steps)
                continue
            seen += s.weight
            upto = round(left * seen / total_w)  # cumulative rounding: shares add up exactly to ``left``
            n = max(1, upto - given)
            out.append(n)
            given += n
        if sum(out) != self.steps:  # max(1, .) on a tiny share: take the surplus back from the largest stage
            out[out.index(max(out))] -= sum(out) - self.steps
        return out

    def stage_lr(self, stage: StageConfig) -> float:
        return stage.lr if stage.lr > 0 else self.lr

    # -- JSON round trip -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["policy"] = self.policy.to_dict()
        d["stages"] = [s.to_dict() for s in self.stages]
        d["betas"] = list(self.betas)
        return {"config_version": CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        d = dict(d)
        version = d.pop("config_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"TrainConfig: expected config_version {CONFIG_VERSION}, got {version!r}")
        _check_keys(cls, d, "TrainConfig")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
