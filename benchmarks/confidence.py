"""Confidence benchmark: how well the confidence score separates in-distribution frames from shifted ones,
and what it costs per observation.

In-distribution: frames of the dataset's validation split (``--split``), never trained on; half of them
calibrate the threshold (``--percentile``), the other half are scored. Shifted versions of that half:

- ``unseen_instruction``: the instruction of a task the dataset does not contain (``--unseen-task``);
- ``image_noise``: Gaussian pixel noise, std ``--noise-std`` (0-255 scale);
- ``occlusion``: a grey square over ``--occlusion`` of the image side at a random place;
- ``state_out_of_range``: every state dimension 3 training ranges (q01..q99) beyond q01 or q99.

Per shift, from one scoring pass of one estimator (``ConfidenceEstimator(density=True)``): AUROC (the
probability that an in-distribution frame scores higher than a shifted one; 0.5 = chance) of the head's own
method alone (``head``: samples / entropy / tta), of the feature density alone (``density``: the largest
normalized part over language (distance to the nearest known instruction), image and state (Mahalanobis)) and
of the combined score the estimator uses (``combined``), plus per-modality AUROCs of the density parts; the
mean combined score and the share of frames stopped at the calibrated thresholds (combined and head alone).
Latency: median and p90 of ``estimate(obs)`` per ``n_samples`` (after warm-up), with and without the density
part, beside ``predict_chunk``.

    .venv/bin/python benchmarks/confidence.py --checkpoint CKPT --dataset DATA [--frames 200] [--n-samples 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vlaforge.benchmarking import command, machine, markdown_table, write

RESULTS = Path(__file__).resolve().parent / "results"



def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties share their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg), from ranks (Mann-Whitney U / (n_pos * n_neg))."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    r = _rankdata(np.concatenate([pos, neg]))
    u = r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def frames_from_dataset(ds, policy, n: int, seed: int) -> list[dict]:
    """Up to n frame dicts (uint8 (S, S, 3) images) from dataset items."""
    from vlaforge.types import EMBODIMENT, OBS_STATE, TASK, image_key

    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    keys = [image_key(c) for c in policy.config.cameras]
    out = []
    for i in sorted(idx.tolist()):
        it = ds[i]
        f = {k: (it[k].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8) for k in keys}
        f[OBS_STATE] = it[OBS_STATE].numpy().astype(np.float32)
        f[TASK], f[EMBODIMENT] = it[TASK], it[EMBODIMENT]
        out.append(f)
    # read in dataset order (sequential decoding), return in random order: the calibration / test halves must
    # both mix every task (in dataset order the first half held only the first tasks, so the test half's
    # "in-distribution" frames were tasks the density statistics had never seen)
    order = np.random.default_rng(seed + 1).permutation(len(out))
    return [out[i] for i in order]


def shifted(frames: list[dict], kind: str, policy, args, rng: np.random.Generator) -> list[dict]:
    from vlaforge.types import EMBODIMENT, OBS_STATE, TASK, image_key

    keys = [image_key(c) for c in policy.config.cameras]
    out = []
    for f in frames:
        g = dict(f)
        if kind == "unseen_instruction":
            g[TASK] = args.unseen_instruction
        elif kind == "image_noise":
            for k in keys:
                g[k] = np.clip(f[k] + rng.normal(0, args.noise_std, f[k].shape), 0, 255).astype(np.uint8)
        elif kind == "occlusion":
            for k in keys:
                s = f[k].shape[0]
                side = max(1, int(round(args.occlusion * s)))
                y, x = rng.integers(0, s - side + 1, size=2)
                img = f[k].copy()
                img[y:y + side, x:x + side] = 127
                g[k] = img
        elif kind == "state_out_of_range":
            st = policy.stats[f[EMBODIMENT]][OBS_STATE]
            width = st["q99"] - st["q01"]
            up = rng.random(width.shape) < 0.5
            g[OBS_STATE] = np.where(up, st["q99"] + 3 * width, st["q01"] - 3 * width).astype(np.float32)
        out.append(g)
    return out


SHIFTS = ("unseen_instruction", "image_noise", "occlusion", "state_out_of_range")
# (name, score_table key): the head's method alone, the density alone, the combined score
VARIANTS = (("head", "head_score"), ("density", "density_score"), ("combined", "score"))
PARTS = ("head", "language", "image", "state", "pixels")


def _known(x: np.ndarray) -> np.ndarray:
    """Without NaN (frames of an embodiment that had too few calibration frames for density statistics)."""
    return x[~np.isnan(x)]


def _means(t: dict, thresholds: dict, digits: int | None = None) -> dict:
    """Mean scores and the shares stopped at the calibrated thresholds, for one score table."""
    stopped_head = float((t["head_score"] < thresholds["head"]).mean())
    out = {"mean_score": float(t["score"].mean()), "mean_head_score": float(t["head_score"].mean()),
           # without density statistics the estimator's score is the head's own
           "stopped": float((t["score"] < thresholds["combined"]).mean()) if "combined" in thresholds
           else stopped_head,
           "stopped_head": stopped_head}
    if "density_score" in t:
        out["mean_density_score"] = float(np.nanmean(t["density_score"]))
    return out if digits is None else {k: round(v, digits) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="policy checkpoint directory")
    ap.add_argument("--dataset", required=True, help="the dataset the policy was trained on")
    ap.add_argument("--split", default="val", help="split of in-distribution frames: val (default) or all")
    ap.add_argument("--frames", type=int, default=200,
                    help="in-distribution frames (half calibrate, half test)")
    ap.add_argument("--n-samples", type=int, default=5)
    ap.add_argument("--method", default="auto", help="auto | samples | entropy | tta")
    ap.add_argument("--percentile", type=float, default=5.0, help="calibration percentile")
    ap.add_argument("--unseen-task", default=None, help="a task not in the dataset (default: the first such)")
    ap.add_argument("--noise-std", type=float, default=50.0)
    ap.add_argument("--occlusion", type=float, default=0.5, help="side of the occluding square / image side")
    ap.add_argument("--latency-n", default="2,4,8,16,32", help="n_samples values timed")
    ap.add_argument("--latency-calls", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--save-calibration", action="store_true",
                    help="write confidence.json into the checkpoint")
    ap.add_argument("--name", default="confidence", help="results file name under benchmarks/results/")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vlaforge.data import ChunkDataset, DatasetReader
    from vlaforge.online.confidence import ConfidenceEstimator
    from vlaforge.policy import Policy
    from vlaforge.sim.instructions import METAWORLD_TASKS, instruction

    policy = Policy.load(args.checkpoint)
    trained_tasks = {e.task_name for e in DatasetReader(args.dataset).episodes}
    unseen = args.unseen_task or next(t for t in METAWORLD_TASKS if t not in trained_tasks)
    args.unseen_instruction = instruction(unseen)
    ds = ChunkDataset(args.dataset, policy.config.chunk_size, split=args.split, augment=False,
                      paraphrase=False)
    frames = frames_from_dataset(ds, policy, args.frames, args.seed)
    if len(frames) < 8:
        raise SystemExit(f"--split {args.split}: expected at least 8 frames, got {len(frames)} "
                         f"(try --split all)")
    cal, test = frames[: len(frames) // 2], frames[len(frames) // 2:]
    est = ConfidenceEstimator(policy, n_samples=args.n_samples, method=args.method, seed=args.seed)
    t0 = time.perf_counter()
    threshold = est.calibrate(cal, percentile=args.percentile)
    if args.save_calibration:
        est.save(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    thresholds = (est.calibration or {}).get("thresholds", {})
    t_in = est.score_table(test)
    rows = [{"set": "in_distribution", "frames": len(test), **_means(t_in, thresholds, 4)}]
    part_rows = []
    per_shift = {}
    for kind in SHIFTS:
        t = est.score_table(shifted(test, kind, policy, args, rng))
        aurocs = {name: auroc(_known(t_in[key]), _known(t[key])) for name, key in VARIANTS if key in t}
        # higher part = less confident
        parts = {m: auroc(-_known(t_in[m]), -_known(t[m])) for m in PARTS if m in t}
        per_shift[kind] = {"auroc": aurocs.get("combined", aurocs["head"]), "aurocs": aurocs,
                           "auroc_parts": parts, **_means(t, thresholds)}
        rows.append({"set": kind, "frames": len(t["score"]),
                     **{f"auroc_{k}": round(v, 3) for k, v in aurocs.items()}, **_means(t, thresholds, 4)})
        part_rows.append({"set": kind, **{m: round(v, 3) for m, v in parts.items()}})
    score_s = time.perf_counter() - t0

    obs = test[0]
    lat_rows = []

    def timed(fn) -> tuple[float, float]:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(args.latency_calls):
            t = time.perf_counter()
            fn()
            ts.append(1000 * (time.perf_counter() - t))
        return float(np.median(ts)), float(np.percentile(ts, 90))

    p50, p90 = timed(lambda: policy.predict_chunk(obs))
    lat_rows.append({"what": "predict_chunk", "n_samples": 1, "p50_ms": round(p50, 2),
                     "p90_ms": round(p90, 2)})
    for n in [int(x) for x in args.latency_n.split(",") if x.strip()]:
        if est.method in ("samples", "tta") and n < 2:
            continue
        for density in (False, True) if est.combined else (False,):
            e = est.replace(n_samples=n, density=density)
            p50, p90 = timed(lambda: e.estimate(obs))
            what = f"estimate ({est.method}{' + density' if density else ''})"
            lat_rows.append({"what": what, "n_samples": n, "p50_ms": round(p50, 2), "p90_ms": round(p90, 2)})

    payload = {"checkpoint": str(args.checkpoint), "dataset": str(args.dataset), "head": policy.config.head,
               "method": est.method, "n_samples": args.n_samples, "split": args.split,
               "threshold": threshold, "thresholds": thresholds, "density": est.combined,
               "percentile": args.percentile, "calibration": est.calibration,
               "unseen_task": unseen, "noise_std": args.noise_std, "occlusion": args.occlusion,
               "in_distribution": {"frames": len(test), **_means(t_in, thresholds)},
               "shifts": per_shift, "latency": lat_rows, "scoring_wall_s": score_s, "machine": machine()}
    variants = [name for name, key in VARIANTS if key in t_in]
    table = (f"{policy.config.head} head, method `{est.method}`"
             f"{' + feature density' if est.combined else ''}, n_samples {args.n_samples}, threshold "
             f"{threshold:.4f} (p{args.percentile:g} of {len(cal)} calibration frames); score: higher = more "
             f"confident; AUROC of the head's method alone, the density alone and the combined score; "
             f"stopped = share below the calibrated threshold (combined; head alone)\n\n"
             + markdown_table(rows, ["set", "frames", *[f"auroc_{v}" for v in variants], "mean_score",
                                     "stopped", "stopped_head"])
             + ("\nAUROC of each normalized part alone\n\n" + markdown_table(part_rows, ["set", *PARTS])
                if est.combined else "")
             + "\nLatency of one `estimate(obs)` (torch threads: " + str(args.threads) + ")\n\n"
             + markdown_table(lat_rows, ["what", "n_samples", "p50_ms", "p90_ms"]))
    _plot_latency(lat_rows, RESULTS / f"{args.name}.png")
    write(args.name, payload, table, command("confidence.py", argv))
    return payload


def _plot_latency(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    est = [r for r in rows if r["what"].startswith("estimate")]
    if not est:
        return
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for what in dict.fromkeys(r["what"] for r in est):
        sel = [r for r in est if r["what"] == what]
        ax.plot([r["n_samples"] for r in sel], [r["p50_ms"] for r in sel], "o-", label=f"{what} p50")
    ax.axhline(rows[0]["p50_ms"], color="tab:gray", ls="--", label="predict_chunk p50")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n_samples")
    ax.set_ylabel("ms")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
