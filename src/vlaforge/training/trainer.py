"""The one training loop: stages, AdamW, warm-up + cosine, clipping, EMA, bf16, DDP, validation, checkpoints.

    result = train(TrainConfig(...))            # or: vlaforge train --preset scratch --dataset D --out R
    result = resume("runs/r1")                  # continue an interrupted run exactly where it stopped

Run directory: ``config.json`` (the resolved config), ``log.jsonl``, ``train.log``, ``tensorboard/`` (when
installed), ``checkpoints/last`` (full training state, see checkpoint.py), ``checkpoints/best`` (the EMA
policy with the lowest validation loss) and, at the end, ``checkpoint/`` (the EMA policy; ``Policy.load``
opens it).

Exactness. A run interrupted at step k and resumed reaches the same weights as an uninterrupted run (bit for
bit on CPU): the data order is a function of the step (data.py), every generator state is saved, validation
draws from a forked generator, and nothing else touches the global generators. A dataset whose augmentation
keeps its own per-process generator (``ChunkDataset`` with ``augment``) gets the same samples in the same
order after a resume but different random shifts.

Multi-process. Under torchrun each process takes ``batch_size / world`` of every global batch (the same global
batch as one process), DDP averages gradients, and each rank's loss is weighted by its share of the global
batch's unpadded target steps so the gradient is that of the mean over the global batch (exact for batches of
one embodiment). Rank 0 logs and writes; each rank's generator state is saved.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlaforge.fsutil import read_jsonl, write_json_atomic
from vlaforge.precision import Precision, describe_machine, machine_info, normalize_setting, resolve_bf16
from vlaforge.training import checkpoint as ckpt
from vlaforge.training import distributed as dd
from vlaforge.training.config import TrainConfig
from vlaforge.training.data import train_loader, val_indices
from vlaforge.training.ema import EMA
from vlaforge.training.logger import LOG_FILE, TB_DIR, TEXT_LOG, RunLogger, truncate_log
from vlaforge.training.recipe import (
    apply_stage,
    clip_gradients,
    make_optimizer,
    make_scheduler,
    stage_at,
    stage_bounds,
)
from vlaforge.training.resolve import check_items, load_init, resolve_policy
from vlaforge.types import ACTION_IS_PAD, EMBODIMENT

CONFIG_FILE, LAST, BEST, FINAL = "config.json", "checkpoints/last", "checkpoints/best", "checkpoint"
#: what a run directory holds; ``train_or_resume`` clears a directory that stopped before its first
#: checkpoint only when it holds nothing else (a dataset given as ``out`` by mistake is never deleted)
RUN_ENTRIES = frozenset({CONFIG_FILE, "checkpoints", FINAL, LOG_FILE, TEXT_LOG, TB_DIR})
#: fields a resumed run may change: they do not alter the weights it reaches
RESUMABLE_OVERRIDES = ("num_workers", "log_interval", "val_interval", "val_batches", "ckpt_interval",
                       "threads", "device", "tensorboard", "progress", "dataset", "out")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (already holds a run, or holds none to resume)."""


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or Inf; the run stopped without touching its last checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    status: str  # "finished" or "interrupted"
    checkpoint: Path | None  # the final EMA policy (None when interrupted)
    best_val: float | None
    signal: int | None = None  # the signal that interrupted the run


class LossModule(nn.Module):
    """DDP synchronizes gradients for what runs through ``forward``: route ``compute_loss`` through it."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch):
        return self.policy.compute_loss(batch)


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to save a checkpoint and exit after the current step."""

    def __init__(self):
        self.signum: int | None = None
        self._prev: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._prev[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        # no I/O here: the handler may run in the middle of a write to the same file (a reentrant-call error)
        if self.signum is None:
            self.signum = signum

    def restore(self) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        self._prev.clear()


def _stream_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), 0x7EA1]).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no run to resume (missing {CONFIG_FILE})")
    return TrainConfig.from_dict(json.loads(path.read_text()))


