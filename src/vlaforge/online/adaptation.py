"""Online adaptation from human corrections: a bounded buffer, short fine-tunes, versions and rollback.

    replay = ChunkDataset(root, policy.config.chunk_size)
    adapter = OnlineAdapter(policy, replay=replay, record_to="corrections")
    adapter.add_correction(obs, chunk)        # (K, D) actions a person gave for this observation, K <= H
    ...                                       # every adapt_every corrections: adapt() (auto_adapt=True)
    adapter.rollback()                        # back to the previous weights, bit-identical
    adapter.close()                           # packs the recorded corrections dataset

What one ``adapt()`` does: ``steps`` AdamW steps on the chosen parameter groups only (default the action
heads; ``("heads", "fusion")`` also moves the transformer), every other parameter frozen. The pieces are the
training engine's (``vlaforge.training.recipe``): the groups train as one stage (``apply_stage``), the
optimizer is ``make_optimizer`` (AdamW; ``weight_decay``, 0 by default, only on weight matrices, as in
training) with torch's default betas ``BETAS``, and gradients are clipped by ``clip_gradients``; the learning
rate is constant (no warm-up: a few steps from trained weights). Each batch mixes
corrections from the buffer with items replayed from the original training data (``replay_fraction`` of the
batch; ``vlaforge.data.collate`` builds it) so that the tasks the policy already solves are not forgotten.
A fresh optimizer per adaptation (no moment carried over: rollback cannot leave a stale optimizer state).
``time_limit_s`` (default 60) stops an adaptation early. ``anchor`` > 0 adds ``anchor * sum ||p - p0||^2``
over the trained parameters, ``p0`` the weights the adapter was given (L2-SP), so a few corrections cannot
pull the policy far from what it was.

Versions: version 0 is the weights the adapter was given; each adaptation appends one. In memory the adapter
keeps copies of the trained groups' tensors (the only ones it changes) for the last ``max_versions``
versions (version 0 always); with ``versions_dir`` each version is also written as
``v0001.safetensors``... ``rollback()`` restores the previous version exactly (``torch.equal``).

Recording (``record_to``): corrections become a dataset in the layout of ``vlaforge collect`` (LeRobot v3:
one action per frame; a frame's chunk is the actions of the frames that follow it in its episode). A
correction is therefore one episode: with ``observations`` (what the robot saw at each of the K steps the
chunk was played over, the first being ``obs``) the episode holds K frames ``(o_k, a_k)`` and
``ChunkDataset`` gives back, at its first frame, exactly the chunk (padded past K). Without them only the
first frame ``(obs, a_0)`` is known and recorded (the later actions have no observation to sit on; the
buffer still trains on the whole chunk).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vlaforge.fsutil import atomic_path
from vlaforge.training.config import StageConfig
from vlaforge.training.recipe import apply_stage, clip_gradients, make_optimizer
from vlaforge.types import ACTION, ACTION_IS_PAD, EMBODIMENT, OBS_STATE, TASK, image_key

#: AdamW betas of an adaptation: torch's defaults (training's recipe uses (0.9, 0.95) over thousands of steps)
BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class AdaptResult:
    version: int  # the version number the policy is at after this adaptation
    steps: int  # optimizer steps taken
    wall_s: float
    loss_first: float  # training loss of the first and last batch
    loss_last: float
    corrections: int  # corrections in the buffer (all of them are candidates for the batches)
    replay_per_batch: int  # replayed items in each batch
    stopped_early: bool  # the time limit ended it
    path: str | None  # the version's safetensors file, when versions_dir is set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Correction:
    images: dict[str, np.ndarray]  # camera key -> uint8 (S, S, 3)
    state: np.ndarray  # (P,) float32
    task: str
    embodiment: str
    action: np.ndarray  # (H, D) float32, the last action repeated past K
    pad: np.ndarray  # (H,) bool, True past K


class OnlineAdapter(contextlib.AbstractContextManager):
    """Human corrections in, adapted weights out. Not thread-safe: adapt while the robot holds or between
    episodes (an async executor must not be predicting during ``adapt``)."""

    def __init__(self, policy: Any, buffer_size: int = 1000, adapt_every: int = 50, replay: Any = None,
                 train_groups: Sequence[str] = ("heads",), lr: float = 1e-4, steps: int = 20,
                 batch_size: int = 16, replay_fraction: float = 0.5,
                 record_to: str | os.PathLike | None = None, versions_dir: str | os.PathLike | None = None,
                 max_versions: int = 10, auto_adapt: bool = True,
                 time_limit_s: float = 60.0, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
                 augment_shift: int = 4, fps: int = 80, seed: int = 0, anchor: float = 0.0):
        for name, v, lo in (("buffer_size", buffer_size, 1), ("adapt_every", adapt_every, 1),
                            ("steps", steps, 1), ("batch_size", batch_size, 1),
                            ("max_versions", max_versions, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"OnlineAdapter.{name}: expected an int >= {lo}, got {v!r}")
        if not 0.0 <= replay_fraction < 1.0:
            raise ValueError(f"OnlineAdapter.replay_fraction: expected a value in [0, 1), "
                             f"got {replay_fraction!r}")
        if not anchor >= 0:
            raise ValueError(f"OnlineAdapter.anchor: expected a value >= 0, got {anchor!r}")
        if not lr > 0 or not time_limit_s > 0:
            raise ValueError(f"OnlineAdapter: expected lr > 0 and time_limit_s > 0, "
                             f"got {lr!r} and {time_limit_s!r}")
        groups = policy.parameter_groups()
        train_groups = (train_groups,) if isinstance(train_groups, str) else tuple(train_groups)
        unknown = [g for g in train_groups if g not in groups]
        if not train_groups or unknown or len(set(train_groups)) != len(train_groups):
            raise ValueError(f"OnlineAdapter.train_groups: expected a non-empty subset of {sorted(groups)}, "
                             f"got {list(train_groups)}")
        empty = [g for g in train_groups if not groups[g]]
        if empty:
            raise ValueError(f"OnlineAdapter.train_groups: group(s) {empty} have no trainable parameters in "
                             f"this policy (a frozen pretrained encoder?)")
        self.policy = policy
        self.chunk_size = int(policy.config.chunk_size)
        self.camera_keys = [image_key(c) for c in policy.config.cameras]
        if replay is not None:
            if len(replay) == 0:
                raise ValueError("OnlineAdapter.replay: expected a dataset with items, got an empty one")
            h = getattr(replay, "chunk_size", self.chunk_size)
            if h != self.chunk_size:
                raise ValueError(f"OnlineAdapter.replay: expected chunk_size {self.chunk_size} "
                                 f"(the policy's), got {h}")
            have = getattr(replay, "camera_keys", None)
            missing = [k for k in self.camera_keys if have is not None and k not in have]
            if missing:
                raise ValueError(f"OnlineAdapter.replay: the policy reads cameras {self.camera_keys}, "
                                 f"the replay dataset has {list(have)}")
        self.replay = replay
        self.train_groups = train_groups
        # the training stage an adaptation runs: these groups train, nothing else (fresh or not)
        self._stage = StageConfig(name="adapt", train=train_groups, train_fresh=False)
        # the only tensors adapt() changes
        self._params = [(n, p) for g in train_groups for n, p in groups[g]]
        self.buffer: deque[_Correction] = deque(maxlen=buffer_size)
        self.adapt_every, self.lr, self.steps, self.batch_size = adapt_every, float(lr), steps, batch_size
        self.replay_fraction, self.weight_decay = float(replay_fraction), float(weight_decay)
        self.grad_clip, self.time_limit_s = grad_clip, float(time_limit_s)
        self.auto_adapt, self.augment_shift = bool(auto_adapt), int(augment_shift)
        self.max_versions = max_versions
        self.anchor = float(anchor)  # L2-SP: pull toward the weights given to the adapter (version 0)
        self.versions_dir = None if versions_dir is None else Path(versions_dir)
        self.record_to = None if record_to is None else Path(record_to)
        self.fps = int(fps)
        self._recorder = None
        self._rng = np.random.default_rng(seed)
        self.corrections_total = 0
        self.pending = 0  # corrections since the last adaptation
        self.history: list[AdaptResult] = []
        self._versions: list[tuple[int, dict[str, Any]]] = [(0, self._snapshot())]
        self._next_version = 1

    # -- corrections --------------------------------------------------------------------------------
    def add_correction(self, obs: Mapping[str, Any], action_chunk: Any,
                       observations: Sequence[Mapping[str, Any]] | None = None,
                       task_name: str | None = None) -> AdaptResult | None:
        """Store a person's chunk (K, D), 1 <= K <= H, for ``obs``; adapts when due (``auto_adapt``).

        ``observations``: the K frames seen while the chunk was played (``observations[0]`` is ``obs``),
        used only for the recorded dataset. ``task_name`` names the recorded episode's task (default: the
        instruction)."""
        batch = self.policy.frame_to_batch(obs)  # validates cameras, state shape, task, embodiment
        emb = batch[EMBODIMENT][0]
        d = self.policy.config.embodiments[emb].action_dim
        chunk = np.asarray(action_chunk)
        if chunk.ndim != 2 or chunk.shape[1] != d or not 1 <= chunk.shape[0] <= self.chunk_size:
            raise ValueError(f"add_correction: action_chunk: expected shape (K, {d}) with 1 <= K <= "
                             f"{self.chunk_size} (embodiment {emb!r}, chunk_size {self.chunk_size}), "
                             f"got {chunk.shape}")
        if chunk.dtype.kind not in "fiu":
            raise TypeError(f"add_correction: action_chunk: expected numbers, got dtype {chunk.dtype}")
        if not np.all(np.isfinite(chunk)):
            bad = sorted({int(r) for r in np.argwhere(~np.isfinite(chunk))[:, 0]})
            raise ValueError(f"add_correction: action_chunk: expected finite values, "
                             f"got NaN/Inf in rows {bad}")
        k = chunk.shape[0]
        if observations is not None and len(observations) != k:
            raise ValueError(f"add_correction: observations: expected one frame per action ({k}), "
                             f"got {len(observations)}")
        tail = np.repeat(chunk[-1:], self.chunk_size - k, 0)  # the last action repeated, as ChunkDataset does
        full = np.concatenate([chunk, tail]).astype(np.float32)  # (H, D)
        pad = np.arange(self.chunk_size) >= k  # (H,)
        images = {key: np.array(obs[key], dtype=np.uint8, copy=True) for key in self.camera_keys}
        state = np.array(obs[OBS_STATE], dtype=np.float32, copy=True)
        self.buffer.append(_Correction(images, state, str(obs[TASK]), emb, full, pad))
        if self.record_to is not None:
            self._record(obs, chunk.astype(np.float32), observations, emb, task_name)
        self.corrections_total += 1
        self.pending += 1
        if self.auto_adapt and self.due:
            return self.adapt()
        return None

    @property
    def due(self) -> bool:
        return self.pending >= self.adapt_every

    def _record(self, obs, chunk, observations, emb, task_name) -> None:
        if self._recorder is None:
            from vlaforge.data.recorder import DatasetRecorder

            spec = self.policy.config.embodiments[emb]
            resume = (self.record_to / "meta" / "info.json").exists()
            self._recorder = DatasetRecorder(self.record_to, fps=self.fps, cameras=self.policy.config.cameras,
                                             image_size=self.policy.config.image_size, robot_type=emb,
                                             state_dim=spec.state_dim, action_dim=spec.action_dim,
                                             resume=resume)
        frames = list(observations) if observations is not None else [obs]
        for f, a in zip(frames, chunk):
            frame = {key: f[key] for key in self.camera_keys}
            frame[OBS_STATE] = f[OBS_STATE]
            frame[ACTION] = a
            self._recorder.add_frame(frame)
        self._recorder.save_episode(task=task_name or str(obs[TASK]), instruction=str(obs[TASK]))

    # -- adaptation ---------------------------------------------------------------------------------
    def _correction_item(self, c: _Correction) -> dict[str, Any]:
        import torch

        item: dict[str, Any] = {}
        for key, img in c.images.items():
            if self.augment_shift > 0:
                dy, dx = self._rng.integers(-self.augment_shift, self.augment_shift + 1, size=2)
                h, w = img.shape[:2]
                img = img[np.clip(np.arange(h) + dy, 0, h - 1)][:, np.clip(np.arange(w) + dx, 0, w - 1)]
            item[key] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        item[OBS_STATE] = torch.from_numpy(c.state)
        item[ACTION] = torch.from_numpy(c.action)
        item[ACTION_IS_PAD] = torch.from_numpy(c.pad)
        item[TASK] = c.task
        item[EMBODIMENT] = c.embodiment
        return item

    def _replay_item(self, i: int) -> dict[str, Any]:
        it = self.replay[i]
        keys = [*self.camera_keys, OBS_STATE, ACTION, ACTION_IS_PAD, TASK, EMBODIMENT]
        return {k: it[k] for k in keys if k in it}

    def _batch(self) -> tuple[dict[str, Any], int]:
        from vlaforge.data import collate

        n_rep = int(round(self.batch_size * self.replay_fraction)) if self.replay is not None else 0
        n_cor = self.batch_size - n_rep
        idx = self._rng.integers(0, len(self.buffer), size=n_cor)
        items = [self._correction_item(self.buffer[int(i)]) for i in idx]
        if n_rep:
            items += [self._replay_item(int(i)) for i in self._rng.integers(0, len(self.replay), size=n_rep)]
        return collate(items), n_rep

    def adapt(self, steps: int | None = None) -> AdaptResult:
        """Fine-tune the chosen groups on corrections + replay for ``steps`` steps; a new version."""
        if not self.buffer:
            raise RuntimeError("adapt: no corrections in the buffer yet (add_correction first)")
        steps = self.steps if steps is None else int(steps)
        policy = self.policy
        flags = {n: p.requires_grad for n, p in policy.named_parameters()}
        was_training = policy.training
        t0 = time.perf_counter()
        losses: list[float] = []
        n_rep, stopped = 0, False
        try:
            apply_stage(policy, self._stage)  # only the chosen groups require grad
            opt = make_optimizer(policy, self.lr, self.weight_decay, BETAS)  # over exactly those parameters
            trainable = [p for _, p in self._params]
            policy.train()
            for _ in range(steps):
                if time.perf_counter() - t0 > self.time_limit_s:
                    stopped = True
                    break
                batch, n_rep = self._batch()
                loss, _ = policy.compute_loss(batch)
                if self.anchor > 0:  # sum of squared distances to the deployed (version 0) weights
                    base = self._versions[0][1]
                    loss = loss + self.anchor * sum(((p - base[n]) ** 2).sum() for n, p in self._params)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip_gradients(trainable, self.grad_clip)  # None: no limit
                opt.step()
                losses.append(float(loss.detach()))
        finally:
            for n, p in policy.named_parameters():
                p.requires_grad_(flags[n])
            policy.train(was_training)
        version = self._next_version
        self._next_version += 1
        snap = self._snapshot()
        self._versions.append((version, snap))
        while len(self._versions) > self.max_versions + 1:
            self._versions.pop(1)  # version 0 (the base) always stays
        path = self._write_version(version, snap) if self.versions_dir is not None else None
        self.pending = 0
        nan = float("nan")
        result = AdaptResult(version, len(losses), time.perf_counter() - t0, losses[0] if losses else nan,
                             losses[-1] if losses else nan, len(self.buffer), n_rep, stopped,
                             None if path is None else str(path))
        self.history.append(result)
        return result

    # -- versions -----------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The version the policy's adapted groups are at (0 = the weights given to the adapter)."""
        return self._versions[-1][0]

    @property
    def versions(self) -> list[int]:
        """Version numbers held in memory, oldest first."""
        return [v for v, _ in self._versions]

    def _snapshot(self) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in self._params}

    def _restore(self, snap: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for n, p in self._params:
                p.copy_(snap[n])

    def rollback(self) -> int:
        """Drop the current version and restore the previous one exactly. Returns the version now active."""
        if len(self._versions) < 2:
            raise RuntimeError(f"rollback: nothing to roll back to: the policy is at version {self.version} "
                               f"and no earlier version is held (max_versions={self.max_versions})")
        self._versions.pop()
        self._restore(self._versions[-1][1])
        return self.version

    def _write_version(self, version: int, snap: Mapping[str, Any]) -> Path:
        from safetensors.torch import save_file

        path = self.versions_dir / f"v{version:04d}.safetensors"
        meta = {"version": str(version), "train_groups": json.dumps(list(self.train_groups)),
                "corrections_total": str(self.corrections_total)}
        with atomic_path(path) as tmp:
            save_file({n: t.detach().cpu().contiguous() for n, t in snap.items()}, str(tmp), metadata=meta)
        return path

    def load_version(self, path: str | os.PathLike) -> int:
        """Load a version file written by an adapter with the same policy config and train_groups; it
        becomes a new version. Returns its number."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        want = {n for n, _ in self._params}
        if set(tensors) != want:
            raise ValueError(f"{path}: expected the tensors of groups {list(self.train_groups)} "
                             f"({len(want)} tensors), got {len(tensors)} with different names")
        for n, p in self._params:
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(f"{path}: tensor {n!r}: expected shape {tuple(p.shape)}, "
                                 f"got {tuple(tensors[n].shape)}")
        self._restore(tensors)
        version = self._next_version
        self._next_version += 1
        self._versions.append((version, self._snapshot()))
        return version

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Pack the recorded corrections dataset (if any) and release it."""
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def __exit__(self, *exc: Any) -> None:
        self.close()
