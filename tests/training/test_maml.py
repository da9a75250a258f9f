"""MAML: the inner step moves only the parameters it adapts (the heads by default) and leaves the policy's own
untouched; meta-training updates every parameter through the fast weights, first and second order."""

from __future__ import annotations

import pytest
import torch

from tests.training.conftest import write_dataset
from tests.training.test_adapt import tiny


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
    from vlaforge.data import ChunkDataset

    root = write_dataset(tmp_path_factory.mktemp("maml") / "d", episodes=6, length=10)
    return ChunkDataset(root, chunk_size=tiny().config.chunk_size, progress=False)


def test_an_inner_step_changes_only_the_adapted_parameters(two_tasks):
    from vlaforge.data import collate
    from vlaforge.training.maml import adapted_names, inner_adapt
    from vlaforge.training.trainer import LossModule

    policy = tiny()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    names = [f"policy.{n}" for n in adapted_names(policy, ("heads",))]
    params = {f"policy.{n}": p for n, p in policy.named_parameters()}
    batch = collate([two_tasks.get(i) for i in range(8)])
    fast = inner_adapt(LossModule(policy), params, names, batch, steps=2, lr=0.1, first_order=True)
    moved = {n for n in params if not torch.equal(fast[n].detach(), params[n].detach())}
    assert moved and moved <= set(names) and all(n.startswith("policy.heads.") for n in moved)
    assert all(fast[n] is params[n] for n in params if n not in names)  # the rest: the same tensors
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())  # the policy: untouched
    with pytest.raises(ValueError, match="MAML adapt_groups: unknown \\['head'\\]"):
        adapted_names(policy, ("head",))


@pytest.mark.parametrize("first_order", [True, False])
def test_meta_training_moves_every_group(two_tasks, first_order):
    from vlaforge.training.maml import MAMLConfig, meta_train

    policy = tiny()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    out = meta_train(policy, two_tasks, MAMLConfig(meta_steps=2, tasks_per_step=2, batch_size=4,
                                                   first_order=first_order), progress=False)
    assert len(out["query_loss"]) == 2 and all(torch.isfinite(torch.tensor(out["query_loss"])))
    assert sorted(out["tasks"]) == ["trace-lower", "trace-upper"]
    for group, params in policy.parameter_groups().items():
        if params and group != "language":  # the hashed language encoder's table: only rows in use move
            assert any(not torch.equal(p, before[n]) for n, p in params), group


def test_the_meta_train_command_writes_a_checkpoint(two_tasks, tmp_path):
    from tests.test_cli import run_cli
    from vlaforge.policy import Policy

    tiny().save(tmp_path / "init")
    code, out, err = run_cli(["meta-train", "--checkpoint", str(tmp_path / "init"), "--dataset",
                              str(two_tasks.reader.root), "--out", str(tmp_path / "meta"),
                              "--meta-steps", "2", "--batch-size", "4", "--threads", "1"])
    assert code == 0, err
    assert "meta-trained 2 steps" in out and "over 2 tasks" in out
    Policy.load(tmp_path / "meta" / "checkpoint")
