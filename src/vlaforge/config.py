"""Typed, frozen configuration for the policy, and the registry of action heads.

Everything a checkpoint needs to rebuild its model lives here and is saved as ``config.json``.
Presets (``vlaforge.presets``) are named instances of these dataclasses.

``HEADS`` is where an action head's name is spelled, once: ``register_head(HeadSpec(...))`` below. Config
validation, the ``--policy.head`` choices and help, ``make_head``, the confidence method ``auto`` picks, tests
and benchmarks all read it. No torch here: the head's class is an import path, loaded when a policy is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from vlaforge.names import Registry, unknown_name


def _positive_ints(obj: Any, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{type(obj).__name__}.{name}: expected a positive int, got {v!r}")


# -- each head's own settings (PolicyConfig.head_settings.<head>); a head without settings has none ----------


@dataclass(frozen=True)
class TokensSettings:
    num_bins: int = 256  # Bins per action dimension of the tokens head (also --policy.num_bins).

    def __post_init__(self) -> None:
        _positive_ints(self, "num_bins")


@dataclass(frozen=True)
class FlowSettings:
    steps: int = 10  # Euler steps of the flow head's sampler (also --policy.flow_steps).

    def __post_init__(self) -> None:
        _positive_ints(self, "steps")


@dataclass(frozen=True)
class DiffusionSettings:
    train_steps: int = 100  # Noise levels of the diffusion head (also --policy.diffusion_train_steps).
    sample_steps: int = 10  # DDIM steps of the diffusion sampler (also --policy.diffusion_sample_steps).

    def __post_init__(self) -> None:
        _positive_ints(self, "train_steps", "sample_steps")
        if self.sample_steps > self.train_steps:
            raise ValueError(f"DiffusionSettings.sample_steps: expected at most train_steps="
                             f"{self.train_steps}, got {self.sample_steps}")


@dataclass(frozen=True)
class HeadSpec:
    """An action head as the registry knows it, without importing it (tests/test_contracts.py checks each
    entry against its class and runs the head contract over every one)."""

    name: str
    cls: str  # "vlaforge.models.heads.<file>:<Class>", an ActionHead subclass whose ``name`` is this name
    doc: str  # one line for --help: what it predicts, how it trains
    # the ConfidenceEstimator methods that apply to this head (vlaforge.online.confidence); "auto": the first
    confidence: tuple[str, ...]
    settings: type | None = None  # its frozen settings dataclass: PolicyConfig.head_settings.<name>
    # format-1 PolicyConfig fields (still read from old checkpoints and the command line) -> settings field
    flat: Mapping[str, str] = field(default_factory=dict)


HEADS: Registry[HeadSpec] = Registry("head", known_label="Known heads")


def register_head(spec: HeadSpec) -> HeadSpec:
    """Add a head: its file in ``vlaforge/models/heads/`` plus one call here (before ``PolicyConfig``, whose
    ``head`` choices and ``head_settings`` are made from the registry)."""
    return HEADS.add(spec.name, spec, spec.doc)


register_head(HeadSpec("regression", "vlaforge.models.heads.regression:RegressionHead",
                       "L1 regression of the chunk, deterministic", confidence=("tta",)))
register_head(HeadSpec("tokens", "vlaforge.models.heads.tokens:TokenHead",
                       "num_bins uniform bins per dimension, cross-entropy", confidence=("entropy", "tta"),
                       settings=TokensSettings, flat={"num_bins": "num_bins"}))
register_head(HeadSpec("flow", "vlaforge.models.heads.flow:FlowHead",
                       "flow matching, Euler sampling steps", confidence=("samples", "tta"),
                       settings=FlowSettings, flat={"flow_steps": "steps"}))
register_head(HeadSpec("diffusion", "vlaforge.models.heads.diffusion:DiffusionHead",
                       "DDPM training, DDIM sampling", confidence=("samples", "tta"),
                       settings=DiffusionSettings, flat={"diffusion_train_steps": "train_steps",
                                                         "diffusion_sample_steps": "sample_steps"}))


def head_names() -> tuple[str, ...]:
    """The registered heads in the order registered."""
    return tuple(HEADS.names(sort=False))


#: ``PolicyConfig.head``'s type, made from the registry: the command line parses and lists its choices
HeadName = Literal[head_names()]  # type: ignore[valid-type]
HEAD_HELP = "Action head. " + "; ".join(f"{n}: {HEADS.doc(n)}" for n in head_names()) + "."
#: every head's settings, a field per head that has some (``head_settings.flow.steps``), from the registry
HeadSettings = dataclasses.make_dataclass(
    "HeadSettings", [(n, HEADS.get(n).settings, field(default_factory=HEADS.get(n).settings))
                     for n in head_names() if HEADS.get(n).settings is not None], frozen=True)
HeadSettings.__module__, HeadSettings.__doc__ = __name__, "Each head's own settings, by head name."
#: format-1 flat field -> (head, settings field): ``num_bins`` -> ("tokens", "num_bins")
FLAT_HEAD_FIELDS: dict[str, tuple[str, str]] = {
    old: (n, new) for n in head_names() for old, new in HEADS.get(n).flat.items()}

LANGUAGE_ENCODERS = ("minilm", "hash")
NORMALIZATIONS = ("mean_std", "quantile")
#: the units a policy's parameters come in (``Policy.parameter_groups()`` keys): what a training stage
#: freezes and unfreezes
PARAMETER_GROUPS = ("vision", "language", "state", "fusion", "heads")


@dataclass(frozen=True)
class EmbodimentSpec:
    """One robot: the size of its state vector and of its action vector, and of the environment state its data
    records (``observation.environment_state``; 0: none), the target of the auxiliary loss.

    ``cameras``: this robot's own camera names, one per camera of the policy (``PolicyConfig.cameras``, in
    that order), where they differ: a Meta-World Sawyer's ``corner`` and a robosuite Panda's ``agentview``
    then feed the same camera input. Empty: the policy's names."""

    state_dim: int
    action_dim: int
    env_state_dim: int = 0
    cameras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        for name, lowest in (("state_dim", 1), ("action_dim", 1), ("env_state_dim", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lowest:
                raise ValueError(f"EmbodimentSpec.{name}: expected a "
                                 f"{'positive' if lowest else 'non-negative'} int, got {v!r}")


@dataclass(frozen=True)
class PolicyConfig:
    """The model: encoders, fusion transformer, action head, normalization."""

    head: HeadName = field(default="flow", metadata={"help": HEAD_HELP})
    chunk_size: int = 16
    image_size: int = 96
    cameras: tuple[str, ...] = ("corner",)
    language_encoder: Literal["minilm", "hash"] = "minilm"
    embodiments: Mapping[str, EmbodimentSpec] = field(
        default_factory=lambda: {"sawyer": EmbodimentSpec(state_dim=4, action_dim=4)}
    )
    # fusion transformer
    d_model: int = 256
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # vision: channels of the ResNet stages; the image is downsampled 2x by the stem and by each stage
    vision_channels: tuple[int, ...] = (32, 64, 128, 256)
    vision_max_grid: int = 6  # image tokens per camera: at most vision_max_grid**2 (adaptive pooling)
    # spatial-softmax keypoints per camera, given to fusion as one more token; 0: none
    vision_keypoints: int = 0
    # the vision stage whose feature map the keypoints read: 0 the stem's (image_size / 2), 1 the first
    # block's (/ 4), ...; -1 the last. Earlier maps keep the detail of small targets (issue 18)
    vision_keypoint_stage: int = -1
    # CoordConv: pixel coordinates as two extra input channels (absolute position)
    vision_coords: bool = False
    # one more token per camera: the pooled feature grid flattened (position-aware)
    vision_flat_token: bool = False
    # language
    language_tokens: int = 2  # the sentence embedding is projected to this many tokens
    hash_buckets: int = 4096
    # each head's own settings (tokens: num_bins; flow: steps; diffusion: train_steps, sample_steps)
    head_settings: HeadSettings = field(default_factory=HeadSettings)
    head_width: int = 256  # width of the denoiser of the flow / diffusion heads
    head_depth: int = 2  # transformer layers of that denoiser
    # auxiliary loss: predict the (normalized) environment state, object and goal positions, from the fusion
    # readouts, weighted by this; 0: off. Training only (the policy never reads the environment state): it
    # makes the image features say where the objects are, which the action loss alone learns slowly.
    aux_env_weight: float = 0.0
    # with aux_env_weight > 0: predict the environment state before fusion instead, from the image tokens
    # (attention pooling), and give the prediction to the fusion as one more token, next to the state token:
    # the policy then sees explicit object coordinates beside the hand's own
    env_token: bool = False
    # with aux_env_weight > 0: standardize that target per task (its own mean and spread), so the loss asks
    # where the objects and the goal are among the task's layouts; a global scale is dominated by the
    # differences between tasks, and the head learns per-task means (issue 18, benchmarks/small_targets.py)
    aux_env_per_task: bool = False
    # normalization
    normalization: Literal["mean_std", "quantile"] = "quantile"
    # 0: a constant (zero-spread) dimension is centred with scale 1 and reported; > 0: every spread floored
    # here
    min_spread: float = 0.0

    def __post_init__(self) -> None:
        # accept lists / dicts from JSON and CLI, store canonical immutable forms
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "vision_channels", tuple(int(c) for c in self.vision_channels))
        embs = {}
        for name, spec in dict(self.embodiments).items():
            if isinstance(spec, Mapping):
                spec = EmbodimentSpec(**spec)
            if not isinstance(spec, EmbodimentSpec):
                raise TypeError(f"embodiments[{name!r}]: expected EmbodimentSpec, got {type(spec).__name__}")
            embs[str(name)] = spec
        object.__setattr__(self, "embodiments", embs)
        object.__setattr__(self, "head_settings", _head_settings(self.head_settings))
        self.validate()

    def validate(self) -> None:
        def bad(field_name: str, expected: str) -> ValueError:
            return ValueError(f"PolicyConfig.{field_name}: expected {expected}, "
                              f"got {getattr(self, field_name)!r}")

        if self.head not in HEADS:
            raise bad("head", f"one of {head_names()}")
        if self.language_encoder not in LANGUAGE_ENCODERS:
            raise bad("language_encoder", f"one of {LANGUAGE_ENCODERS}")
        if self.normalization not in NORMALIZATIONS:
            raise bad("normalization", f"one of {NORMALIZATIONS}")
        if not 64 <= self.image_size <= 224:
            raise bad("image_size", "an int in [64, 224]")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise bad("cameras", "a non-empty list of distinct camera names")
        if not self.embodiments:
            raise bad("embodiments", "at least one embodiment")
        for name, spec in self.embodiments.items():
            if spec.cameras and (len(spec.cameras) != len(self.cameras) or len(set(spec.cameras)) < len(
                    spec.cameras)):
                raise ValueError(f"PolicyConfig.embodiments[{name!r}].cameras: expected {len(self.cameras)} "
                                 f"distinct names (one per policy camera {list(self.cameras)}), "
                                 f"got {list(spec.cameras)}")
        for name in ("chunk_size", "d_model", "depth", "heads", "language_tokens", "head_width",
                     "head_depth", "vision_max_grid", "hash_buckets"):
            if int(getattr(self, name)) <= 0:
                raise bad(name, "a positive int")
        if self.d_model % self.heads:
            raise bad("d_model", f"a multiple of heads={self.heads}")
        if self.vision_keypoints < 0:
            raise bad("vision_keypoints", "an int >= 0")
        if self.min_spread < 0:
            raise bad("min_spread", "a non-negative float")
        n_stages = len(self.vision_channels)
        if not -n_stages <= self.vision_keypoint_stage < n_stages:
            raise bad("vision_keypoint_stage", f"an index into the {n_stages} vision stages "
                                               f"({-n_stages} to {n_stages - 1})")
        if not self.aux_env_weight >= 0:
            raise bad("aux_env_weight", "a non-negative float")
        if not self.vision_channels:
            raise bad("vision_channels", "at least one stage")

    def cameras_of(self, embodiment: str) -> tuple[str, ...]:
        """The camera names ``embodiment``'s observations use, in the order of ``cameras``."""
        return self.embodiments[embodiment].cameras or self.cameras

    def settings(self, head: str | None = None) -> Any:
        """The settings of ``head`` (default: this config's head); None for a head that has none."""
        return getattr(self.head_settings, head or self.head, None)

    @staticmethod
    def field_aliases() -> dict[str, str]:
        """Format-1 names the command line still takes: ``num_bins`` -> ``head_settings.tokens.num_bins``."""
        return {old: f"head_settings.{head}.{new}" for old, (head, new) in FLAT_HEAD_FIELDS.items()}

    # -- JSON round trip ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["vision_channels"] = list(self.vision_channels)
        d["embodiments"] = {k: _embodiment_dict(v) for k, v in self.embodiments.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyConfig":
        """From ``to_dict``'s JSON; format 1 (head settings as flat fields: ``num_bins``, ``flow_steps``, ...)
        is read too."""
        d = dict(d)
        flat = {k: d.pop(k) for k in list(d) if k in FLAT_HEAD_FIELDS}
        if flat:
            nested = {h: dict(v) for h, v in dict(d.get("head_settings") or {}).items()}
            for old, value in flat.items():
                head, new = FLAT_HEAD_FIELDS[old]
                nested.setdefault(head, {})[new] = value
            d["head_settings"] = nested
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"PolicyConfig: unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "PolicyConfig":
        return dataclasses.replace(self, **changes)


def _embodiment_dict(spec: EmbodimentSpec) -> dict[str, Any]:
    """JSON of an embodiment; ``cameras`` only where the robot has its own names (so a checkpoint of a policy
    without them reads as it did before they existed)."""
    d = dataclasses.asdict(spec)
    if spec.cameras:
        d["cameras"] = list(spec.cameras)
    else:
        del d["cameras"]
    return d


def _head_settings(value: Any) -> Any:
    """``HeadSettings`` from itself or from JSON ``{head: {field: value}}`` (heads left out keep defaults)."""
    if isinstance(value, HeadSettings):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"PolicyConfig.head_settings: expected HeadSettings or a mapping, "
                        f"got {type(value).__name__}")
    known = [f.name for f in dataclasses.fields(HeadSettings)]
    out = {}
    for head, settings in value.items():
        if head not in known:
            raise unknown_name("head with settings", head, known, known_label="Heads with settings")
        cls = HEADS.get(head).settings
        if isinstance(settings, Mapping):
            names = [f.name for f in dataclasses.fields(cls)]
            bad = sorted(set(settings) - set(names))
            if bad:
                raise ValueError(f"PolicyConfig.head_settings.{head}: unknown fields {bad}; "
                                 f"known fields are {names}")
            settings = cls(**settings)
        if not isinstance(settings, cls):
            raise TypeError(f"PolicyConfig.head_settings.{head}: expected {cls.__name__}, got "
                            f"{type(settings).__name__}")
        out[head] = settings
    return HeadSettings(**out)