def train(config: TrainConfig, *, train_data=None, val_data=None,
          should_stop: Callable[[int], bool] | None = None) -> TrainResult:
    """Run ``config`` into the empty (or new) directory ``config.out``.

    ``train_data`` / ``val_data``: datasets with DESIGN items and a ``.stats`` (default: ``ChunkDataset`` on
    ``config.dataset``). ``should_stop(step)``: called after every step; True stops the run like SIGINT does.
    """
    return Trainer(config, train_data, val_data, resume=False, should_stop=should_stop).run()


def resume(run_dir: str | Path, overrides=(), *, train_data=None, val_data=None,
           should_stop: Callable[[int], bool] | None = None) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint. ``overrides``: ``path=value`` items,
    limited to fields that do not change the weights (``RESUMABLE_OVERRIDES``)."""
    from vlaforge.training.overrides import apply_overrides, split_override

    config = load_run_config(run_dir).replace(out=str(run_dir))
    for item in overrides:
        path, _ = split_override(item)
        if path.split(".")[0] not in RESUMABLE_OVERRIDES:
            raise RunDirError(f"--{path}: cannot change when resuming (it would change the weights "
                              f"the run reaches);"
                              f" fields a resume may change: {', '.join(RESUMABLE_OVERRIDES)}")
    config = apply_overrides(config, overrides)
    return Trainer(config, train_data, val_data, resume=True, should_stop=should_stop).run()


def dataset_sizes(dataset: str) -> list[list[int]]:
    """[episodes, frames] of each dataset directory in ``dataset`` (comma-separated), in order, from their
    metadata (not their paths: a dataset may move)."""
    from vlaforge.data.reader import DatasetReader

    sizes = []
    for root in (r.strip() for r in dataset.split(",") if r.strip()):
        reader = DatasetReader(root)
        sizes.append([reader.num_episodes, reader.num_frames])
    return sizes


def _check_same_data(out: Path, config: TrainConfig) -> None:
    """A run to reuse or resume was trained on ``config.dataset`` as it was then: refuse one whose dataset
    has since gained or lost episodes (recorded into again with more demonstrations, say), which would
    otherwise pass off a policy trained on the old data as trained on the new. Runs from before the
    trainer recorded its data (no ``data`` event), and datasets that cannot be read, are not checked."""
    then = next((e.get("datasets") for e in read_jsonl(out / LOG_FILE) if e.get("event") == "data"), None)
    if not config.dataset or then is None:
        return
    try:
        now = dataset_sizes(config.dataset)
    except Exception:  # noqa: BLE001
        return  # not readable here (moved, half-written): nothing to compare; reuse needs no data
    if then != now:
        raise RunDirError(
            f"{out}: trained on {config.dataset} when it held {then} ([episodes, frames] per "
            f"dataset); it now holds {now}: the data changed after training. Train into another "
            f"out (or delete the run) to train on the data as it is now")


def _differences(asked: Any, saved: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, asked, saved) wherever two JSON trees differ."""
    if isinstance(asked, dict) and isinstance(saved, dict):
        return [d for k in sorted(set(asked) | set(saved))
                for d in _differences(asked.get(k), saved.get(k), f"{path}.{k}" if path else k)]
    return [] if asked == saved else [(path, asked, saved)]


def _check_same_config(out: Path, config: TrainConfig) -> None:
    """A run to reuse or resume was trained with its own ``config.json``: refuse one whose settings differ
    from ``config`` (a changed ``--set`` on the same out would otherwise reuse the old training as if it
    were the one asked for). Not compared: what a resume may change (``RESUMABLE_OVERRIDES``) and the
    embodiments the run took from its data (``embodiments_from_data``)."""
    try:
        saved = TrainConfig.from_dict(json.loads((out / CONFIG_FILE).read_text())).to_dict()
    except (OSError, ValueError, TypeError):
        return  # no readable config: the run directory checks say what is wrong with it
    saved, asked = (json.loads(json.dumps(c)) for c in (saved, config.to_dict()))
    differ = [(path, want, had) for path, want, had in _differences(asked, saved)
              if path.split(".")[0] not in RESUMABLE_OVERRIDES
              and not (config.embodiments_from_data and path.startswith("policy.embodiments"))]
    if differ:
        shown = "; ".join(f"{path}: {had!r}, asked {want!r}" for path, want, had in differ[:4])
        raise RunDirError(f"{out}: holds a run trained with other settings than asked ({shown}"
                          f"{'; ...' if len(differ) > 4 else ''}). Train into another out (or delete "
                          f"the run) to train with these settings")


