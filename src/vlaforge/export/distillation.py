"""``distill``: a flow or diffusion teacher with many sampling steps -> a student with 1-2 steps.

The student learns the teacher's map from noise to chunk: for a frame of the dataset and a noise draw z, the
teacher's ``sample_from(cond, z)`` (all its steps) is the target of the student's ``sample_from(cond, z)``
with ``sampling_steps`` steps (mean squared error in normalized units, through every student step). This is
distillation onto the teacher's samples with the pairing kept (as in one-step flow and consistency policies);
``data_weight`` > 0 adds the head's own loss on the recorded actions.

- Same architecture (no ``student_preset``): the student starts as a copy of the teacher and, with
  ``train="heads"`` (the default), only its heads train: the encoders and fusion stay the teacher's, so one
  teacher pass gives both the readouts and the target.
- ``student_preset``: a smaller policy (``vlaforge.presets``) with the teacher's cameras, robots, chunk and
  language encoder, trained whole from scratch on the same targets.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vlaforge.config import DiffusionSettings, FlowSettings
from vlaforge.policy import Policy
from vlaforge.types import ACTION, ACTION_IS_PAD


@dataclass(frozen=True)
class DistillConfig:
    teacher: str
    out: str
    steps: int = 1500
    sampling_steps: int = 1
    student_preset: str | None = None
    train: str = "heads"  # heads | all (same architecture only; a student_preset trains all)
    dataset: tuple[str, ...] = ()  # default: the teacher run's dataset
    batch_size: int = 64
    lr: float = 1e-3
    data_weight: float = 0.0
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling_steps not in (1, 2, 3, 4):
            raise ValueError(f"sampling_steps: expected 1 to 4, got {self.sampling_steps}")
        if self.steps < 1:
            raise ValueError(f"steps: expected a positive int, got {self.steps}")
        if self.train not in ("heads", "all"):
            raise ValueError(f"train: expected 'heads' or 'all', got {self.train!r}")


def student_config(teacher: Policy, cfg: DistillConfig):
    t = teacher.config
    base = t
    if cfg.student_preset:
        from vlaforge import presets

        base = presets.get(cfg.student_preset).replace(
            head=t.head, chunk_size=t.chunk_size, image_size=t.image_size, cameras=t.cameras,
            language_encoder=t.language_encoder, embodiments=t.embodiments, normalization=t.normalization,
            min_spread=t.min_spread, aux_env_weight=0.0)
    hs = base.head_settings
    if t.head == "flow":
        hs = type(hs)(**{**{f: getattr(hs, f) for f in hs.__dataclass_fields__},
                         "flow": FlowSettings(steps=cfg.sampling_steps)})
    else:
        d = t.settings("diffusion")
        hs = type(hs)(**{**{f: getattr(hs, f) for f in hs.__dataclass_fields__},
                         "diffusion": DiffusionSettings(d.train_steps, cfg.sampling_steps)})
    return base.replace(head_settings=hs)


def distill(cfg: DistillConfig, progress: bool = True, log=print) -> Path:
    """Train the student; writes ``<out>/checkpoint`` (a policy checkpoint) and ``<out>/distill.json``."""
    from tqdm import tqdm

    from vlaforge.data import ChunkDataset, collate
    from vlaforge.export.onnx_export import run_dataset

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teacher = Policy.load(cfg.teacher).eval()
    if not teacher.heads[teacher.embodiments[0]].generative:
        raise ValueError(f"teacher: expected a flow or diffusion policy, got head {teacher.config.head!r} "
                         f"(its chunk is one pass already)")
    datasets = [Path(d) for d in cfg.dataset] or run_dataset(Path(cfg.teacher))
    if not datasets:
        raise ValueError(f"dataset: none recorded beside {cfg.teacher}; pass --dataset DIR")
    student = Policy(student_config(teacher, cfg), teacher.stats)
    same = cfg.student_preset is None
    if same:
        student.load_weights(teacher.state_dict(), source=cfg.teacher)
    train_all = cfg.train == "all" or not same
    params = [p for n, p in student.named_parameters() if train_all or n.startswith("heads.")]
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))))
    sets = [ChunkDataset(d, teacher.config.chunk_size, augment=False, progress=progress) for d in datasets]
    data = torch.utils.data.ConcatDataset(sets)
    rng = np.random.default_rng(cfg.seed)
    log(f"distill: {cfg.teacher} ({teacher.config.head}, "
        f"{teacher.heads[teacher.embodiments[0]].sampling_steps} "
        f"steps) -> {cfg.sampling_steps}-step student ({'teacher copy' if same else cfg.student_preset}, "
        f"training {'all' if train_all else 'heads'}: {sum(p.numel() for p in params):,} parameters), "
        f"{len(data):,} frames of {', '.join(map(str, datasets))}")
    history, t0 = [], time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="distill", unit="step", disable=not progress, dynamic_ncols=True)
    student.train()
    for step in bar:
        batch = collate([data[int(i)] for i in rng.integers(0, len(data), cfg.batch_size)])
        with torch.no_grad():
            t_cond, embs = teacher.encode(batch)
        s_cond = t_cond if not train_all else student.encode(batch)[0]
        loss = s_cond.new_zeros(())
        for e, ix in student._groups(embs).items():
            dim = student.config.embodiments[e].action_dim
            noise = torch.randn(len(ix), student.config.chunk_size, dim)
            with torch.no_grad():
                target = teacher.heads[e].sample_from(t_cond[ix], noise)
            head = student.heads[e]
            part = torch.nn.functional.mse_loss(head.sample_from(s_cond[ix], noise), target)
            if cfg.data_weight > 0:
                a = student.normalizer.normalize(batch[ACTION][ix][..., :dim].float(), e, ACTION)
                part = part + cfg.data_weight * head.loss(s_cond[ix], a, batch[ACTION_IS_PAD][ix])
            loss = loss + part * (len(ix) / len(embs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if step % 50 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
    bar.close()
    student.eval()
    out, w = Path(cfg.out), max(1, min(50, cfg.steps // 5))  # loss averaged over the first / last w steps
    student.save(out / "checkpoint")
    (out / "distill.json").write_text(json.dumps({
        "config": asdict(cfg), "dataset": [str(d) for d in datasets],
        "teacher_steps": teacher.heads[teacher.embodiments[0]].sampling_steps,
        "wall_s": round(time.perf_counter() - t0, 1), "loss_window": w,
        "loss_first": float(np.mean(history[:w])), "loss_last": float(np.mean(history[-w:])),
        "loss": history[::10]}, indent=2))
    log(f"distill: done in {time.perf_counter() - t0:.0f} s; loss {np.mean(history[:w]):.4f} -> "
        f"{np.mean(history[-w:]):.4f}; student in {out / 'checkpoint'}")
    return out / "checkpoint"
