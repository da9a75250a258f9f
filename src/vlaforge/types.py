"""Key names and shape conventions shared by every part of vlaforge.

Frame and batch keys follow LeRobot's names so datasets and habits carry over.

| key                            | single frame              | batch                        |
|--------------------------------|---------------------------|------------------------------|
| ``observation.images.<camera>``| uint8 (H, W, 3), upright  | float (B, 3, H, W) in [0, 1] |
| ``observation.state``          | float32 (P,)              | (B, P)                       |
| ``task``                       | str, the instruction      | list[str]                    |
| ``embodiment``                 | str, e.g. ``"sawyer"``    | list[str]                    |
| ``action``                     | float32 (D,); (H, D) chunk| (B, H, D)                    |
| ``action_is_pad``              | bool (H,)                 | bool (B, H)                  |
| ``observation.environment_state`` | float32 (E,), optional | (B, E)                       |

``observation.environment_state`` is what a simulator knows and a camera does not say directly (object and
goal positions). It is recorded when the simulator gives it and used only as an auxiliary training target
(``PolicyConfig.aux_env_weight``); a policy never reads it at inference, so a real robot need not provide it.

Actions and states are in physical units outside the policy; normalization happens inside
``Policy`` with the statistics saved beside the weights.
"""

from __future__ import annotations

OBS_IMAGES_PREFIX = "observation.images."
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
TASK = "task"
EMBODIMENT = "embodiment"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"

#: statistics names, as in LeRobot's meta/stats.json
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
#: the keys a policy normalizes
NORMALIZED_KEYS = (OBS_STATE, ACTION)
#: keys a policy normalizes when its statistics have them
OPTIONAL_NORMALIZED_KEYS = (OBS_ENV_STATE,)


def image_key(camera: str) -> str:
    """``"corner"`` -> ``"observation.images.corner"``."""
    return OBS_IMAGES_PREFIX + camera


def camera_of(key: str) -> str:
    """``"observation.images.corner"`` -> ``"corner"``."""
    if not key.startswith(OBS_IMAGES_PREFIX):
        raise ValueError(f"expected a key starting with {OBS_IMAGES_PREFIX!r}, got {key!r}")
    return key[len(OBS_IMAGES_PREFIX):]