def train_or_resume(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult | None:
    """For jobs that are re-run until done (``make demo``, the benchmarks): ``None`` when ``config.out``
    already holds a finished run (its final policy), else resume the run there from its last checkpoint,
    else train it afresh. A run directory that stopped before its first checkpoint holds nothing to keep
    (config and logs): it is cleared and the run starts again. A finished or interrupted run whose dataset
    has changed since it started, or that was started with other settings, is refused (``_check_same_data``,
    ``_check_same_config``)."""
    out = Path(config.out)
    finished, resumable = (out / FINAL / "config.json").is_file(), (out / LAST / ckpt.STATE_FILE).is_file()
    if finished or resumable:
        _check_same_config(out, config)
        _check_same_data(out, config)
    if finished:
        log(f"training run {out}: finished, reusing {out / FINAL}")
        return None
    if resumable:
        log(f"resuming the interrupted training run {out}")
        return resume(out)
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    if entries:  # (hidden temp files do not count)
        if CONFIG_FILE not in entries or entries - RUN_ENTRIES:
            raise RunDirError(f"{out}: expected a training run directory to resume or restart, found "
                              f"{', '.join(sorted(entries)[:6])} (not a run's files); "
                              f"choose another out, or delete it yourself")
        log(f"{out} holds no training checkpoint (it stopped before the first); starting it afresh")
        shutil.rmtree(out)
    return train(config)


def open_datasets(config: TrainConfig, is_main: bool):
    from vlaforge.data import ChunkDataset

    if not config.dataset:
        raise ValueError("dataset: expected a dataset directory (--dataset DIR), got nothing")
    common = {"chunk_size": config.policy.chunk_size, "seed": config.seed, "progress": is_main,
              "env_state": config.policy.aux_env_weight > 0,
              "env_state_per_task": config.policy.aux_env_per_task}
    roots = [r.strip() for r in config.dataset.split(",") if r.strip()]
    trains = [ChunkDataset(r, split="train", augment=config.augment, paraphrase=config.paraphrase, **common)
              for r in roots]
    vals = [ChunkDataset(r, split="val", augment=False, paraphrase=False, **common) for r in roots]
    if len(roots) == 1:
        return trains[0], (vals[0] if len(vals[0]) else None)
    # several robots' datasets (comma-separated): one balanced mixture, images under the policy's cameras
    from vlaforge.data.mixed import MixedDataset

    vals = [v for v in vals if len(v)]
    return (MixedDataset(trains, config.policy.cameras),
            MixedDataset(vals, config.policy.cameras) if vals else None)


class Trainer:
    def __init__(self, config: TrainConfig, train_data=None, val_data=None, resume: bool = False,
                 should_stop: Callable[[int], bool] | None = None):
        if not config.out:
            raise RunDirError("out: expected a run directory (--out RUN_DIR), got nothing")
        self.config, self.resuming, self.should_stop = config, resume, should_stop
        self.train_data, self.val_data = train_data, val_data
        self.out = Path(config.out)

    # -- setup -----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        owns_group = not torch.distributed.is_initialized()
        threads = torch.get_num_threads()
        self.dist = dd.setup(self.config.device)
        try:
            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            return self._run()
        finally:
            torch.set_num_threads(threads)  # the caller's setting, whatever the run used
            if owns_group:
                dd.teardown(self.dist)

    def _check_run_dir(self) -> None:
        last = self.out / LAST
        if self.resuming and not (last / ckpt.STATE_FILE).is_file():
            raise RunDirError(f"{self.out}: no training checkpoint to resume from "
                              f"(missing {last}/{ckpt.STATE_FILE})")
        if not self.resuming and self.out.exists() and any(self.out.iterdir()):
            if (last / ckpt.STATE_FILE).is_file():
                raise RunDirError(f"{self.out}: the run directory already holds a run; continue it with "
                                  f"--resume {self.out}, or choose another --out")
            raise RunDirError(f"{self.out}: the run directory is not empty "
                              f"(and holds no checkpoint to resume); "
                              f"delete it or choose another --out")

    def _data(self):
        d, cfg = self.dist, self.config
        if self.train_data is not None:
            return self.train_data, self.val_data
        if d.enabled and not d.is_main:
            dd.barrier(d)  # rank 0 builds the frame cache first; the others then open it
        out = open_datasets(cfg, d.is_main)
        if d.enabled and d.is_main:
            dd.barrier(d)
        return out

    def _run(self) -> TrainResult:
        cfg, d = self.config, self.dist
        self._check_run_dir()
        train_ds, val_ds = self._data()
        if len(train_ds) == 0:
            raise ValueError("dataset: the training split has no items")
        from vlaforge.data import collate
        from vlaforge.policy import Policy

        self.collate = collate
        if self.resuming:
            loaded = ckpt.load_training_checkpoint(self.out / LAST)
            stats = json.loads((self.out / LAST / ckpt.POLICY_DIR / "norm_stats.json").read_text())
            policy_cfg = Policy.read_config(self.out / LAST / ckpt.POLICY_DIR)
        else:
            loaded = None
            own_cameras = getattr(train_ds, "embodiment_cameras", None)  # a mixture of robots' datasets
            policy_cfg, stats = resolve_policy(cfg, train_ds.stats, own_cameras)
            cfg = self.config = cfg.replace(policy=policy_cfg)
        # a dataset drawing from its own generator (augmentation) seeds it from torch's seed on first use:
        # make that seed the run's (per rank), before any item is read
        torch.manual_seed(_stream_seed(cfg.seed, d.rank))
        check_items((val_ds if val_ds is not None else train_ds)[0], policy_cfg)
        if d.is_main and not self.resuming:
            write_json_atomic(self.out / CONFIG_FILE, cfg.to_dict())

        _seed_everything(cfg.seed)  # the same initial weights on every rank and in every run
        policy = Policy(policy_cfg, stats)
        fresh, init_note = [], ""
        if cfg.init and not self.resuming:
            fresh, n_loaded, n_ckpt = load_init(policy, cfg.init)
            init_note = (f"init: {n_loaded} of {n_ckpt} tensors from {cfg.init}; "
                         f"{len(fresh)} fresh parameter tensors")
        policy.to(d.device)
        ema = EMA(policy, cfg.ema_decay)
        step, best, best_step = 0, None, None
        if loaded is not None:
            policy.load_weights({k: v.to(d.device) for k, v in loaded.weights.items()}, source="checkpoint")
            ema.load_state_dict({k: v.to(d.device) for k, v in loaded.ema.items()}, loaded.state.ema_updates)
            st = loaded.state
            step, best, best_step, fresh = st.step, st.best_val, st.best_step, list(st.fresh)
            if st.step >= cfg.steps and (self.out / FINAL).is_dir():
                raise RunDirError(f"{self.out}: the run already finished (step {st.step} of {cfg.steps}); "
                                  f"its policy is in {self.out / FINAL}")
            if st.batch_size != cfg.batch_size or st.sampler_position != step * cfg.batch_size:
                raise ckpt.TrainingCheckpointError(
                    f"{self.out / LAST}: expected batch_size {cfg.batch_size} and "
                    f"position {step * cfg.batch_size}, got {st.batch_size} and "
                    f"{st.sampler_position}")
        self.precision = self._precision(policy, loaded.state.bf16 if loaded is not None else None)
        self.policy, self.ema, self.fresh, self.best, self.best_step = policy, ema, fresh, best, best_step
        self.train_ds, self.val_ds = train_ds, val_ds
        self.per_rank = cfg.batch_size // d.world
        if cfg.batch_size % d.world:
            raise ValueError(f"batch_size: expected a multiple of the {d.world} processes, "
                             f"got {cfg.batch_size}")

        if d.is_main and self.resuming:
            truncate_log(self.out, step)
        self.log = RunLogger(self.out, d.is_main, cfg.steps, step, cfg.tensorboard, cfg.progress)
        self.stop = _StopFlag()
        self.stop.install()
        try:
            self._header(step, init_note)
            # generator streams per rank (noise of generative heads, the dataset's own draws):
            # restored on resume
            if loaded is not None and len(loaded.rng) == d.world:
                ckpt.restore_rng(loaded.rng[d.rank])
            else:
                if loaded is not None:
                    self.log.info(f"resume: the checkpoint holds generator states for {len(loaded.rng)} "
                                  f"processes, this run has {d.world}; reseeding "
                                  f"(the result will not match bit for bit)")
                _seed_everything(_stream_seed(cfg.seed, d.rank) + step)
            return self._loop(step, loaded)
        finally:
            self.stop.restore()
            self.log.close()

    def _precision(self, policy, recorded: bool | None) -> Precision:
        """bf16 or fp32 for this run: as recorded at the start of a resumed run (exact resume), else decided
        by rank 0 (``resolve_bf16``, timing one training pass of each where the CPU has native bf16) and
        shared."""
        cfg, d = self.config, self.dist
        if recorded is not None:
            return Precision(recorded, normalize_setting(cfg.bf16), "as chosen when the run started (resume)")
        p = None
        if d.is_main:
            batch = min(max(1, cfg.batch_size // d.world), 32)
            key = f"train|{d.device}|batch={batch}|" + json.dumps(policy.config.to_dict(), sort_keys=True)
            p = resolve_bf16(cfg.bf16, d.device.type,
                             probe=lambda bf16: self._probe_step(policy, bf16, batch), probe_key=key)
        return dd.broadcast_object(p, d)

    def _probe_step(self, policy, bf16: bool, b: int) -> None:
        """One forward + backward on a synthetic batch; weights, gradients and generators are left as
        they were."""
        cfg = policy.config
        emb, spec = next(iter(cfg.embodiments.items()))
        h, s = cfg.chunk_size, cfg.image_size
        batch = {f"observation.images.{c}": torch.rand(b, 3, s, s) for c in cfg.cameras}
        batch.update({"observation.state": torch.zeros(b, spec.state_dim),
                      "action": torch.zeros(b, h, spec.action_dim),
                      "action_is_pad": torch.zeros(b, h, dtype=torch.bool), "task": ["probe"] * b,
                      "embodiment": [emb] * b})
        devices = [self.dist.device] if self.dist.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            with Precision(bf16, "probe", "").autocast(self.dist.device.type):
                loss, _ = policy.compute_loss(batch)
            loss.backward()
        policy.zero_grad(set_to_none=True)
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)

    def _header(self, step: int, init_note: str) -> None:
        cfg, d = self.config, self.dist
        total = self.policy.num_parameters()
        verb = "resuming at" if self.resuming else "starting at"
        self.log.info(f"run {self.out}: {verb} step {step} of {cfg.steps}; {total:,} parameters; "
                      f"device {d.device}; "
                      f"{d.world} process(es), batch {cfg.batch_size} ({self.per_rank} per process)")
        val_n = len(self.val_ds) if self.val_ds is not None else 0
        self.log.info(f"data: {len(self.train_ds)} training items, {val_n} validation items"
                      f"{'' if val_n else ' (no validation split: validation is skipped)'}")
        if init_note:
            self.log.info(init_note)
        self.log.info(f"machine: {describe_machine()}")
        self.log.event("machine", step, machine_info())
        if cfg.dataset and not self.resuming:  # what the run trains on: train_or_resume checks it on reuse
            self.log.event("data", step, {"train_items": len(self.train_ds), "val_items": val_n,
                                          "datasets": dataset_sizes(cfg.dataset)})
        self.log.info(self.precision.describe())
        for note in self.policy.normalizer.notes():
            self.log.info(f"normalization: {note}")
        self.log.event("precision", step, self.precision.to_dict())
        for i, (stage, (a, b)) in enumerate(zip(cfg.stages, stage_bounds(cfg))):
            self.log.info(f"stage {i} {stage.name!r}: steps {a}..{b - 1}, lr {cfg.stage_lr(stage):g}, "
                          f"trains {', '.join(stage.train)}"
                          f"{' + fresh' if stage.train_fresh and self.fresh else ''}")

    # -- the loop --------------------------------------------------------------------------------------------
    def _loop(self, step: int, loaded) -> TrainResult:
        cfg, d, policy = self.config, self.dist, self.policy
        loader = train_loader(self.train_ds, self.collate, cfg.batch_size, cfg.seed, d.rank, d.world,
                              step * cfg.batch_size, cfg.num_workers, pin_memory=d.device.type == "cuda")
        batches = iter(loader)
        embodiments = list(policy.config.embodiments)
        autocast = self.precision.autocast(d.device.type)
        self._acc = _Accumulator(embodiments)
        self.last_ckpt_step = step if loaded is not None else None
        last_val_step = None
        bounds = stage_bounds(cfg)
        opt = sched = None
        t_last = time.perf_counter()  # start of the current log window
        for si in range(stage_at(cfg, step), len(cfg.stages)):
            start, end = bounds[si]
            stage = cfg.stages[si]
            counts = apply_stage(policy, stage, self.fresh)
            n_train = sum(t for t, _ in counts.values())
            self.log.info(f"stage {si} {stage.name!r} from step {step}: {n_train:,} of "
                          f"{sum(n for _, n in counts.values()):,} parameters train (" +
                          ", ".join(f"{g} {t:,}/{n:,}" for g, (t, n) in counts.items()) + ")")
            self.log.event("stage", step, {"stage": stage.name, "resumed": step > start, "trainable": n_train,
                                           **{f"trainable/{g}": t for g, (t, _) in counts.items()}})
            model: nn.Module = LossModule(policy)
            if d.enabled:
                model = nn.parallel.DistributedDataParallel(
                    model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                    find_unused_parameters=len(embodiments) > 1)
            opt = make_optimizer(policy, cfg.stage_lr(stage), cfg.weight_decay, cfg.betas)
            sched = make_scheduler(opt, end - start, cfg)
            if loaded is not None and step > start:
                if loaded.state.stage != si:
                    raise ckpt.TrainingCheckpointError(
                        f"{self.out / LAST}: optimizer state of stage "
                        f"{loaded.state.stage}, expected stage {si} at step {step}")
                opt.load_state_dict(loaded.optim["optimizer"])
                sched.load_state_dict(loaded.optim["scheduler"])
            loaded = None
            trainable = [p for p in policy.parameters() if p.requires_grad]
            while step < end:
                rng_at_start = ckpt.capture_rng()
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                with autocast:
                    loss, info = model(batch)
                weight = self._rank_weight(batch)
                t_fwd = time.perf_counter()
                (loss * weight if weight != 1.0 else loss).backward()
                t2 = time.perf_counter()
                gnorm = clip_gradients(trainable, cfg.grad_clip)  # 0: no limit, the norm still measured
                flags = torch.tensor([0.0 if math.isfinite(info["loss"]) and torch.isfinite(gnorm) else 1.0,
                                      1.0 if self.stop.signum is not None else 0.0])
                dd.all_reduce_(flags, d, "max")
                if flags[0]:
                    self._nonfinite(step, stage.name, info, float(gnorm))
                if flags[1]:
                    name = signal.Signals(self.stop.signum).name if self.stop.signum else "stop requested"
                    self.log.info(f"{name}: saving a checkpoint at step {step}, then exiting")
                    opt.zero_grad(set_to_none=True)
                    ckpt.restore_rng(rng_at_start)  # as it was before this (discarded) step
                    self._save(step, si, opt, sched)
                    self.log.event("interrupted", step, {"signal": self.stop.signum})
                    self.log.info(f"interrupted at step {step}; checkpoint saved. Continue with: "
                                  f"vlaforge train --resume {self.out}")
                    return TrainResult(self.out, step, "interrupted", None, self.best,
                                       self.stop.signum or None)
                self._lr = opt.param_groups[0]["lr"]  # the rate this step uses
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                self.ema.update(policy)
                step += 1
                t3 = time.perf_counter()
                self._acc.add(info, weight, float(gnorm), (t1 - t0, t_fwd - t1, t2 - t_fwd, t3 - t2))
                if step % cfg.log_interval == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    self._log_train(step, stage.name, opt, now - t_last)
                    t_last = now
                if cfg.val_interval and step % cfg.val_interval == 0 or step == cfg.steps:
                    self._validate(step)
                    last_val_step = step
                if cfg.ckpt_interval and step % cfg.ckpt_interval == 0 and step != cfg.steps:
                    self._save(step, si, opt, sched)
                if self.should_stop is not None and self.should_stop(step) and step < cfg.steps:
                    # stops at the top of the next step, like a signal
                    self.stop.signum = self.stop.signum or 0
        if last_val_step != step:
            self._validate(step)
        self._save(step, len(cfg.stages) - 1, opt, sched)
        final = self.out / FINAL
        if d.is_main:
            self.ema.model.save(final)
        dd.barrier(d)
        self.log.event("end", step, {"best_val": self.best, "best_step": self.best_step,
                                     "checkpoint": str(final)})
        self.log.info(f"done: step {step}; final policy (EMA) in {final}"
                      + (f"; best validation loss {self.best:.4f} at step {self.best_step}"
                         if self.best is not None else ""))
        return TrainResult(self.out, step, "finished", final, self.best)

    def _rank_weight(self, batch) -> float:
        """With N processes: N * (this rank's unpadded target steps) / (the global batch's), so DDP's
        average of per-rank mean losses is the mean over the global batch."""
        if not self.dist.enabled:
            return 1.0
        pad = torch.as_tensor(batch[ACTION_IS_PAD])
        counts = torch.tensor([float((~pad).sum())], dtype=torch.float64)
        mine = float(counts[0])
        dd.all_reduce_(counts, self.dist, "sum")
        return self.dist.world * mine / max(float(counts[0]), 1.0)

    # -- logging, validation, checkpoints --------------------------------------------------------------------
    def _log_train(self, step: int, stage: str, opt, elapsed: float) -> None:
        values = self._acc.reduce(self.dist)
        n = values.pop("_steps")
        values["lr"] = self._lr
        values["samples_per_s"] = n * self.config.batch_size / max(elapsed, 1e-9)
        values["s_per_step"] = elapsed / max(n, 1)
        self.log.event("train", step, {"stage": stage, **values})
        self.log.advance(int(n), {"loss": f"{values['loss']:.4f}",
                                  "samples/s": f"{values['samples_per_s']:.1f}"})

    @torch.no_grad()
    def _validate(self, step: int) -> None:
        if self.val_ds is None:
            return
        cfg, d, model = self.config, self.dist, self.ema.model
        embs = list(model.config.embodiments)
        # (loss sum, unpadded target steps) overall, then per embodiment: heads average over unpadded
        # steps, so weighting each batch by its count gives the mean over the whole validation set,
        # however it is batched
        sums = torch.zeros(2 * (1 + len(embs)), dtype=torch.float64)
        autocast = self.precision.autocast(d.device.type)
        devices = [d.device] if d.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed + 1)  # the same noise at every validation: comparable numbers
            for idx in val_indices(len(self.val_ds), self.per_rank, cfg.val_batches, d.rank, d.world,
                                   cfg.seed):
                batch = self.collate([self.val_ds[i] for i in idx])
                with autocast:
                    _, info = model.compute_loss(batch)
                rows = batch[EMBODIMENT]
                steps = (~torch.as_tensor(batch[ACTION_IS_PAD])).sum(1).double()  # (B,)
                sums[0] += info["loss"] * float(steps.sum())
                sums[1] += float(steps.sum())
                for j, e in enumerate(embs, 1):
                    k = float(sum(n for n, r in zip(steps.tolist(), rows) if r == e))
                    if k:
                        sums[2 * j] += info[f"loss/{e}"] * k
                        sums[2 * j + 1] += k
        dd.all_reduce_(sums, d, "sum")
        values = {"val/loss": float(sums[0] / sums[1])}
        for j, e in enumerate(embs, 1):
            if sums[2 * j + 1] > 0:
                values[f"val/loss/{e}"] = float(sums[2 * j] / sums[2 * j + 1])
        is_best = self.best is None or values["val/loss"] < self.best
        self.log.event("val", step, {**values, "best": is_best})
        if is_best:
            self.best, self.best_step = values["val/loss"], step
            if d.is_main:
                model.save(self.out / BEST)
                write_json_atomic(self.out / BEST / "best.json", {"step": step, **values})
            self.log.event("best", step, values)

    def _save(self, step: int, stage: int, opt, sched) -> None:
        cfg, d = self.config, self.dist
        rng = dd.gather_objects(ckpt.capture_rng(), d)
        if d.is_main:
            state = ckpt.TrainingState(step=step, stage=stage, sampler_position=step * cfg.batch_size,
                                       ema_updates=self.ema.updates, best_val=self.best,
                                       best_step=self.best_step, fresh=list(self.fresh), world_size=d.world,
                                       batch_size=cfg.batch_size, seed=cfg.seed, bf16=self.precision.bf16)
            ckpt.save_training_checkpoint(self.out / LAST, self.policy, self.ema.state_dict(), opt, sched,
                                          rng, state)
        dd.barrier(d)
        self.last_ckpt_step = step
        self.log.event("checkpoint", step, {"path": str(self.out / LAST)})

    def _nonfinite(self, step: int, stage: str, info: dict, gnorm: float) -> None:
        what = f"loss {info['loss']}" if not math.isfinite(info["loss"]) else f"gradient norm {gnorm}"
        where = (f"the last good checkpoint is {self.out / LAST} (step {self.last_ckpt_step}); "
                 f"resume from it with --resume {self.out}"
                 if self.last_ckpt_step is not None else "no checkpoint was written yet")
        msg = (f"non-finite {what} at step {step + 1} (stage {stage!r}); stopped without saving: {where}. "
               f"Try a lower lr, a smaller grad_clip, or bf16=false; check the data for NaN/Inf.")
        self.log.event("nonfinite", step, {"loss": info["loss"], "grad_norm": gnorm})
        self.log.info(msg)
        raise NonFiniteLossError(msg)


class _Accumulator:
    """Sums of per-step numbers between log lines; averaged over steps (and ranks) when logged."""

    def __init__(self, embodiments: list[str]):
        self.keys = ["loss"] + [f"loss/{e}" for e in embodiments] + [f"aux_env/{e}" for e in embodiments]
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64)
        self.counts = torch.zeros(len(self.keys), dtype=torch.float64)
        # grad_norm, data, forward, backward, optimizer, steps
        self.other = torch.zeros(6, dtype=torch.float64)

    def add(self, info: dict, weight: float, gnorm: float, times: tuple[float, float, float, float]) -> None:
        """``times``: seconds waiting for data, in forward, in backward, in clipping + optimizer + EMA."""
        for i, k in enumerate(self.keys):
            if k in info:
                self.sums[i] += info[k] * (weight if k == "loss" else 1.0)
                self.counts[i] += 1
        self.other += torch.tensor([gnorm, *times, 1.0], dtype=torch.float64)

    def reduce(self, d: dd.DistInfo) -> dict[str, float]:
        packed = torch.cat([self.sums, self.counts, self.other])
        dd.all_reduce_(packed, d, "sum")
        k = len(self.keys)
        sums, counts, other = packed[:k], packed[k:2 * k], packed[2 * k:] / d.world
        steps = float(other[5])
        out = {key: float(sums[i] / counts[i]) for i, key in enumerate(self.keys) if counts[i] > 0}
        if "loss" in out and d.enabled:
            out["loss"] = float(sums[0] / steps / d.world)  # weighted per-rank losses: the global-batch mean
        out["grad_norm"] = float(other[0]) / steps
        for j, name in enumerate(("data", "forward", "backward", "optimizer"), 1):
            out[f"time/{name}"] = float(other[j]) / steps  # seconds per step (host clock)
        out["_steps"] = steps
        self.reset()
        return out
