"""``Policy``: encoders + fusion + one head per embodiment + normalization; save and load.

    policy = Policy(PolicyConfig(...), stats)        # or Policy.load(checkpoint_dir)
    loss, info = policy.compute_loss(batch)          # info: plain floats for logging
    chunk = policy.predict_chunk(obs)                # one frame dict -> np.float32 (H, D), physical units
    chunks = policy.sample_chunks(obs, n=8)          # (n, H, D)
    feats = policy.modality_features(batch)          # {"language", "image", "state"}: pooled pre-fusion
                                                     # (B, F)
    policy.save(dir)

Normalization is explicit and lives here, outside the model's nn code paths; the statistics are saved
beside the weights (``norm_stats.json``). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vlaforge import __version__
from vlaforge.config import PARAMETER_GROUPS, PolicyConfig
from vlaforge.fsutil import atomic_dir, read_json
from vlaforge.models.encoders import (
    LANGUAGE_DIM,
    EnvStateReader,
    StateEncoder,
    VisionCache,
    VisionEncoder,
    make_language_encoder,
    sincos_2d,
)
from vlaforge.models.fusion import Fusion
from vlaforge.models.heads import make_head
from vlaforge.precision import Precision, resolve_bf16
from vlaforge.processing.frames import camera_key, check_embodiments, check_frame, example_frame
from vlaforge.processing.normalize import Normalizer, as_stats, stats_to_json
from vlaforge.types import ACTION, ACTION_IS_PAD, EMBODIMENT, OBS_ENV_STATE, OBS_STATE, TASK, image_key

FORMAT_VERSION = 2
#: 1: the head settings flat in the policy config (num_bins, flow_steps, ...), read into head_settings
READABLE_VERSIONS = (1, 2)
CONFIG_FILE, WEIGHTS_FILE, STATS_FILE = "config.json", "model.safetensors", "norm_stats.json"
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded as it is."""


