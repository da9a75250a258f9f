"""From a config and a dataset to the policy that trains: embodiments from the data, weights from ``init``.

- ``resolve_policy``: the policy config and statistics a run trains with. With ``embodiments_from_data`` the
  embodiments (names, state and action sizes) come from the dataset's statistics; with ``init`` the
  checkpoint's embodiments are kept too (with the checkpoint's statistics when the dataset does not have
  them). An embodiment the dataset has is normalized with the dataset's statistics: a fine-tuned head learns
  the new data's range.
- ``load_init``: copy the checkpoint's tensors by name and shape; everything else is "fresh" (see recipe.py).
- ``check_items``: the dataset's cameras, image size and keys fit the policy, with an error that says which
  flag to change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlaforge.config import EmbodimentSpec, PolicyConfig
from vlaforge.training.config import TrainConfig
from vlaforge.types import ACTION, OBS_ENV_STATE, OBS_STATE, image_key

INIT_MIN_FRACTION = 0.5  # fewer matching tensors than this means the configs do not describe the same model


class DataMismatchError(ValueError):
    """The dataset does not fit the policy config (cameras, image size, chunk, embodiments)."""


def read_init(path: str | Path) -> tuple[PolicyConfig, dict]:
    """The policy config and statistics of a checkpoint directory (no weights)."""
    from vlaforge.policy import STATS_FILE, Policy

    path = Path(path)
    return Policy.read_config(path), json.loads((path / STATS_FILE).read_text())


def policy_config_from_checkpoint(path: str | Path) -> PolicyConfig:
    """For ``--init``: the architecture of the checkpoint, which the command line starts from."""
    return read_init(path)[0]


def resolve_policy(config: TrainConfig, data_stats: Mapping[str, Any],
                   embodiment_cameras: Mapping[str, tuple[str, ...]] | None = None
                   ) -> tuple[PolicyConfig, dict]:
    """``embodiment_cameras``: each robot's own camera names where a mixture of datasets renames them to the
    policy's (``vlaforge.data.mixed``); they become ``EmbodimentSpec.cameras``."""
    stats = {e: v for e, v in data_stats.items()}
    own = {e: tuple(c) for e, c in (embodiment_cameras or {}).items() if tuple(c) != config.policy.cameras}
    policy = config.policy
    init_cfg, init_stats = read_init(config.init) if config.init else (None, {})
    if config.embodiments_from_data:
        embs: dict[str, EmbodimentSpec] = {}
        if init_cfg is not None:
            for e, spec in init_cfg.embodiments.items():
                embs[e] = spec
                stats.setdefault(e, init_stats[e])
        for e, s in data_stats.items():
            env_dim = len(s[OBS_ENV_STATE]["mean"]) if policy.aux_env_weight > 0 and OBS_ENV_STATE in s else 0
            embs[e] = EmbodimentSpec(state_dim=len(s[OBS_STATE]["mean"]), action_dim=len(s[ACTION]["mean"]),
                                     env_state_dim=env_dim, cameras=own.get(e, ()))
        policy = policy.replace(embodiments=embs)
    else:
        for e in policy.embodiments:
            if e not in stats and e in init_stats:
                stats[e] = init_stats[e]
    missing = [e for e in policy.embodiments if e not in stats]
    if missing:
        raise DataMismatchError(
            f"policy.embodiments: no statistics for {missing}: the dataset has {sorted(data_stats)}"
            f"{' and the init checkpoint ' + str(sorted(init_stats)) if init_stats else ''}; "
            f"set --embodiments_from_data=true or name embodiments the data has")
    return policy, {e: stats[e] for e in policy.embodiments}


def load_init(policy, path: str | Path) -> tuple[list[str], int, int]:
    """Copy matching tensors from a checkpoint into ``policy``. Returns (fresh parameter names, tensors
    loaded, tensors in the checkpoint)."""
    import torch
    from safetensors.torch import load_file

    from vlaforge.policy import WEIGHTS_FILE, CheckpointError

    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"init: {path}: not a policy checkpoint (missing {WEIGHTS_FILE})")
    tensors = load_file(str(file))
    own = policy.state_dict()
    loaded = set()
    with torch.no_grad():
        for k, v in own.items():
            src = tensors.get(k)
            if src is not None and tuple(src.shape) == tuple(v.shape):
                v.copy_(src.to(v.dtype))
                loaded.add(k)
    if len(loaded) < INIT_MIN_FRACTION * len(tensors):
        raise CheckpointError(
            f"init: {path}: only {len(loaded)} of its {len(tensors)} tensors fit the policy; expected the "
            f"same architecture (on the command line --init starts from the checkpoint's policy config; "
            f"in Python use TrainConfig(policy=policy_config_from_checkpoint(path), ...))")
    fresh = [n for n, _ in policy.named_parameters() if n not in loaded]
    return fresh, len(loaded), len(tensors)


def check_items(item: Mapping[str, Any], policy: PolicyConfig) -> None:
    """Compare one dataset item with what the policy expects (cameras, image size); a clear error
    otherwise."""
    present = sorted(k for k in item if k.startswith("observation.images."))
    for cam in policy.cameras:
        key = image_key(cam)
        if key not in item:
            raise DataMismatchError(f"dataset: camera {cam!r} ({key}) is missing; the data has {present}. "
                             f"Set --policy.cameras to cameras the data has")
        shape = tuple(item[key].shape)
        want = (3, policy.image_size, policy.image_size)
        if shape != want:
            hint = (f"; set --policy.image_size={shape[-1]}" if len(shape) == 3 and shape[1] == shape[2]
                    else "")
            raise DataMismatchError(f"dataset: {key}: expected images of shape {want} for policy.image_size="
                             f"{policy.image_size}, got {shape}{hint}")
    if len(tuple(item[ACTION].shape)) != 2 or item[ACTION].shape[0] != policy.chunk_size:
        raise DataMismatchError(f"dataset: {ACTION}: expected shape ({policy.chunk_size}, D) for "
                                f"policy.chunk_size={policy.chunk_size}, got {tuple(item[ACTION].shape)}")
