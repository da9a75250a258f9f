"""Does a second robot's data help? A robosuite Panda with few demonstrations, trained alone and trained
together with a Meta-World Sawyer's demonstrations in one policy (per-robot heads, state encoders and
statistics, one shared vision/language/fusion backbone), the same number of training steps. With
``--bimanual-demos N`` (N > 0) also a third robot: robosuite's two facing Pandas (18-D state, 14-D action) on
two-arm-lift-panda, trained alone, and all three robots in one policy.

    .venv/bin/python benchmarks/multi_embodiment.py --root runs/multi [--panda-demos 10] [--steps 1800]
        [--bimanual-demos 10]

Data (collected into ROOT/data, reused when present): ``--panda-demos`` scripted demonstrations of each Panda
task (``--panda-tasks``, default lift-panda) with the ``agentview`` camera at 64 px, and the ``make demo``
Sawyer data (50 demonstrations each of drawer-open, drawer-close and button-press-topdown, ``corner`` camera,
64 px). Both runs use the ``demo`` training recipe (compact policy, lr 2e-3) in fp32 (``auto`` may time the
two configurations differently and train one in bf16), with the same steps and batch; the mixed run draws each
robot for half of every batch (``vlaforge.data.mixed``), so the Panda sees half the samples it sees alone.
Evaluation: 20 episodes per task on seeds 1000-1019 (Panda, and the Sawyer tasks for the mixed policy),
success with Wilson 95% intervals. Runs and evaluations found in ROOT are reused, an interrupted run is
resumed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write

SAWYER_TASKS = ("drawer-open-v3", "drawer-close-v3", "button-press-topdown-v3")


BIMANUAL_TASKS = ("two-arm-lift-panda",)


def collect_data(root: Path, panda_tasks: list[str], panda_demos: int,
                 bimanual_demos: int) -> dict[str, Path]:
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.data.reader import DatasetReader

    out = {}
    robots = [("panda", panda_tasks, panda_demos, ("agentview",)),
              ("sawyer", list(SAWYER_TASKS), 50, ("corner",))]
    if bimanual_demos:
        robots.append(("bimanual", list(BIMANUAL_TASKS), bimanual_demos, ("agentview",)))
    for name, tasks, n, cams in robots:
        path = root / "data" / name
        done = path.is_dir() and DatasetReader(path).num_episodes >= n * len(tasks)
        if not done:
            summary = collect(CollectConfig(out=path, tasks=tasks, episodes_per_task=n, image_size=64,
                                            cameras=cams, resume=path.is_dir(), workers=1))
            print("\n".join(summary.lines()))
        out[name] = path
    return out


def train_and_eval(name: str, data: str, tasks: dict[str, tuple[str, ...]], root: Path, steps: int,
                   seed: int, *overrides: str) -> dict:
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    run = root / name
    train_or_resume(build_config("demo", [f"dataset={data}", f"out={run}", "progress=false", f"steps={steps}",
                                          f"seed={seed}", "bf16=false", *overrides]))
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    end = next(e for e in log if e["event"] == "end")
    precision = next((e for e in log if e["event"] == "precision"), {})
    per_task = {}
    for robot, robot_tasks in tasks.items():
        res_file = root / f"{name}-eval-{robot}" / "results.json"
        if not res_file.is_file():
            evaluate(EvalConfig(checkpoint=str(run / FINAL), tasks=robot_tasks, episodes=20, seed=1000,
                                workers=1, videos=1, out=str(res_file.parent)), print_table=False)
        res = json.loads(res_file.read_text())
        for t in robot_tasks:
            per_task[t] = {"robot": robot, "success_rate": res["tasks"][t]["success_rate"],
                           "ci95": res["tasks"][t]["ci95"], "episodes": res["tasks"][t]["episodes"]}
    return {"name": name, "dataset": data, "train_minutes": round(end["time"] / 60, 2), "steps": end["step"],
            "precision": precision.get("precision"), "tasks": per_task}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/multi")
    ap.add_argument("--panda-tasks", default="lift-panda")
    ap.add_argument("--panda-demos", type=int, default=10)
    ap.add_argument("--bimanual-demos", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="multi_embodiment")
    args = ap.parse_args()
    root = Path(args.root)
    panda_tasks = [t for t in args.panda_tasks.split(",") if t]
    data = collect_data(root, panda_tasks, args.panda_demos, args.bimanual_demos)
    panda, sawyer = data["panda"], data["sawyer"]
    alone = {"panda": tuple(panda_tasks)}
    steps, seed = args.steps, args.seed
    runs = [train_and_eval("panda-alone", str(panda), alone, root, steps, seed, "policy.cameras=agentview"),
            # the policy's camera keeps the demo preset's name (corner); the Panda's agentview feeds it
            train_and_eval("panda+sawyer", f"{panda},{sawyer}", alone | {"sawyer": SAWYER_TASKS}, root, steps,
                           seed)]
    all_tasks = [*panda_tasks, *SAWYER_TASKS]
    if "bimanual" in data:
        bimanual = {"bimanual": BIMANUAL_TASKS}
        runs += [train_and_eval("bimanual-alone", str(data["bimanual"]), bimanual, root, steps, seed,
                                "policy.cameras=agentview"),
                 train_and_eval("panda+sawyer+bimanual", f"{panda},{sawyer},{data['bimanual']}",
                                alone | {"sawyer": SAWYER_TASKS} | bimanual, root, steps, seed)]
        all_tasks += BIMANUAL_TASKS
    rows = []
    for task in all_tasks:
        row = {"task": task}
        for r in runs:
            t = r["tasks"].get(task)
            row[r["name"]] = f"{t['success_rate']:.0%} [{t['ci95'][0]:.0%}-{t['ci95'][1]:.0%}]" if t else "-"
        rows.append(row)
    rows.append({"task": "training minutes", **{r["name"]: r["train_minutes"] for r in runs}})
    table = markdown_table(rows, list(rows[0]))
    bi = (f"; two-arm Panda: {args.bimanual_demos} per task (robosuite, agentview 64 px)"
          if args.bimanual_demos else "")
    table += (f"\nPanda: {args.panda_demos} demonstrations per task (robosuite, agentview 64 px); Sawyer: 50 "
              f"per task (Meta-World, corner 64 px){bi}. Every run: the demo recipe, {args.steps} steps of "
              f"batch 64, training seed {args.seed}; a mixed run gives each robot an equal share of every "
              f"batch. 20 episodes per task on seeds 1000-1019, success [Wilson 95% interval].\n")
    payload = {"runs": runs, "panda_demos": args.panda_demos, "bimanual_demos": args.bimanual_demos,
               "steps": args.steps, "machine": machine()}
    write(args.name, payload, table, command("multi_embodiment.py"))


if __name__ == "__main__":
    main()
