"""Typed, frozen configuration for the policy.

Everything a checkpoint needs to rebuild its model lives here and is saved as ``config.json``.
Presets (``vlaforge.presets``) are named instances of these dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

HEADS = ("regression", "tokens", "flow", "diffusion")
LANGUAGE_ENCODERS = ("minilm", "hash")
NORMALIZATIONS = ("mean_std", "quantile")
#: the units a policy's parameters come in (``Policy.parameter_groups()`` keys): what a training stage
#: freezes and unfreezes
PARAMETER_GROUPS = ("vision", "language", "state", "fusion", "heads")


@dataclass(frozen=True)
class EmbodimentSpec:
    """One robot: the size of its state vector and of its action vector, and of the environment state its data
    records (``observation.environment_state``; 0: none), the target of the auxiliary loss."""

    state_dim: int
    action_dim: int
    env_state_dim: int = 0

    def __post_init__(self) -> None:
        for name, lowest in (("state_dim", 1), ("action_dim", 1), ("env_state_dim", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lowest:
                raise ValueError(f"EmbodimentSpec.{name}: expected a {'positive' if lowest else 'non-negative'} int, "
                                 f"got {v!r}")


@dataclass(frozen=True)
class PolicyConfig:
    """The model: encoders, fusion transformer, action head, normalization."""

    head: Literal["regression", "tokens", "flow", "diffusion"] = "flow"
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
    vision_keypoints: int = 0  # spatial-softmax keypoints per camera, given to fusion as one more token; 0: none
    vision_coords: bool = False  # CoordConv: pixel coordinates as two extra input channels (absolute position)
    vision_flat_token: bool = False  # one more token per camera: the pooled feature grid flattened (position-aware)
    # language
    language_tokens: int = 2  # the sentence embedding is projected to this many tokens
    hash_buckets: int = 4096
    # head-specific settings
    num_bins: int = 256
    flow_steps: int = 10
    diffusion_train_steps: int = 100
    diffusion_sample_steps: int = 10
    head_width: int = 256  # width of the denoiser of the flow / diffusion heads
    head_depth: int = 2  # transformer layers of that denoiser
    # auxiliary loss: predict the (normalized) environment state, object and goal positions, from the fusion
    # readouts, weighted by this; 0: off. Training only (the policy never reads the environment state): it makes
    # the image features say where the objects are, which the action loss alone learns slowly.
    aux_env_weight: float = 0.0
    # with aux_env_weight > 0: predict the environment state before fusion instead, from the image tokens
    # (attention pooling), and give the prediction to the fusion as one more token, next to the state token:
    # the policy then sees explicit object coordinates beside the hand's own
    env_token: bool = False
    # normalization
    normalization: Literal["mean_std", "quantile"] = "quantile"
    # 0: a constant (zero-spread) dimension is centred with scale 1 and reported; > 0: every spread floored here
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
        self.validate()

    def validate(self) -> None:
        def bad(field_name: str, expected: str) -> ValueError:
            return ValueError(f"PolicyConfig.{field_name}: expected {expected}, got {getattr(self, field_name)!r}")

        if self.head not in HEADS:
            raise bad("head", f"one of {HEADS}")
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
        for name in ("chunk_size", "d_model", "depth", "heads", "num_bins", "flow_steps",
                     "diffusion_train_steps", "diffusion_sample_steps", "language_tokens", "head_width",
                     "head_depth", "vision_max_grid", "hash_buckets"):
            if int(getattr(self, name)) <= 0:
                raise bad(name, "a positive int")
        if self.d_model % self.heads:
            raise bad("d_model", f"a multiple of heads={self.heads}")
        if self.diffusion_sample_steps > self.diffusion_train_steps:
            raise bad("diffusion_sample_steps", f"at most diffusion_train_steps={self.diffusion_train_steps}")
        if self.vision_keypoints < 0:
            raise bad("vision_keypoints", "an int >= 0")
        if self.min_spread < 0:
            raise bad("min_spread", "a non-negative float")
        if not self.aux_env_weight >= 0:
            raise bad("aux_env_weight", "a non-negative float")
        if not self.vision_channels:
            raise bad("vision_channels", "at least one stage")

    # -- JSON round trip ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"] = list(self.cameras)
        d["vision_channels"] = list(self.vision_channels)
        d["embodiments"] = {k: dataclasses.asdict(v) for k, v in self.embodiments.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"PolicyConfig: unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "PolicyConfig":
        return dataclasses.replace(self, **changes)
