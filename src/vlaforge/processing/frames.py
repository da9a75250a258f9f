"""One observation frame checked against a policy config, on numpy alone: what ``Policy.frame_to_batch`` and
the exported ``OnnxPolicy`` both accept, with the same errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from vlaforge.types import EMBODIMENT, OBS_STATE, TASK, image_key


@dataclass(frozen=True)
class Frame:
    embodiment: str
    state: np.ndarray  # float32 (P,), physical units
    task: str
    images: tuple[np.ndarray, ...]  # uint8 (S, S, 3) per camera, in config.cameras order (the robot's names)


def camera_key(config, cam: str, data: Mapping[str, Any], what: str, embodiment: str | None = None) -> str:
    """``observation.images.<cam>``, or a clear error naming the cameras expected and present."""
    key = image_key(cam)
    if key not in data:
        present = sorted(k for k in data if k.startswith("observation.images."))
        cams = config.cameras_of(embodiment) if embodiment is not None else config.cameras
        robot = f" of {embodiment!r}" if embodiment is not None and len(config.embodiments) > 1 else ""
        raise KeyError(f"{key}: missing camera {cam!r}; the policy expects cameras{robot} "
                       f"{list(cams)}, the {what} has {present}")
    return key


def check_embodiments(config, embodiments) -> None:
    for e in set(embodiments):
        if e not in config.embodiments:
            raise KeyError(f"{EMBODIMENT}: unknown embodiment {e!r}; the policy knows "
                           f"{list(config.embodiments)}")


def check_frame(config, obs: Mapping[str, Any]) -> Frame:
    """A frame dict (images uint8 (S, S, 3) per camera, state (P,), the instruction, the embodiment where the
    policy has several) -> a :class:`Frame`, or a clear error naming what was expected and what arrived."""
    emb = obs.get(EMBODIMENT)
    if emb is None:
        if len(config.embodiments) != 1:
            raise KeyError(f"{EMBODIMENT}: missing, and the policy has several embodiments "
                           f"{list(config.embodiments)}")
        emb = next(iter(config.embodiments))
    check_embodiments(config, [emb])
    p = config.embodiments[emb].state_dim
    if OBS_STATE not in obs:
        raise KeyError(f"{OBS_STATE}: missing from the observation; got keys {sorted(obs)}")
    state = np.asarray(obs[OBS_STATE], dtype=np.float32)
    if state.shape != (p,):
        raise ValueError(f"{OBS_STATE}: expected shape ({p},) for embodiment {emb!r}, got {state.shape}")
    task = obs.get(TASK)
    if not isinstance(task, str):
        raise TypeError(f"{TASK}: expected the instruction as a str, got {type(task).__name__}")
    s, images = config.image_size, []
    for cam in config.cameras_of(emb):
        key = camera_key(config, cam, obs, "observation", emb)
        im = np.asarray(obs[key])
        if im.shape != (s, s, 3) or im.dtype != np.uint8:
            raise ValueError(f"{key}: expected uint8 ({s}, {s}, 3), got {im.dtype} {im.shape}")
        images.append(im)
    return Frame(emb, state, task, tuple(images))


def example_frame(config) -> dict[str, Any]:
    """A valid frame of zeros for the config's first embodiment (warm-ups, probes, tests)."""
    emb, spec = next(iter(config.embodiments.items()))
    s = config.image_size
    frame: dict[str, Any] = {image_key(c): np.zeros((s, s, 3), np.uint8) for c in config.cameras_of(emb)}
    return frame | {OBS_STATE: np.zeros(spec.state_dim, np.float32), TASK: "probe", EMBODIMENT: emb}
