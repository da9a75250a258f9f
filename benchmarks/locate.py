"""Can the image encoder find a small target in a layout it has not seen? A probe for issue 18, minutes
instead of the half hour a policy training and its rollouts take.

    .venv/bin/python benchmarks/locate.py [--data runs/small/data] [--variants corner,corner@1,corner+corner4]
        [--steps 1500]

Each variant trains the ``demo`` policy's vision encoder (its ResNet and spatial-softmax keypoints) and a
small MLP to predict the recorded object and goal positions (``observation.environment_state``,
standardized per task as ``policy.aux_env_per_task`` does) from the images alone, plus which task it is.
Training frames: one in three frames of the small-target dataset (``benchmarks/small_targets.py``: 50
scripted demonstrations per task, seeds 0-49). Test frames: the scripted expert's frames 0, 30 and 60 on 30
unseen layouts per task (seeds 1000-1029). The table gives, per task, the median distance between the
predicted and the true goal and object, the share of goals placed within 5 cm (the reach / pick-place
success radius), and the error of always guessing the task's mean goal.

Variants: cameras joined by ``+`` (each encoded by the shared encoder), ``@K`` for the keypoints' feature map
(``policy.vision_keypoint_stage``; default the last).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import command, machine, markdown_table, write

TASKS = ("reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3")
TEST_SEEDS = range(1000, 1030)
TEST_STEPS = (0, 30, 60)
GOAL, OBJECT = slice(6, 9), slice(0, 3)  # in observation.environment_state (sim/metaworld.py)


def parse_variant(v: str) -> tuple[tuple[str, ...], int]:
    cams, _, stage = v.partition("@")
    return tuple(c for c in cams.split("+") if c), int(stage) if stage else -1


def load_train(data: Path, cameras: tuple[str, ...], every: int):
    """Every ``every``-th frame of the dataset: uint8 images (N, cams, 3, S, S), env states (N, E), task
    names."""
    import torch

    from vlaforge.data import ChunkDataset
    from vlaforge.types import image_key

    ds = ChunkDataset(data, 1, split="train", val_fraction=0.0, augment=False, paraphrase=False,
                      env_state=True, progress=False)
    missing = [c for c in cameras if image_key(c) not in ds.camera_keys]
    if missing:
        raise SystemExit(f"error: {data} has no camera {missing}; it has {ds.camera_keys}")
    episodes = ds.reader.episodes
    frames = ds._frames[::every]
    maps = ds._maps()
    images = np.stack([np.stack([maps[image_key(c)][f] for c in cameras]) for f in frames])  # (N, C, S, S, 3)
    return (torch.from_numpy(images).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(ds._env[frames]),
            [episodes[ds._ep_of[f]].task_name for f in frames])


def render_test(cameras: tuple[str, ...], size: int):
    """The scripted expert's frames TEST_STEPS on the unseen layouts TEST_SEEDS, for every task."""
    import torch

    from vlaforge.sim.metaworld import MetaWorldEnv
    from vlaforge.types import OBS_ENV_STATE, image_key

    images, env_states, tasks = [], [], []
    for task in TASKS:
        env = MetaWorldEnv(task, cameras=cameras, image_size=size)
        try:
            for seed in TEST_SEEDS:
                obs, _ = env.reset(seed=seed)
                for t in range(max(TEST_STEPS) + 1):
                    if t in TEST_STEPS:
                        images.append(np.stack([obs[image_key(c)] for c in cameras]))
                        env_states.append(obs[OBS_ENV_STATE].copy())
                        tasks.append(task)
                    obs, _, terminated, truncated, _ = env.step(env.expert_action())  # clipped
                    if terminated or truncated:
                        break
        finally:
            env.close()
    return (torch.from_numpy(np.stack(images)).permute(0, 1, 4, 2, 3).contiguous(),
            torch.from_numpy(np.stack(env_states)).float(), tasks)


