"""What every MuJoCo simulator wrapper here shares: checking an env's settings and seeds, a cheap offscreen
camera renderer, and saving / restoring MuJoCo's state exactly (``MetaWorldEnv``, ``RobosuiteEnv``).

MuJoCo is imported where used: importing this module costs nothing.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

MAX_SEED = 2**32  # np.random.seed accepts [0, 2**32)
TEXT_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;:'!?-()"


def check_settings(cameras: Any, known: tuple[str, ...] | list[str], image_size: Any, max_steps: Any,
                   render_mode: Any, instruction: Any, where: str = "") -> tuple[str, ...]:
    """The env's cameras as a tuple, after checking every constructor setting; a ValueError naming what was
    expected otherwise (``where``: the task, for the camera message)."""
    cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)
    for cam in cameras:
        if cam not in known:
            raise ValueError(f"unknown camera {cam!r}{f' for {where}' if where else ''}; expected one of "
                             f"{', '.join(known)}")
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras: expected distinct names, got {cameras}")
    if not isinstance(image_size, numbers.Integral) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size: expected an int in [8, 1024], got {image_size!r}")
    if not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ValueError(f"max_steps: expected an int >= 1, got {max_steps!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction: expected a non-empty string, got {instruction!r}")
    return cameras


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed: expected an int in [0, 2**32), got {seed!r}")
    return int(seed)


def text_charset(instruction: str) -> str:
    """The characters a ``spaces.Text`` for ``instruction`` must allow."""
    return TEXT_CHARSET + "".join(sorted(set(instruction) - set(TEXT_CHARSET)))


class CameraRenderer:
    """Frames of a model's named cameras, with shadows and multisampling off (~5x cheaper per frame).
    Construct it before anything renders the model: multisampling is fixed when a renderer is made. The MuJoCo
    renderer itself is created on the first frame. ``cameras``: the names :meth:`frame` accepts;
    ``rotate_180``: those whose image-y axis points down in the world, turned upright by :meth:`frame`."""

    def __init__(self, model: Any, data: Any, image_size: int, cameras: tuple[str, ...] = (),
                 rotate_180: frozenset[str] = frozenset()):
        model.light_castshadow[:] = 0  # shadows cost ~5x the frame time
        model.vis.quality.offsamples = 0  # no multisampling
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        self.model, self.data, self.size = model, data, int(image_size)
        self.cameras, self.rotate_180 = tuple(cameras), frozenset(rotate_180)
        self._renderer = None

    def frame(self, camera: str) -> np.ndarray:
        """One camera's upright frame for the current state, uint8 (S, S, 3), C-contiguous; a ValueError for
        a camera not in ``cameras``."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r}; expected one of {', '.join(self.cameras)}")
        frame = self.render(camera)
        if camera in self.rotate_180:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def render(self, camera: str) -> np.ndarray:
        """uint8 (S, S, 3), as MuJoCo renders it (no flip)."""
        if self._renderer is None:
            import mujoco

            self._renderer = mujoco.Renderer(self.model, height=self.size, width=self.size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class RendersCameras:
    """``render`` / ``render_camera`` of an environment that keeps a :class:`CameraRenderer` in
    ``_renderer``, its camera names in ``cameras`` and gymnasium's ``render_mode``; ``default_camera`` is what
    ``render`` shows when no camera is configured. Put it before ``gym.Env`` among the bases."""

    default_camera = "corner"

    def render(self) -> np.ndarray | None:
        """The first camera's upright frame, uint8 (S, S, 3) (``default_camera`` when none is configured)."""
        if self.render_mode is None:
            return None
        return self.render_camera(self.cameras[0] if self.cameras else self.default_camera)

    def render_camera(self, camera: str) -> np.ndarray:
        """One camera's upright frame for the current state, uint8 (S, S, 3)."""
        return self._renderer.frame(camera)

    def _close_renderer(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None


def get_state(model: Any, data: Any) -> np.ndarray:
    """MuJoCo's integration state (``mjSTATE_INTEGRATION``: time, positions, velocities, controls, the
    solver's warm start, ...): everything the next step depends on."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    return state


def set_state(model: Any, data: Any, state: np.ndarray) -> None:
    """Back to ``state`` (from :func:`get_state`), derived quantities (bodies, sites, cameras) included.
    ``mj_forward`` overwrites the solver's warm start, so the state is set once more after it."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)
    mujoco.mj_setState(model, data, state, spec)