class Policy(nn.Module):
    def __init__(self, config: PolicyConfig, stats: Mapping[str, Any]):
        super().__init__()
        if not isinstance(config, PolicyConfig):
            raise TypeError(f"Policy: expected a PolicyConfig, got {type(config).__name__}")
        self.config = config
        self._stats = as_stats(stats)
        for emb, spec in config.embodiments.items():
            if not _NAME_OK.match(emb):
                raise ValueError(f"embodiment name: expected letters, digits, '_' or '-', got {emb!r}")
            if emb not in self._stats:
                raise ValueError(f"stats: missing embodiment {emb!r}; stats has {sorted(self._stats)}")
            checks = [(OBS_STATE, spec.state_dim), (ACTION, spec.action_dim)]
            if config.aux_env_weight > 0 and spec.env_state_dim:
                if OBS_ENV_STATE not in self._stats[emb]:
                    raise ValueError(f"stats[{emb!r}]: missing {OBS_ENV_STATE!r}, the auxiliary target "
                                     f"(aux_env_weight={config.aux_env_weight}, "
                                     f"env_state_dim={spec.env_state_dim})")
                checks.append((OBS_ENV_STATE, spec.env_state_dim))
            for key, want in checks:
                got = self._stats[emb][key]["mean"].shape[0]
                if got != want:
                    raise ValueError(f"stats[{emb!r}][{key!r}]: expected {want} dimensions (EmbodimentSpec), "
                                     f"got {got}")
        self._stats = {e: self._stats[e] for e in config.embodiments}
        self.normalizer = Normalizer(self._stats, config.normalization, config.min_spread)
        d = config.d_model

        # encoders (parameter groups: vision, language, state)
        self.vision = VisionEncoder(config.vision_channels, config.vision_max_grid, config.vision_keypoints,
                                    config.vision_coords, config.vision_keypoint_stage)
        self.language = make_language_encoder(config.language_encoder, config.hash_buckets)
        self.state_encoders = nn.ModuleDict({e: StateEncoder(s.state_dim, d)
                                             for e, s in config.embodiments.items()})
        # projections and tokens into the fusion width (parameter group: fusion)
        self.vision_proj = nn.Linear(self.vision.out_channels, d)
        self.keypoint_proj = nn.Linear(2 * config.vision_keypoints, d) if config.vision_keypoints else None
        # a token that knows where things are without attention having to learn it: the pooled grid,
        # flattened
        grid = config.image_size
        for _ in config.vision_channels:  # the stem and every stage halve the size (rounding up)
            grid = (grid + 1) // 2
        grid = min(grid, config.vision_max_grid)
        self.flat_proj = (nn.Linear(self.vision.out_channels * grid * grid, d) if config.vision_flat_token
                          else None)
        self.camera_embed = nn.Parameter(torch.randn(len(config.cameras), d) * 0.02)
        self.language_proj = nn.Sequential(nn.Linear(LANGUAGE_DIM, d), nn.GELU(),
                                           nn.Linear(d, d * config.language_tokens))
        self.embodiment_embed = nn.ParameterDict({e: nn.Parameter(torch.randn(d) * 0.02)
                                                  for e in config.embodiments})
        self.fusion = Fusion(d, config.depth, config.heads, config.chunk_size, config.mlp_ratio,
                             config.dropout)
        # one head per embodiment (parameter group: heads)
        self.heads = nn.ModuleDict()
        for e, s in config.embodiments.items():
            low, high = self.normalizer.normalized_range(self._stats, e, ACTION)
            self.heads[e] = make_head(config.head, d, config.chunk_size, s.action_dim, low, high, config)
        # auxiliary heads (parameter group: heads): fusion readouts -> environment state, a training signal
        # only; with env_token, readers before fusion (parameter group: fusion) whose prediction is also a
        # fusion token
        aux = {e: s.env_state_dim for e, s in config.embodiments.items()
               if config.aux_env_weight > 0 and s.env_state_dim > 0}
        self.aux_heads = nn.ModuleDict({} if config.env_token else {
            e: nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, n)) for e, n in aux.items()})
        self.env_readers = nn.ModuleDict({e: EnvStateReader(d, config.heads, n) for e, n in aux.items()}
                                         if config.env_token else {})
        self._pos_cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        # inference precision (predict_chunk, sample_chunks); fp32 until set_precision chooses
        self.inference_precision = Precision(False, "false", "fp32 until set_precision() chooses")
        self.vision_cache: VisionCache | None = None  # set_vision_cache

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """The normalization statistics, ``{embodiment: {key: {stat: float32 array}}}`` (copies)."""
        return {e: {k: {n: v.copy() for n, v in s.items()} for k, s in ks.items()}
                for e, ks in self._stats.items()}

    @property
    def device(self) -> torch.device:
        return self.camera_embed.device

    @property
    def embodiments(self) -> list[str]:
        return list(self.config.embodiments)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by training unit: vision, language, state, fusion (incl. projections and tokens),
        heads."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in PARAMETER_GROUPS}
        for name, p in self.named_parameters():
            top = name.split(".", 1)[0]
            group = {"vision": "vision", "language": "language", "state_encoders": "state", "heads": "heads",
                     "aux_heads": "heads"}.get(top, "fusion")
            groups[group].append((name, p))
        return groups

    # -- conditioning ----------------------------------------------------------------------------------------
    def _image_pos(self, n_tokens: int, device: torch.device) -> torch.Tensor:
        key = (n_tokens, device)
        if key not in self._pos_cache:
            grid = int(round(n_tokens ** 0.5))
            self._pos_cache[key] = sincos_2d(grid, self.config.d_model).to(device)
        return self._pos_cache[key]

    def _camera_key(self, cam: str, data: Mapping[str, Any], what: str) -> str:
        return camera_key(self.config, cam, data, what)

    def _images(self, batch: Mapping[str, Any], b: int) -> torch.Tensor:
        """All cameras of a batch -> (B, cameras * (N grid tokens + flat token + keypoint token), d)
        tokens."""
        size = self.config.image_size
        ims = []
        for cam in self.config.cameras:
            key = self._camera_key(cam, batch, "batch")
            x = torch.as_tensor(batch[key])
            if x.shape != (b, 3, size, size):
                raise ValueError(f"{key}: expected shape ({b}, 3, {size}, {size}), got {tuple(x.shape)}")
            x = x.to(self.device)
            ims.append(x.float() / 255.0 if x.dtype == torch.uint8 else x.float())
        if self.vision_cache is not None and b == 1 and not torch.is_grad_enabled():
            return self._image_tokens(ims,
                                      self.vision_cache.features(self.vision, zip(self.config.cameras, ims)))
        return self._image_tokens(ims)

    def set_vision_cache(self, threshold: float | None) -> VisionCache | None:
        """Reuse each camera's vision features in single-frame inference while its frame changes by at most
        ``threshold`` (mean absolute pixel difference, 0-255) from the frame they came from; None: off.
        Returns the cache (its ``hits`` / ``misses``)."""
        self.vision_cache = None if threshold is None else VisionCache(threshold)
        return self.vision_cache

    def _image_tokens(self, ims: Sequence[torch.Tensor], features=None) -> torch.Tensor:
        """One (B, 3, S, S) float tensor in [0, 1] per camera (and, from the vision cache, the vision
        encoder's output for them) -> the image tokens (B, cameras * N', d)."""
        b = ims[0].shape[0]
        feats, kp = (features if features is not None
                     else self.vision(torch.cat(list(ims), 0)))  # (cams*B, N, C), (cams*B, 2K)
        n = feats.shape[1]
        tok = self.vision_proj(feats) + self._image_pos(n, feats.device)
        extra = []
        if self.flat_proj is not None:
            extra.append(self.flat_proj(feats.flatten(1)))
        if kp is not None:  # where the keypoints are
            extra.append(self.keypoint_proj(kp.to(tok.dtype)))
        if extra:
            tok = torch.cat([tok, torch.stack(extra, dim=1).to(tok.dtype)], dim=1)
            n += len(extra)
        tok = tok.view(len(ims), b, n, -1) + self.camera_embed[:, None, None, :]  # (cams, B, N, d)
        return tok.permute(1, 0, 2, 3).reshape(b, len(ims) * n, -1)

    def _check_embodiments(self, embodiments: Sequence[str]) -> None:
        check_embodiments(self.config, embodiments)

    def _groups(self, embodiments: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, list[int]] = {}
        for i, e in enumerate(embodiments):
            out.setdefault(e, []).append(i)
        return {e: torch.tensor(ix, device=self.device) for e, ix in out.items()}

    def _tokens(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """A batch -> the fusion's input tokens by modality and the embodiment of each row: ``embodiment``
        (B, 1, d), ``language`` (B, L, d), ``image`` (B, cameras * N, d), ``state`` (B, 1, d)."""
        for key in (OBS_STATE, TASK):
            if key not in batch:
                raise KeyError(f"{key}: missing from the batch; got keys {sorted(batch)}")
        state = torch.as_tensor(batch[OBS_STATE]).to(self.device, torch.float32)
        if state.ndim != 2:
            raise ValueError(f"{OBS_STATE}: expected shape (B, P), got {tuple(state.shape)}")
        b = state.shape[0]
        tasks = batch[TASK]
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if len(tasks) != b:
            raise ValueError(f"{TASK}: expected {b} instructions, got {len(tasks)}")
        embs = batch.get(EMBODIMENT)
        if embs is None:
            if len(self.config.embodiments) != 1:
                raise KeyError(f"{EMBODIMENT}: missing, and the policy has several embodiments "
                               f"{self.embodiments}")
            embs = [self.embodiments[0]] * b
        embs = [embs] * b if isinstance(embs, str) else list(embs)
        self._check_embodiments(embs)

        d = self.config.d_model
        state_tok = torch.empty(b, 1, d, device=self.device)
        emb_tok = torch.empty(b, 1, d, device=self.device)
        groups = self._groups(embs)
        for e, ix in groups.items():
            p = self.config.embodiments[e].state_dim
            s = state[ix]
            if s.shape[1] < p or (s.shape[1] > p and torch.any(s[:, p:] != 0)):
                raise ValueError(f"{OBS_STATE}: expected {p} values for embodiment {e!r}, got {s.shape[1]}")
            st, et = self._robot_tokens(e, self.normalizer.normalize(s[:, :p], e, OBS_STATE))
            state_tok[ix], emb_tok[ix] = st.to(state_tok.dtype), et
        lang_tok = self._language_tokens(self.language(tasks).to(self.device))  # from (B, 384)
        img_tok = self._images(batch, b)
        tokens = {"embodiment": emb_tok, "language": lang_tok, "image": img_tok, "state": state_tok}
        # one more token per row: its predicted environment state (zeros: none for its robot)
        if self.env_readers:
            env_tok = torch.zeros(b, 1, d, device=self.device, dtype=img_tok.dtype)
            for e, ix in groups.items():
                if e in self.env_readers:
                    pred, tok = self.env_readers[e](img_tok[ix])  # (b_e, E), (b_e, 1, d)
                    env_tok[ix] = tok.to(env_tok.dtype)
                    tokens["env_pred/" + e] = pred  # for the auxiliary loss
            tokens["env"] = env_tok
        return tokens, embs

    def _robot_tokens(self, e: str, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized states (b, P) of robot ``e`` -> its state tokens and embodiment tokens, (b, 1, d)
        each."""
        emb = self.embodiment_embed[e].view(1, 1, -1).expand(state.shape[0], 1, -1)
        return self.state_encoders[e](state), emb

    def _language_tokens(self, sentences: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, 384) -> language tokens (B, L, d)."""
        return self.language_proj(sentences).view(sentences.shape[0], self.config.language_tokens, -1)

    def fuse_tensors(self, embodiment: str, images: Sequence[torch.Tensor], state: torch.Tensor,
                     sentences: torch.Tensor) -> torch.Tensor:
        """The traceable core of ``encode`` for rows of one robot, on tensors alone: images (one (B, 3, S, S)
        float tensor in [0, 1] per camera, in ``config.cameras`` order), normalized state (B, P), sentence
        embeddings (B, 384) -> fusion readouts (B, H, d). What ``vlaforge export`` traces; validation,
        normalization and the sentence encoder stay outside it."""
        state_tok, emb_tok = self._robot_tokens(embodiment, state)
        img_tok = self._image_tokens(images)
        tokens = {"embodiment": emb_tok, "language": self._language_tokens(sentences), "image": img_tok,
                  "state": state_tok}
        if self.env_readers:
            tokens["env"] = (self.env_readers[embodiment](img_tok)[1] if embodiment in self.env_readers
                             else torch.zeros_like(state_tok))
        return self._fuse(tokens)

    def _fuse(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        state = tokens["state"] if "env" not in tokens else torch.cat([tokens["state"], tokens["env"]], 1)
        return self.fusion(tokens["embodiment"], tokens["language"], tokens["image"], state)  # (B, H, d)

    @property
    def _extra_image_tokens(self) -> int:
        """Tokens per camera after the grid: the flat-grid token and the keypoint token, when configured."""
        return int(self.flat_proj is not None) + int(self.keypoint_proj is not None)

    def _pooled(self, tokens: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fusion input tokens -> one pre-fusion feature vector per modality and row
        (``modality_features``)."""
        b = tokens["state"].shape[0]
        cams, extra = len(self.config.cameras), self._extra_image_tokens
        img = tokens["image"].view(b, cams, -1, self.config.d_model)  # (B, cams, N + extra, d)
        grid = img[:, :, : img.shape[2] - extra].mean(2, keepdim=True)  # (B, cams, 1, d)
        img = torch.cat([grid, img[:, :, img.shape[2] - extra:]], dim=2)  # (B, cams, 1 + extra, d)
        return {"language": tokens["language"].reshape(b, -1), "image": img.reshape(b, -1),
                "state": tokens["state"].reshape(b, -1)}

    def feature_dims(self) -> dict[str, int]:
        """The width F of each ``modality_features`` entry."""
        d, extra = self.config.d_model, self._extra_image_tokens
        return {"language": self.config.language_tokens * d,
                "image": len(self.config.cameras) * (1 + extra) * d, "state": d}

    def encode(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, list[str]]:
        """A batch -> fusion readouts (B, H, d) and the embodiment of each row."""
        tokens, embs = self._tokens(batch)
        return self._fuse(tokens), embs

    def encode_with_features(self, batch: Mapping[str, Any]
                             ) -> tuple[torch.Tensor, list[str], dict[str, torch.Tensor]]:
        """``encode`` plus, from the same pass, the pre-fusion features of ``modality_features``."""
        tokens, embs = self._tokens(batch)
        return self._fuse(tokens), embs, self._pooled(tokens)

    def modality_features(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A batch -> pooled pre-fusion features per modality, each (B, F) (widths: ``feature_dims()``):

        * ``language``: the projected instruction tokens, flattened (L * d);
        * ``image``: per camera, the mean of its grid tokens followed by its flat-grid and keypoint tokens
          when the config has them, cameras concatenated (cameras * (1 + extra) * d);
        * ``state``: the state token (d), from the row's embodiment's state encoder.

        The fusion transformer does not run. Used by the confidence estimator's density component."""
        return self._pooled(self._tokens(batch)[0])

    # -- training --------------------------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the batch (each embodiment's head on its own rows) and plain-float info for
        logging.

        With ``aux_env_weight`` > 0 and ``observation.environment_state`` in the batch, the loss adds that
        weight times the mean squared error of the auxiliary head's prediction of the normalized environment
        state (info ``aux_env/<embodiment>``); ``loss/<embodiment>`` is the action loss alone."""
        if ACTION not in batch:
            raise KeyError(f"{ACTION}: missing from the batch; got keys {sorted(batch)}")
        tokens, embs = self._tokens(batch)
        cond = self._fuse(tokens)  # (B, H, d)
        actions = torch.as_tensor(batch[ACTION]).to(self.device, torch.float32)
        b, h = cond.shape[:2]
        if actions.ndim != 3 or actions.shape[:2] != (b, h):
            raise ValueError(f"{ACTION}: expected shape ({b}, {h}, D), got {tuple(actions.shape)}")
        pad = batch.get(ACTION_IS_PAD)
        pad = (torch.zeros(b, h, dtype=torch.bool, device=self.device) if pad is None
               else torch.as_tensor(pad).to(self.device, torch.bool))
        if pad.shape != (b, h):
            raise ValueError(f"{ACTION_IS_PAD}: expected shape ({b}, {h}), got {tuple(pad.shape)}")
        total = cond.new_zeros(())
        info: dict[str, float] = {}
        for e, ix in self._groups(embs).items():
            dim = self.config.embodiments[e].action_dim
            a = actions[ix]
            if a.shape[2] < dim:
                raise ValueError(f"{ACTION}: expected {dim} dimensions for embodiment {e!r}, "
                                 f"got {a.shape[2]}")
            a = self.normalizer.normalize(a[..., :dim], e, ACTION)
            loss_e = self.heads[e].loss(cond[ix], a, pad[ix])
            info[f"loss/{e}"] = float(loss_e.detach())
            if (e in self.aux_heads or e in self.env_readers) and OBS_ENV_STATE in batch:
                # made before fusion (env_token), or read from the readouts
                pred = tokens.get("env_pred/" + e)
                pred = self.aux_heads[e](cond[ix].mean(1)) if pred is None else pred  # (b_e, E)
                aux = self._aux_env_loss(pred, torch.as_tensor(batch[OBS_ENV_STATE])[ix.cpu()], e)
                info[f"aux_env/{e}"] = float(aux.detach())
                loss_e = loss_e + self.config.aux_env_weight * aux
            total = total + loss_e * (len(ix) / b)
        info["loss"] = float(total.detach())
        return total, info

    def _aux_env_loss(self, pred: torch.Tensor, env: torch.Tensor, e: str) -> torch.Tensor:
        """Predicted (b, E) and recorded (b, E') environment states -> MSE in normalized units."""
        dim = self.config.embodiments[e].env_state_dim
        env = env.to(self.device, torch.float32)
        if env.ndim != 2 or env.shape[1] < dim:
            raise ValueError(f"{OBS_ENV_STATE}: expected shape (B, {dim}) for embodiment {e!r}, "
                             f"got {tuple(env.shape)}")
        target = self.normalizer.normalize(env[:, :dim], e, OBS_ENV_STATE)
        return torch.nn.functional.mse_loss(pred.float(), target)

    # -- inference -------------------------------------------------------------------------------------------
    def frame_to_batch(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One frame dict (images uint8 (H, W, 3), state (P,)) -> a batch of one, validated
        (``vlaforge.processing.frames.check_frame``)."""
        f = check_frame(self.config, obs)
        batch: dict[str, Any] = {OBS_STATE: torch.from_numpy(f.state)[None], TASK: [f.task],
                                 EMBODIMENT: [f.embodiment]}
        for cam, im in zip(self.config.cameras, f.images):
            batch[image_key(cam)] = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None]
        return batch

    def set_precision(self, bf16: Any = "auto", warn: bool = True) -> Precision:
        """Choose bf16 autocast for inference (``vlaforge.precision.resolve_bf16``): ``"auto"`` takes bf16
        only where this machine runs it natively and a timed ``predict_chunk`` on a synthetic frame is faster
        (timings remembered per machine and config); ``True`` / ``False`` as asked. Returns the choice (log
        its ``describe()``). Autocast applies inside ``sample_chunks_batch``, so it holds in any thread.
        ``warn``: the warning for an explicit True on a CPU without native bf16."""
        # its own generator: whether it runs must not move torch's global one
        def probe(use_bf16: bool) -> None:
            self.inference_precision = Precision(use_bf16, "probe", "")
            self.predict_chunk(self.example_frame(), generator=torch.Generator(self.device).manual_seed(0))

        key = f"infer|{self.device}|" + json.dumps(self.config.to_dict(), sort_keys=True)
        before = self.inference_precision
        try:
            choice = resolve_bf16(bf16, self.device.type, probe=probe, probe_key=key, warn=warn)
        finally:
            self.inference_precision = before
        self.inference_precision = choice
        return choice

    def example_frame(self) -> dict[str, Any]:
        """A valid frame of zeros for the first embodiment (warm-ups, probes, tests)."""
        return example_frame(self.config)

    @torch.inference_mode()
    def sample_chunks_batch(self, batch: Mapping[str, Any], n: int = 1,
                            generator: torch.Generator | None = None,
                            deterministic: bool = False) -> list[np.ndarray]:
        """A batch -> per row an (n, H, D) float32 array in physical units (rows may differ in D)."""
        was_training = self.training
        self.eval()
        try:
            with self.inference_precision.autocast(self.device.type):
                cond, embs = self.encode(batch)
            out: list[np.ndarray | None] = [None] * len(embs)
            for e, ix in self._groups(embs).items():
                head = self.heads[e]
                with self.inference_precision.autocast(self.device.type):
                    x = (head.predict(cond[ix], generator)[:, None] if deterministic
                         else head.sample(cond[ix], n, generator))
                x = self.normalizer.unnormalize(x.float(), e, ACTION).cpu().numpy()  # (b_e, n, H, D)
                for j, i in enumerate(ix.tolist()):
                    out[i] = x[j]
            return out  # type: ignore[return-value]
        finally:
            self.train(was_training)

    def predict_chunk(self, obs: Mapping[str, Any], generator: torch.Generator | None = None) -> np.ndarray:
        """One frame dict -> np.float32 (H, D) in physical units: the chunk to execute."""
        return self.sample_chunks_batch(self.frame_to_batch(obs), 1, generator, deterministic=True)[0][0]

    def predict_chunks(self, frames: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Several frames (any embodiments and instructions) in one forward pass -> one (H, D) chunk each,
        what ``predict_chunk`` gives for each frame alone (up to float rounding): the policy server's
        batching."""
        if not frames:
            return []
        batches = [self.frame_to_batch(f) for f in frames]
        batch: dict[str, Any] = {}
        for key, first in batches[0].items():
            if isinstance(first, list):
                batch[key] = [x for b in batches for x in b[key]]
            elif key == OBS_STATE:  # robots of different state sizes: zero-padded, each row read to
                                    # its own size
                width = max(b[key].shape[-1] for b in batches)
                batch[key] = torch.cat([torch.nn.functional.pad(b[key], (0, width - b[key].shape[-1]))
                                        for b in batches])
            else:
                batch[key] = torch.cat([b[key] for b in batches])
        return [x[0] for x in self.sample_chunks_batch(batch, 1, deterministic=True)]

    def sample_chunks(self, obs: Mapping[str, Any], n: int = 8,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """One frame dict -> (n, H, D): n independent samples in one batched call (identical for
        regression)."""
        if n < 1:
            raise ValueError(f"n: expected a positive int, got {n}")
        return self.sample_chunks_batch(self.frame_to_batch(obs), n, generator)[0]

    # -- save / load -----------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and norm_stats.json atomically (temp dir, then rename)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            meta = {"format_version": FORMAT_VERSION, "vlaforge_version": __version__,
                    "policy": self.config.to_dict()}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
            (tmp / STATS_FILE).write_text(json.dumps(stats_to_json(self._stats), indent=2))
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        return directory

    @classmethod
    def read_config(cls, directory: str | os.PathLike) -> PolicyConfig:
        directory = Path(directory)
        path = directory / CONFIG_FILE
        meta = read_json(path, CheckpointError,
                         missing=f"{directory}: not a policy checkpoint (missing {CONFIG_FILE})")
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            readable = " or ".join(map(str, READABLE_VERSIONS))
            raise CheckpointError(f"{path}: expected format_version {readable}, got {version!r}")
        return PolicyConfig.from_dict(meta["policy"])

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Policy":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config = cls.read_config(directory)
        for f in (STATS_FILE, WEIGHTS_FILE):
            if not (directory / f).is_file():
                raise CheckpointError(f"{directory}: missing {f}")
        stats = json.loads((directory / STATS_FILE).read_text())
        policy = cls(config, stats)
        try:
            tensors = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file "
                                  f"({e})") from None
        policy.load_weights(tensors, source=str(directory / WEIGHTS_FILE))
        return policy.to(map_location)

    def load_weights(self, tensors: Mapping[str, torch.Tensor], source: str = "weights") -> None:
        """Strict load with a clear error for missing, extra or mis-shaped tensors."""
        own = self.state_dict()
        missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or extra:
            raise CheckpointError(f"{source}: tensors do not match the config: missing {missing[:8]}"
                                  f"{' ...' if len(missing) > 8 else ''}, unexpected {extra[:8]}"
                                  f"{' ...' if len(extra) > 8 else ''}")
        for k, v in own.items():
            if tuple(tensors[k].shape) != tuple(v.shape):
                raise CheckpointError(f"{source}: tensor {k!r}: expected shape {tuple(v.shape)}, "
                                      f"got {tuple(tensors[k].shape)}")
        self.load_state_dict(dict(tensors), strict=True)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
