"""``vlaforge adapt``: a trained policy to a new task from a few demonstrations; ``vlaforge meta-train``:
MAML meta-training before it (``vlaforge.training.maml``).

    result = run_adapt(AdaptConfig(checkpoint="runs/ml10/checkpoint", dataset="data/new-task-k10",
                                   out="runs/adapted", method="lora", rank=8))

Methods (one loop for all, so they compare on equal terms: the same batches, steps and clipping):

- ``scratch``: the checkpoint's architecture with fresh weights and the new data's statistics (the baseline);
- ``head``: only the action heads train;
- ``full``: every parameter trains, at a small learning rate;
- ``lora``: rank-``rank`` adapters on the fusion transformer's weight matrices (``vlaforge.training.lora``)
  plus the action heads; merged into the weights at the end, so the result is an ordinary checkpoint (no
  adapter at inference: the same latency as the original).

The new data must be of a robot the checkpoint knows (its embodiment, state and action sizes, cameras); the
fine-tuning methods keep the checkpoint's normalization statistics (the weights were trained on them). Each
step draws a batch of ``batch_size`` items with replacement from the dataset (shift augmentation on), AdamW
from the training engine (``make_optimizer``, ``clip_gradients``), constant learning rate. Writes
``<out>/checkpoint`` (a policy directory) and ``<out>/adapt.json`` (method, steps, seconds, trainable
parameters, loss at the start and the end).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METHODS = ("scratch", "head", "full", "lora")
#: learning rate per method unless given: scratch as the demo recipe, fine-tuning gentler
DEFAULT_LR = {"scratch": 2e-3, "head": 1e-3, "full": 1e-4, "lora": 1e-3}


@dataclass(frozen=True)
class AdaptConfig:
    checkpoint: str
    dataset: str
    out: str
    method: str = "lora"
    rank: int = 8  # LoRA
    steps: int = 300
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR[method]
    seed: int = 0
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        from vlaforge.names import unknown_name

        if self.method not in METHODS:
            raise unknown_name("adaptation method", self.method, METHODS)
        for name in ("rank", "steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"AdaptConfig.{name}: expected a positive int, got {getattr(self, name)!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"AdaptConfig.lr: expected a positive learning rate, got {self.lr!r}")


def check_dataset_fits(policy_config: Any, reader: Any) -> None:
    """The dataset's robot (a ``DatasetReader``: read before any frame is decoded) must be one of the
    policy's, with its sizes and cameras; a clear error if not."""
    from vlaforge.types import ACTION, OBS_STATE, image_key

    emb = reader.robot_type
    if emb not in policy_config.embodiments:
        raise ValueError(f"adapt: the dataset's robot {emb!r} is not one of the checkpoint's "
                         f"{list(policy_config.embodiments)}; adapt a policy trained on that robot (a new "
                         f"robot: train one policy on both robots' datasets, --dataset A,B)")
    spec = policy_config.embodiments[emb]
    state, action = (int(reader.features[k]["shape"][0]) for k in (OBS_STATE, ACTION))
    if (state, action) != (spec.state_dim, spec.action_dim):
        raise ValueError(f"adapt: {emb!r} has state {spec.state_dim} / action {spec.action_dim} in the "
                         f"checkpoint, the dataset has state {state} / action {action}")
    want = [image_key(c) for c in policy_config.cameras_of(emb)]
    if missing := [k for k in want if k not in reader.camera_keys]:
        raise ValueError(f"adapt: the checkpoint reads {want} for {emb!r}; the dataset has no {missing} "
                         f"(it has {list(reader.camera_keys)})")