def probe(variant: str, train, test, steps: int, seed: int = 0) -> dict:
    import torch
    from torch import nn
    from tqdm import tqdm

    from vlaforge import presets
    from vlaforge.data.dataset import ENV_SPREAD_FLOOR
    from vlaforge.models.encoders import VisionEncoder
    from vlaforge.precision import resolve_bf16

    torch.manual_seed(seed)
    cameras, stage = parse_variant(variant)
    x, env, tasks = train
    xt, env_t, tasks_t = test
    names = list(TASKS)
    k = torch.tensor([names.index(t) for t in tasks])
    kt = torch.tensor([names.index(t) for t in tasks_t])
    mu = torch.stack([env[k == i].mean(0) for i in range(len(names))])
    sd = torch.stack([env[k == i].std(0) for i in range(len(names))]).clamp_min(ENV_SPREAD_FLOOR)
    cfg = presets.get("demo")
    enc = VisionEncoder(cfg.vision_channels, cfg.vision_max_grid, cfg.vision_keypoints, keypoint_stage=stage)
    width = enc.out_channels + 2 * cfg.vision_keypoints
    head = nn.Sequential(nn.Linear(len(cameras) * width + len(names), 256), nn.GELU(),
                         nn.Linear(256, env.shape[1]))
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], 1e-3, weight_decay=1e-4)
    bf16 = resolve_bf16("auto").bf16

    def forward(images: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        feats = []
        for c in range(images.shape[1]):
            tokens, kp = enc(images[:, c].float() / 255)
            feats += [tokens.mean(1), kp.to(tokens.dtype)]
        return head(torch.cat([*feats, nn.functional.one_hot(task, len(names)).to(feats[0].dtype)], 1))

    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"locate {variant}", unit="step")
    dims = [0, 1, 2, 6, 7, 8]  # first object, goal (the second object slot is empty on these tasks)
    for _ in bar:
        b = torch.randint(0, len(x), (64,))
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            pred = forward(x[b], k[b])
        loss = ((pred.float() - (env[b] - mu[k[b]]) / sd[k[b]]) ** 2)[:, dims].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    train_s = time.perf_counter() - t0
    enc.eval()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        pred = torch.cat([forward(xt[i:i + 128], kt[i:i + 128]).float() for i in range(0, len(xt), 128)])
    pred = pred * sd[kt] + mu[kt]
    out = {"variant": variant, "cameras": list(cameras), "keypoint_stage": stage, "steps": steps,
           "train_s": round(train_s, 1), "precision": "bf16" if bf16 else "fp32", "tasks": {}}
    for i, task in enumerate(names):
        m = kt == i
        goal = (pred[m][:, GOAL] - env_t[m][:, GOAL]).norm(dim=1)
        obj = (pred[m][:, OBJECT] - env_t[m][:, OBJECT]).norm(dim=1)
        guess = (mu[i][GOAL] - env_t[m][:, GOAL]).norm(dim=1)
        out["tasks"][task] = {"goal_err_cm_median": round(100 * float(goal.median()), 2),
                              "goal_within_5cm": round(float((goal < 0.05).float().mean()), 3),
                              "object_err_cm_median": round(100 * float(obj.median()), 2),
                              "mean_guess_goal_err_cm_median": round(100 * float(guess.median()), 2),
                              "frames": int(m.sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/small/data", help="the small-target dataset (small_targets.py)")
    ap.add_argument("--variants", default="corner,corner+corner4")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=3, help="train on every N-th recorded frame")
    ap.add_argument("--name", default="locate")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    variants = [v for v in args.variants.split(",") if v]
    all_cams = tuple(dict.fromkeys(c for v in variants for c in parse_variant(v)[0]))
    x, env, tasks = load_train(Path(args.data), all_cams, args.every)
    test = render_test(all_cams, x.shape[-1])
    cells = []
    for v in variants:
        ix = [all_cams.index(c) for c in parse_variant(v)[0]]
        cells.append(probe(v, (x[:, ix], env, tasks), (test[0][:, ix], *test[1:]), args.steps))
    rows = []
    for c in cells:
        row = {"variant": c["variant"]}
        for t, r in c["tasks"].items():
            row[t.removesuffix("-v3")] = (f"{r['goal_err_cm_median']:.1f} cm "
                                          f"({r['goal_within_5cm']:.0%} < 5 cm), "
                                          f"object {r['object_err_cm_median']:.1f}")
        row["train s"] = c["train_s"]
        rows.append(row)
    guess = {t.removesuffix("-v3"): f"{r['mean_guess_goal_err_cm_median']:.1f} cm"
             for t, r in cells[0]["tasks"].items()}
    rows.append({"variant": "guess the task's mean goal", **guess, "train s": "-"})
    table = markdown_table(rows, list(rows[0]))
    table += (f"\nMedian error of the predicted goal (share within 5 cm) and object positions on "
              f"{len(TEST_SEEDS)} unseen layouts per task (expert frames {', '.join(map(str, TEST_STEPS))}), "
              f"after {args.steps} steps of batch 64 on one in {args.every} recorded frames of 50 "
              f"demonstrations per task. `camA+camB`: both views; `@K`: keypoints from vision stage K "
              f"(default: the last).\n")
    write(args.name, {"cells": cells, "data": args.data, "machine": machine()}, table,
          command("locate.py"))


if __name__ == "__main__":
    main()
