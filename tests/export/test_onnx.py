"""ONNX export: parity with the torch policy per head, a torch-free load, INT8 within tolerance, clear
errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from tests.runtime.test_torch_free import run_without_torch
from tests.training.conftest import write_dataset
from vlaforge import presets
from vlaforge.config import EmbodimentSpec, head_names
from vlaforge.export import ExportError, OnnxPolicy, export_onnx
from vlaforge.policy import Policy
from vlaforge.types import OBS_STATE

PARITY = 1e-4  # max |torch - onnx| in fp32, physical units
INT8_TOLERANCE = 0.05  # max |fp32 - int8| on validation frames, as a fraction of each action's q01..q99 span


def frame(policy, seed: int, task: str = "trace the upper path", emb: str = "sawyer") -> dict:
    rng = np.random.default_rng(seed)
    s = policy.config.image_size
    p = policy.config.embodiments[emb].state_dim
    return {"observation.images.corner": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
            OBS_STATE: rng.normal(size=p).astype(np.float32), "task": task, "embodiment": emb}


def tiny(head: str, **changes) -> Policy:
    torch.manual_seed(0)
    cfg = presets.get("tiny").replace(head=head, vision_keypoints=8, **changes)
    stats = {e: uniform_stats(s.state_dim, s.action_dim) for e, s in cfg.embodiments.items()}
    return Policy(cfg, stats).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per head: (torch policy, its export directory), exported once for the module."""
    out = {}
    for head in head_names():
        policy = tiny(head)
        root = tmp_path_factory.mktemp(head)
        policy.save(root / "ckpt")
        out[head] = (policy, export_onnx(root / "ckpt", root / "onnx", log=lambda *_: None))
    return out


@pytest.mark.parametrize("head", head_names())
def test_every_head_matches_torch_on_fixed_noise(exported, head):
    policy, path = exported[head]
    onnx = OnnxPolicy(path)
    assert onnx.manifest["head"] == head and onnx.config == policy.config
    for seed in range(3):
        f = frame(policy, seed)
        if policy.heads["sawyer"].generative:
            n, shape = 4, (4, policy.config.chunk_size, 4)
            want = policy.sample_chunks(f, n, generator=torch.Generator().manual_seed(seed))
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
            got = onnx.sample_chunks(f, n, noise=noise)
        else:
            want, got = policy.predict_chunk(f), onnx.predict_chunk(f)
        assert got.shape == want.shape and got.dtype == np.float32
        assert float(np.abs(got - want).max()) <= PARITY, (head, seed, float(np.abs(got - want).max()))
    # several samples per frame: n independent chunks; the batch of frames gives each frame's chunk
    samples = onnx.sample_chunks(frame(policy, 7), 5, generator=np.random.default_rng(0))
    assert samples.shape == (5, policy.config.chunk_size, 4)
    if policy.heads["sawyer"].generative or head == "tokens":
        assert float(samples.std(0).max()) > 0, "samples of a generative head should differ"
    frames = [frame(policy, s) for s in range(3)]
    batched = onnx.predict_chunks(frames)
    if not policy.heads["sawyer"].generative:
        for f, chunk in zip(frames, batched):
            np.testing.assert_allclose(chunk, onnx.predict_chunk(f), atol=1e-5)


def test_two_robots_of_different_sizes_in_one_export(tmp_path):
    policy = tiny("regression", embodiments={"sawyer": EmbodimentSpec(4, 4), "panda": EmbodimentSpec(9, 7)})
    policy.save(tmp_path / "ckpt")
    onnx = OnnxPolicy(export_onnx(tmp_path / "ckpt", tmp_path / "onnx", log=lambda *_: None))
    assert sorted(onnx.manifest["graphs"]) == ["panda", "sawyer"]
    frames = [frame(policy, 0), frame(policy, 1, emb="panda"), frame(policy, 2)]
    chunks = onnx.predict_chunks(frames)
    assert [c.shape[1] for c in chunks] == [4, 7, 4]
    for f, chunk in zip(frames, chunks):
        assert float(np.abs(chunk - policy.predict_chunk(f)).max()) <= PARITY


def test_the_export_runs_without_torch(exported, tmp_path):
    policy, path = exported["flow"]
    f = frame(policy, 3)
    noise = np.random.default_rng(0).standard_normal((2, policy.config.chunk_size, 4)).astype(np.float32)
    with torch.no_grad():
        want = policy.sample_chunks(f, 2, generator=None)  # shape only; the exact values below
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "image.npy", f["observation.images.corner"])
    np.save(tmp_path / "state.npy", f[OBS_STATE])
    code = f"""
    import numpy as np
    from vlaforge.export.onnx_policy import OnnxPolicy
    p = OnnxPolicy({str(path)!r})
    f = {{"observation.images.corner": np.load({str(tmp_path / 'image.npy')!r}),
          "observation.state": np.load({str(tmp_path / 'state.npy')!r}), "task": {f['task']!r}}}
    np.save({str(tmp_path / 'got.npy')!r},
            p.sample_chunks(f, 2, noise=np.load({str(tmp_path / 'noise.npy')!r})))
    """
    proc = run_without_torch(code)
    assert proc.returncode == 0 and "no torch: ok" in proc.stdout, proc.stderr[-3000:]
    got = np.load(tmp_path / "got.npy")
    assert got.shape == want.shape
    onnx_here = OnnxPolicy(path).sample_chunks(f, 2, noise=noise)
    np.testing.assert_array_equal(got, onnx_here)  # the same graphs and preprocessing with or without torch
    x = torch.from_numpy(noise)
    with torch.no_grad():  # and what the torch head makes of the same noise
        batch = policy.frame_to_batch(f)
        cond, _ = policy.encode(batch)
        ref = policy.heads["sawyer"].sample_from(cond.repeat_interleave(2, 0), x)
        ref = policy.normalizer.unnormalize(ref, "sawyer", "action").numpy()
    assert float(np.abs(got - ref).max()) <= PARITY


