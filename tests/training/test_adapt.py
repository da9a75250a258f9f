"""Few-shot adaptation: LoRA adapters start as a no-op and merge into plain weights with the same outputs;
each ``vlaforge adapt`` method changes only what it should; a dataset of another robot is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from tests.training.conftest import tensors, write_dataset
from vlaforge import presets
from vlaforge.policy import Policy


def tiny(seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    cfg = presets.get("tiny").replace(head="regression", image_size=64, language_encoder="hash")
    return Policy(cfg, {"sawyer": uniform_stats(4, 4)})


def frames(policy: Policy, n: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    s = policy.config.image_size
    return [{"observation.images.corner": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
             "observation.state": rng.normal(size=4).astype(np.float32), "task": f"task {i}",
             "embodiment": "sawyer"} for i in range(n)]


def test_lora_starts_as_a_no_op_and_merges_into_the_same_outputs():
    from vlaforge.training.lora import add_lora, merge_lora

    policy = tiny().eval()
    before = [policy.predict_chunk(f) for f in frames(policy)]
    keys = set(policy.state_dict())
    names = add_lora(policy, rank=8)
    assert names and all(".parametrizations." in n for n in names)
    assert any("in_proj_weight" in n for n in names) and any("linear1" in n for n in names)
    for f, b in zip(frames(policy), before):
        np.testing.assert_array_equal(policy.predict_chunk(f), b)  # B = 0: exactly the same policy
    with torch.no_grad():  # as if trained: every adapter moves its weight
        for n, p in policy.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.02)
    adapted = [policy.predict_chunk(f) for f in frames(policy)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(adapted, before)) > 1e-3
    assert merge_lora(policy) == len(names) // 2
    assert set(policy.state_dict()) == keys  # plain weights again, the original names and shapes
    for f, a in zip(frames(policy), adapted):
        np.testing.assert_allclose(policy.predict_chunk(f), a, atol=1e-5)
    with pytest.raises(ValueError, match="LoRA groups: unknown \\['fuson'\\]"):
        add_lora(policy, 4, groups=("fuson",))


@pytest.fixture(scope="module")
def checkpoint_and_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("adapt")
    tiny().save(root / "ckpt")
    data = write_dataset(root / "new", episodes=4, length=10)
    other = write_dataset(root / "panda", episodes=2, length=10, robot_type="panda", state_dim=9,
                          action_dim=7)
    return root / "ckpt", data, other


@pytest.mark.parametrize("method", ["scratch", "head", "full", "lora"])
def test_each_method_trains_what_it_should(checkpoint_and_data, tmp_path, method):
    from vlaforge.apps.adapt import AdaptConfig, run_adapt

    ckpt, data, _ = checkpoint_and_data
    res = run_adapt(AdaptConfig(checkpoint=str(ckpt), dataset=str(data), out=str(tmp_path), method=method,
                                steps=6, batch_size=4, threads=1, progress=False))
    assert (res["lora_merged"] > 0) == (method == "lora") and res["loss_end"] > 0 and res["train_s"] > 0
    old, new = tensors(ckpt / "model.safetensors"), tensors(tmp_path / "checkpoint" / "model.safetensors")
    assert old.keys() == new.keys()  # LoRA merged: an ordinary checkpoint
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    heads = {k for k in old if k.startswith("heads.")}
    assert changed & heads, "the action heads should train with every method"
    outside = changed - heads
    if method == "head":
        assert not outside
    elif method == "lora":  # the weight matrices of the fusion group (the transformer and its projections)
        fusion = {n for n, _ in tiny().parameter_groups()["fusion"]}
        assert outside and outside <= fusion and all(old[k].ndim == 2 for k in outside), sorted(outside)
        assert any(k.startswith("fusion.encoder.") for k in outside)
    else:
        assert any(k.startswith("vision.") for k in outside)
    Policy.load(tmp_path / "checkpoint").predict_chunk(frames(tiny())[0])


def test_a_dataset_of_another_robot_is_a_clear_error(checkpoint_and_data, tmp_path):
    from tests.test_cli import _one_error_line, run_cli

    ckpt, data, other = checkpoint_and_data
    code, out, err = run_cli(["adapt", "--checkpoint", str(ckpt), "--dataset", str(other), "--out",
                              str(tmp_path), "--steps", "2"])
    _one_error_line(code, err, "the dataset's robot 'panda' is not one of the checkpoint's ['sawyer']")
    code, _, err = run_cli(["adapt", "--checkpoint", str(ckpt), "--dataset", str(data), "--out",
                            str(tmp_path), "--method", "lorra"])
    _one_error_line(code, err, "unknown adaptation method 'lorra'; did you mean 'lora'")
