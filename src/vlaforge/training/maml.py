"""MAML (Finn et al. 2017) for few-shot adaptation: meta-train a policy so that a few gradient steps on one
task's demonstrations adapt it well, then adapt it to a new task the same way (``vlaforge adapt --method
head`` with the inner learning rate, or :func:`inner_adapt`).

    result = meta_train(policy, dataset, MAMLConfig(meta_steps=500, inner_steps=1, inner_lr=0.01))

One meta-step: for each of ``tasks_per_step`` tasks drawn from the dataset (its episodes' ``task_name``), a
support batch and a query batch of that task; the inner loop takes ``inner_steps`` SGD steps on the support
loss over the ``adapt_groups`` parameters only (default the action heads: what the K-shot adaptation trains),
giving fast weights; the query loss of the fast weights is backpropagated to every parameter (the outer
loop, AdamW). ``first_order=True`` (the default) treats the inner gradient as a constant (FOMAML: no
second derivatives, the memory of plain training); ``False`` keeps the graph through the inner steps (second
order). The policy runs functionally (``torch.func.functional_call``) with the fast weights in place of its
own, so its parameters change only in the outer step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vlaforge.training.trainer import LossModule


@dataclass(frozen=True)
class MAMLConfig:
    meta_steps: int = 500
    tasks_per_step: int = 4
    batch_size: int = 16  # support and query batch, each, per task
    inner_steps: int = 1
    inner_lr: float = 0.01
    outer_lr: float = 3e-4
    first_order: bool = True
    adapt_groups: tuple[str, ...] = ("heads",)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("meta_steps", "tasks_per_step", "batch_size", "inner_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MAMLConfig.{name}: expected a positive int, got {getattr(self, name)!r}")
        if not (self.inner_lr > 0 and self.outer_lr > 0):
            raise ValueError(f"MAMLConfig: expected positive learning rates, got inner {self.inner_lr!r}, "
                             f"outer {self.outer_lr!r}")


def adapted_names(policy: nn.Module, groups: tuple[str, ...]) -> list[str]:
    """The parameter names the inner loop adapts."""
    known = policy.parameter_groups()
    if unknown := [g for g in groups if g not in known]:
        raise ValueError(f"MAML adapt_groups: unknown {unknown}; expected some of {sorted(known)}")
    return [n for g in groups for n, _ in known[g]]


def inner_adapt(loss_module: nn.Module, params: dict[str, torch.Tensor], names: list[str], batch: dict,
                steps: int, lr: float, first_order: bool) -> dict[str, torch.Tensor]:
    """The fast weights after ``steps`` SGD steps on ``batch`` over ``names`` (keys as in ``params``); the
    other parameters are not touched. With ``first_order`` the inner gradients are constants."""
    from torch.func import functional_call

    fast = dict(params)
    for _ in range(steps):
        loss, _ = functional_call(loss_module, fast, (batch,))
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order,
                                    allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                fast[n] = fast[n] - lr * (g.detach() if first_order else g)
    return fast


def meta_train(policy: nn.Module, dataset: Any, cfg: MAMLConfig, progress: bool = True,
               should_stop: Callable[[int], bool] | None = None) -> dict[str, Any]:
    """Meta-train ``policy`` in place on ``dataset`` (a ``ChunkDataset`` with several tasks). Returns the
    query-loss curve and the seconds it took."""
    from torch.func import functional_call
    from tqdm import tqdm

    from vlaforge.data import collate
    from vlaforge.training.recipe import clip_gradients, make_optimizer

    tasks = {t: ix for t, ix in dataset.items_by_task().items() if ix}
    if len(tasks) < 2:
        raise ValueError(f"MAML: expected a dataset with several tasks (episodes' task names), got "
                         f"{sorted(tasks)}")
    loss_module = LossModule(policy)
    names = [f"policy.{n}" for n in adapted_names(policy, cfg.adapt_groups)]
    for p in policy.parameters():
        p.requires_grad_(True)
    opt = make_optimizer(policy, cfg.outer_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    order = sorted(tasks)
    curve, t0 = [], time.perf_counter()
    policy.train()
    bar = tqdm(range(cfg.meta_steps), desc="meta-train", unit="step", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        chosen = rng.choice(len(order), size=min(cfg.tasks_per_step, len(order)), replace=False)
        opt.zero_grad(set_to_none=True)
        query_losses = []
        for k in chosen:
            ix = tasks[order[int(k)]]
            support, query = (collate([dataset.get(int(i), rng) for i in rng.choice(ix, cfg.batch_size)])
                              for _ in range(2))
            params = {f"policy.{n}": p for n, p in policy.named_parameters()}
            fast = inner_adapt(loss_module, params, names, support, cfg.inner_steps, cfg.inner_lr,
                               cfg.first_order)
            loss = functional_call(loss_module, fast, (query,))[0] / len(chosen)
            loss.backward()  # to every parameter, through the fast weights
            query_losses.append(float(loss.detach()) * len(chosen))
        clip_gradients([p for p in policy.parameters()], 1.0)
        opt.step()
        curve.append(float(np.mean(query_losses)))
        if step % 10 == 0:
            bar.set_postfix(query_loss=f"{np.mean(curve[-10:]):.4f}", refresh=False)
        if should_stop is not None and should_stop(step):
            break
    bar.close()
    return {"query_loss": curve, "seconds": round(time.perf_counter() - t0, 2), "tasks": order}
