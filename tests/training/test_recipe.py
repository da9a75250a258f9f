"""Stages freeze exactly what they say, fresh modules of a new embodiment train, AdamW groups, the lr shape
and the data order."""

import itertools
import json

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from tests.training.conftest import debug_config, tensors, write_dataset
from vlaforge import presets, synthetic
from vlaforge.policy import Policy
from vlaforge.training import StageConfig, build_config, resume, train
from vlaforge.training.data import StreamSampler
from vlaforge.training.recipe import WarmupCosine, apply_stage, decay_split

GROUPS = ("vision", "language", "state", "fusion", "heads")


def tiny_policy(**kw):
    torch.manual_seed(0)
    return Policy(presets.get("tiny").replace(**kw), {"sawyer": uniform_stats(4, 4)})


def group_of(policy):
    return {name: g for g, params in policy.parameter_groups().items() for name, _ in params}


@pytest.mark.parametrize("train_groups", [("heads",), ("vision", "state"), ("language", "fusion")])
def test_a_stage_gives_gradients_to_exactly_its_groups(train_groups):
    policy = tiny_policy()
    counts = apply_stage(policy, StageConfig(name="s", train=train_groups))
    groups = group_of(policy)
    assert {g for g, (t, _) in counts.items() if t} == set(train_groups)
    batch = synthetic.make_batch(4, 8, 4, 4, 64, np.random.default_rng(0))
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    for name, p in policy.named_parameters():
        if groups[name] in train_groups:
            assert p.grad is not None, f"{name} ({groups[name]}) should train"
        else:
            assert p.grad is None, f"{name} ({groups[name]}) is frozen but got a gradient"


def test_training_a_stage_changes_only_its_groups(tiny_dataset, tmp_path):
    """Start from a saved policy (so the starting weights are known), train state + heads for a few steps."""
    ckpt = tmp_path / "init"
    tiny_policy().save(ckpt)
    run = tmp_path / "run"
    cfg = debug_config(tiny_dataset, run, f"init={ckpt}", "steps=3", "val_interval=0", "weight_decay=0.1",
                       'stages=[{"name": "s", "train": ["state", "heads"]}]')
    assert cfg.stages == (StageConfig(name="s", train=("state", "heads")),)
    train(cfg)
    before, after = (tensors(ckpt / "model.safetensors"),
                     tensors(run / "checkpoints/last/policy/model.safetensors"))
    groups = group_of(tiny_policy())
    changed = {g: 0 for g in GROUPS}
    for name, g in groups.items():
        if torch.equal(before[name], after[name]):
            continue
        changed[g] += 1
        assert g in ("state", "heads"), f"{name} ({g}) is frozen but changed"
    assert changed["state"] > 0 and changed["heads"] > 0
    counts = next(e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                  if e["event"] == "stage")
    assert counts["trainable/vision"] == 0 and counts["trainable/heads"] > 0


def test_finetune_on_a_new_embodiment_trains_its_fresh_modules_in_align(tiny_dataset, tmp_path):
    """A 'franka' dataset (6-d state, 3-d actions) fine-tunes a sawyer checkpoint: the franka head, state
    encoder and token are fresh; in align they train although the state group is frozen, the sawyer ones stay
    put."""
    franka = write_dataset(tmp_path / "franka", episodes=3, length=10, robot_type="franka", state_dim=6,
                           action_dim=3, seed=1)
    ckpt = tmp_path / "sawyer"
    tiny_policy().save(ckpt)
    run = tmp_path / "run"
    cfg = build_config("finetune", [f"init={ckpt}", f"dataset={franka}", f"out={run}", "steps=6",
                                    "batch_size=4", "num_workers=0", "val_interval=0", "progress=false",
                                    "tensorboard=false", "augment=false", "paraphrase=false",
                                    "stages.align.steps=2", "threads=1"])
    assert cfg.policy.d_model == 64, "--init takes the architecture from the checkpoint"
    train(cfg, should_stop=lambda step: step == 2)  # stop at the end of align
    resolved = json.loads((run / "config.json").read_text())["policy"]["embodiments"]
    assert resolved == {"sawyer": {"state_dim": 4, "action_dim": 4, "env_state_dim": 0},
                        "franka": {"state_dim": 6, "action_dim": 3, "env_state_dim": 0}}
    before, after = (tensors(ckpt / "model.safetensors"),
                     tensors(run / "checkpoints/last/policy/model.safetensors"))
    state = json.loads((run / "checkpoints/last/state.json").read_text())
    assert state["fresh"] and all("franka" in n for n in state["fresh"])

    def moved(prefix):
        return [k for k in after
                if k.startswith(prefix) and (k not in before or not torch.equal(before[k], after[k]))]

    assert moved("state_encoders.franka") and moved("heads.franka") and moved("embodiment_embed.franka")
    assert not moved("state_encoders.sawyer") and not moved("vision.") and not moved("heads.sawyer")
    assert moved("fusion.")  # align trains the fusion transformer
    assert resume(run).status == "finished"
    assert Policy.load(run / "checkpoint").embodiments == ["sawyer", "franka"]


def test_weight_decay_only_on_weight_matrices():
    policy = tiny_policy()
    decay, no_decay = decay_split(policy)
    names = dict(policy.named_parameters())
    assert set(decay) | set(no_decay) == set(names) and not set(decay) & set(no_decay)
    for n in ("camera_embed", "fusion.queries", "fusion.type_embed.weight", "language.bag.weight",
              "embodiment_embed.sawyer", "heads.sawyer.net.pos"):
        assert n in no_decay, n
    assert all(n in no_decay for n in names if n.endswith(".bias") or "norm" in n)
    assert "vision.stem.0.weight" in decay and "fusion.encoder.layers.0.self_attn.in_proj_weight" in decay
    assert all(names[n].ndim >= 2 for n in decay)


def test_warmup_then_cosine():
    f = WarmupCosine(steps=100, warmup=0.1, min_ratio=0.1)
    lrs = [f(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))  # rising during warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))  # then falling
    assert lrs[-1] == pytest.approx(0.1)


def test_data_order_is_seeded_resumable_and_shared_between_ranks():
    n, batch = 10, 4
    one = StreamSampler(n, batch, seed=3)
    steps = [one.indices_for_step(t) for t in range(10)]
    flat = [i for s in steps for i in s]
    for e in range(4):  # every epoch is a permutation, and epochs differ
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n:2 * n]
    assert StreamSampler(n, batch, seed=4).indices_for_step(0) != steps[0]
    # resuming at step 7 continues the same stream
    it = iter(StreamSampler(n, batch, seed=3, start=7 * batch))
    assert [next(it) for _ in range(2 * batch)] == steps[7] + steps[8]
    # two ranks split each global batch: together they take exactly what one process takes
    r0, r1 = (StreamSampler(n, batch, seed=3, rank=r, world=2) for r in (0, 1))
    for t in range(10):
        assert r0.indices_for_step(t) + r1.indices_for_step(t) == steps[t]
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        StreamSampler(n, batch, seed=3, rank=0, world=3)