def _trainable(policy: Any, method: str, rank: int, seed: int) -> list[str]:
    """Set requires_grad for the method (adding LoRA adapters for ``lora``); returns what trains."""
    from vlaforge.training.lora import add_lora

    if method == "lora":
        add_lora(policy, rank, groups=("fusion",), seed=seed)
    groups = policy.parameter_groups()
    names = []
    for group, params in groups.items():
        for name, p in params:
            on = (method in ("scratch", "full") or group == "heads"
                  or (method == "lora" and ".parametrizations." in name and name.endswith((".A", ".B"))))
            p.requires_grad_(on)
            names += [name] if on else []
    return names


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's thread count set to ``n`` (None: left as it is) for the block, the caller's put back after."""
    import torch

    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _policy_and_data(checkpoint: str, dataset: str, seed: int, progress: bool) -> tuple[Any, Any]:
    """The checkpoint's policy (fp32) and the dataset's training split, checked to fit before any frame is
    decoded; the auxiliary object-position target is served where the policy trains with it. Seeds torch."""
    import torch

    from vlaforge.data import ChunkDataset, DatasetReader
    from vlaforge.policy import Policy

    policy = Policy.load(checkpoint)
    check_dataset_fits(policy.config, DatasetReader(dataset))
    data = ChunkDataset(dataset, policy.config.chunk_size, split="train", augment=True, paraphrase=True,
                        seed=seed, progress=progress, env_state=policy.config.aux_env_weight > 0)
    torch.manual_seed(seed)
    return policy.float(), data


def run_adapt(cfg: AdaptConfig) -> dict[str, Any]:
    import numpy as np
    from tqdm import tqdm

    from vlaforge.data import collate
    from vlaforge.fsutil import write_json_atomic
    from vlaforge.policy import Policy
    from vlaforge.training.lora import merge_lora
    from vlaforge.training.recipe import clip_gradients, make_optimizer

    with _threads(cfg.threads):
        policy, data = _policy_and_data(cfg.checkpoint, cfg.dataset, cfg.seed, cfg.progress)
        emb = data.embodiment
        if cfg.method == "scratch":
            stats = dict(policy.stats) | {emb: data.stats[emb]}
            policy = Policy(policy.config, stats)
        policy.train()
        trainable = _trainable(policy, cfg.method, cfg.rank, cfg.seed)
        lr = cfg.lr or DEFAULT_LR[cfg.method]
        opt = make_optimizer(policy, lr, weight_decay=0.0, betas=(0.9, 0.999))
        params = [p for p in policy.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in params)
        rng = np.random.default_rng(cfg.seed)
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = tqdm(range(cfg.steps), desc=f"adapt ({cfg.method})", unit="step", disable=not cfg.progress,
                   dynamic_ncols=True)
        for step in bar:
            idx = rng.integers(0, len(data), cfg.batch_size)
            batch = collate([data.get(int(i), rng) for i in idx])
            loss, _ = policy.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", refresh=False)
        bar.close()
        wall = time.perf_counter() - t0
        merged = merge_lora(policy)
        policy.eval()
        out = Path(cfg.out)
        policy.save(out / "checkpoint")
        n = max(1, min(10, len(losses) // 10))
        result = {"config": asdict(cfg), "lr": lr, "embodiment": emb, "train_s": round(wall, 2),
                  "trainable_parameters": n_trainable, "trainable_tensors": len(trainable),
                  "lora_merged": merged,
                  "loss_start": float(np.mean(losses[:n])), "loss_end": float(np.mean(losses[-n:])),
                  "frames": len(data), "episodes": data.num_episodes, "checkpoint": str(out / "checkpoint")}
        write_json_atomic(out / "adapt.json", result)
        return result


def summary_line(result: dict[str, Any]) -> str:
    return (f"adapted ({result['config']['method']}) in {result['train_s']:.1f} s: loss "
            f"{result['loss_start']:.4f} -> {result['loss_end']:.4f}; {result['checkpoint']}")


def run_meta_train(checkpoint: str, dataset: str, out: str, maml: Any, threads: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """MAML-train the policy of ``checkpoint`` on the tasks of ``dataset`` (``maml``: a ``MAMLConfig``);
    writes ``<out>/checkpoint`` and ``<out>/meta_train.json``. Adapt the result to a new task with the inner
    loop's groups and learning rate (``--method head --lr <inner_lr>`` for the default heads)."""
    from vlaforge.fsutil import write_json_atomic
    from vlaforge.training.maml import meta_train

    with _threads(threads):
        policy, data = _policy_and_data(checkpoint, dataset, maml.seed, progress)
        curve = meta_train(policy, data, maml, progress=progress)
        policy.eval().save(Path(out) / "checkpoint")
        result = {"config": asdict(maml), "checkpoint": str(Path(out) / "checkpoint"), **curve}
        write_json_atomic(Path(out) / "meta_train.json", result)
        return result