def test_int8_stays_within_its_tolerance_on_validation_frames(tmp_path):
    from vlaforge.data import ChunkDataset

    data = write_dataset(tmp_path / "data", episodes=4)
    policy = tiny("regression")
    policy.save(tmp_path / "ckpt")
    fp32 = OnnxPolicy(export_onnx(tmp_path / "ckpt", tmp_path / "fp32", log=lambda *_: None))
    out = export_onnx(tmp_path / "ckpt", tmp_path / "int8", quantize="int8", dataset=[data], calibration=16,
                      log=lambda *_: None)
    int8 = OnnxPolicy(out)
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_frames"] == 16
    assert ((out / "policy-sawyer.onnx").stat().st_size
            < (tmp_path / "fp32" / "policy-sawyer.onnx").stat().st_size)
    import onnx as onnx_lib

    ops = {n.op_type for n in onnx_lib.load(str(out / "policy-sawyer.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and ("MatMulInteger" in ops
                                                              or "DynamicQuantizeLinear" in ops)
    val = ChunkDataset(data, policy.config.chunk_size, split="val", augment=False, paraphrase=False,
                       progress=False, val_fraction=0.5)
    span = policy.stats["sawyer"]["action"]["q99"] - policy.stats["sawyer"]["action"]["q01"]
    worst = 0.0
    for i in range(0, len(val), 3):
        item = val.get(i)
        f = {"observation.images.corner": (item["observation.images.corner"].permute(1, 2, 0).numpy() * 255)
             .round().astype(np.uint8), OBS_STATE: item[OBS_STATE].numpy(), "task": item["task"]}
        worst = max(worst, float((np.abs(int8.predict_chunk(f) - fp32.predict_chunk(f)) / span).max()))
    assert 0 < worst <= INT8_TOLERANCE, worst


def test_bad_checkpoints_and_directories_are_clear_errors(exported, tmp_path):
    from tests.test_cli import run_cli

    policy, _ = exported["regression"]
    ckpt = tmp_path / "ckpt"
    policy.save(ckpt)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("what was there")
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    code, _, err = run_cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert code == 2 and "model.safetensors: not a readable safetensors file" in err, err
    (ckpt / "model.safetensors").unlink()
    code, _, err = run_cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert code == 2 and "missing model.safetensors" in err, err
    assert (out / "keep.txt").read_text() == "what was there"  # a failed export leaves the target alone
    code, _, err = run_cli(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(out)])
    assert code == 2 and "format" in err and "onnx" in err
    code, _, err = run_cli(["export", "--checkpoint", str(ckpt), "--out", str(out), "--device", "cuda"])
    assert code == 2 and "CUDAExecutionProvider" in err and "GPU" in err, err
    with pytest.raises(ExportError, match="not an exported policy"):
        OnnxPolicy(out)
    broken = tmp_path / "broken"
    shutil.copytree(exported["regression"][1], broken)
    (broken / "policy-sawyer.onnx").unlink()
    with pytest.raises(ExportError, match=r"missing \['policy-sawyer.onnx'\]"):
        OnnxPolicy(broken)
    with pytest.raises(ValueError, match=r"observation.images.corner: expected uint8 \(64, 64, 3\)"):
        OnnxPolicy(exported["regression"][1]).predict_chunk(frame(policy, 0) | {
            "observation.images.corner": np.zeros((32, 32, 3), np.uint8)})


def test_fp16_graphs_for_gpus_stay_close_to_fp32_and_the_cli_keeps_them_off_the_cpu(exported, tmp_path):
    from tests.test_cli import run_cli

    policy, fp32_dir = exported["flow"]
    policy.save(tmp_path / "ckpt")
    code, _, err = run_cli(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "x"),
                            "--precision", "fp16"])
    assert code == 2 and "fp16 runs natively on GPUs" in err, err
    # the conversion itself (what --device cuda exports); onnxruntime's CPU provider runs it too, slowly
    fp16 = OnnxPolicy(export_onnx(tmp_path / "ckpt", tmp_path / "fp16", precision="fp16",
                                  log=lambda *_: None))
    assert fp16.manifest["precision"] == "fp16"
    noise = np.random.default_rng(0).standard_normal((2, policy.config.chunk_size, 4)).astype(np.float32)
    f = frame(policy, 0)
    want = OnnxPolicy(fp32_dir).sample_chunks(f, 2, noise=noise)
    gap = float(np.abs(fp16.sample_chunks(f, 2, noise=noise) - want).max())
    assert 0 < gap < 2e-2, gap
