"""Does the policy follow the instruction? Tasks that share one scene and start state and differ only in what
is asked: on Meta-World's reach-v3 scene, "touch the puck" (reach-puck-v3: hand within 5 cm of the puck) and
"move the gripper to the goal marker" (reach-goal-v3: Meta-World's own reach success).

One policy is trained on 100 demonstrations of each (``--demos``; 50 left reach-goal at 84%, issue 18),
then evaluated on seeds 1000-1019 with the right instruction and with the instructions swapped. Goals:
>= 90% success with the right instruction; with a swapped instruction the originally intended task succeeds
<= 10% of the time. The same swap test runs on a
checkpoint trained on MT10's shared-scene pairs when given (--mt10-checkpoint): drawer open/close, window
open/close.

    .venv/bin/python benchmarks/grounding.py [--root runs/grounding] [--expert centred] [--name grounding] \\
        [--mt10-checkpoint runs/mt10/train-flow/checkpoint [--mt10-only]]

``--expert centred`` records reach-goal-v3 with the expert that aims the gripper centre, not the hand, at the
goal (``vlaforge.sim.metaworld.CENTRED_EXPERT_TASKS``; Meta-World's own expert leaves the gripper centre
0.45 cm inside the 5 cm success radius), into a dataset of its own (``data-centred``). Other cameras or image
sizes (``--set policy.cameras=corner,corner4 --set policy.image_size=96``) get directories of their own
(``data-centred-corner+corner4-96px``, ``train-...``, ``eval-...``), and so do other ``--demos`` counts
(``-50demos``); evaluations on other than 20 seeds are kept apart (``eval-...-50ep``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, write

PAIRS = [("reach-goal-v3", "reach-puck-v3")]
MT10_PAIRS = [("drawer-open-v3", "drawer-close-v3"), ("window-open-v3", "window-close-v3")]
DEMOS = 100  # demonstrations per task; with 50, reach-goal-v3 scored 84% on 50 seeds, with 100 98%


def swapped_experts(pairs, episodes: int, max_steps: int = 300) -> dict[str, float]:
    """What imitating the scripted experts would do under a swapped instruction: for each pair (a, b), how
    often b's expert, playing on a's scene (seeds 1000+), does a (and the same on b's scene). State only.
    Window-close's expert opens window-open's window: a policy that copies the experts faithfully "leaks"."""
    from vlaforge.sim.episode import run_episode
    from vlaforge.sim.metaworld import MetaWorldEnv, derived_tasks

    out = {}
    for scene, told in [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]:
        env = MetaWorldEnv(scene, cameras=(), max_steps=max_steps)
        spec = derived_tasks().get(told)

        def told_expert(obs, env=env, spec=spec, told=told):
            return spec.expert(env) if spec else env.scripted_action(told)  # the env clips to [-1, 1]

        try:
            wins = sum(run_episode(env, told_expert, seed=seed, stop_on_success=True).success
                       for seed in range(1000, 1000 + episodes))
        finally:
            env.close()
        out[scene] = wins / episodes
    return out


def swap_test(ckpt: str, pairs, episodes: int, workers: int, out: Path,
              execute_steps: int | None = None) -> list[dict]:
    """For each pair (a, b): success of a and b with their own instructions, and of a and b when each is given
    the other's instruction (the intended task should then fail); beside it, how often the swapped
    instruction's scripted expert does the intended task (``swapped_experts``)."""
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim.metaworld import instruction

    tasks = tuple(t for p in pairs for t in p)
    right = evaluate(EvalConfig(checkpoint=ckpt, tasks=tasks, episodes=episodes, seed=1000, workers=workers,
                                execute_steps=execute_steps, out=str(out / "right")), print_table=False)
    swapped_instr = {a: instruction(b) for a, b in pairs} | {b: instruction(a) for a, b in pairs}
    swapped = evaluate(EvalConfig(checkpoint=ckpt, tasks=tasks, episodes=episodes, seed=1000, workers=workers,
                                  execute_steps=execute_steps, instructions=swapped_instr,
                                  out=str(out / "swapped")), print_table=False)
    experts = swapped_experts(pairs, episodes)
    rows = []
    for a, b in pairs:
        for task, other in ((a, b), (b, a)):
            rows.append({"scene task": task, "instruction given": instruction(task),
                         "success (right instruction)": right["tasks"][task]["success_rate"],
                         "instruction swapped to": instruction(other),
                         "intended task still succeeds (swapped)": swapped["tasks"][task]["success_rate"],
                         "the same, swapped instruction's expert": experts[task]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/grounding")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--demos", type=int, default=DEMOS,
                    help=f"demonstrations per task (default {DEMOS}; others get directories of their own)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mt10-checkpoint", default="")
    ap.add_argument("--mt10-only", action="store_true",
                    help="only the swap test on --mt10-checkpoint: no reach-scene dataset, training or rows")
    ap.add_argument("--set", action="append", default=[], help="training override (repeatable)")
    ap.add_argument("--expert", default="metaworld", help="the demonstrations' expert (metaworld, centred)")
    ap.add_argument("--name", default="grounding", help="results file name under benchmarks/results/")
    ap.add_argument("--execute-steps", type=int, default=None,
                    help="actions executed per chunk in evaluation (default: half the chunk)")
    args = ap.parse_args()
    if args.mt10_only and not args.mt10_checkpoint:
        ap.error("--mt10-only: expected --mt10-checkpoint DIR (the MT10 policy to test), got none")

    from vlaforge.apps.multitask import data_suffix, recorded_dataset
    from vlaforge.training import build_config
    from vlaforge.training.trainer import train_or_resume

    root = Path(args.root)
    # what shapes the data names the directories: the expert, the cameras and the image size where they
    # are not the defaults (Meta-World's expert, the corner camera, 64 px)
    policy = build_config(args.preset, list(args.set)).policy
    counted = f"-{args.demos}demos" if args.demos != DEMOS else ""
    suffix = data_suffix(args.expert, policy.cameras, policy.image_size, default_size=64) + counted
    tasks = [t for p in PAIRS for t in p]
    run = root / f"train{suffix}"
    evals = root / (f"eval{suffix}" + (f"-h{args.execute_steps}" if args.execute_steps else "")
                    + (f"-{args.episodes}ep" if args.episodes != 20 else ""))
    rows = []
    if not args.mt10_only:
        data = recorded_dataset(root, tasks, args.demos, args.expert, policy.cameras, workers=args.workers,
                                image_size=policy.image_size, default_size=64, tag=counted)
        config = build_config(args.preset, [f"dataset={data}", f"out={run}", *args.set])
        # the reach experts never use the gripper: a constant action dimension, which the normalizer centres
        # (the published rows set policy.min_spread=0.001 by hand, before that was the default handling)
        train_or_resume(config)
        rows += swap_test(str(run / "checkpoint"), PAIRS, args.episodes, args.workers, evals,
                          args.execute_steps)
    if args.mt10_checkpoint:
        # evaluations named by the checkpoint's run, so two MT10 policies' rows never share a directory
        mt10_run = Path(args.mt10_checkpoint).resolve().parent.name
        rows += swap_test(args.mt10_checkpoint, MT10_PAIRS, args.episodes, args.workers,
                          evals.with_name(f"{evals.name}-mt10-{mt10_run}"), args.execute_steps)
    shown = [{k: (f"{v * 100:.0f}%" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    table = markdown_table(shown, list(shown[0]))
    table += (f"\n{args.episodes} seeds per row (1000+), "
              + (f"{args.execute_steps} actions" if args.execute_steps else "half of each chunk")
              + " executed per chunk. Goals: >= 90% with the right instruction; <= 10% for the intended task "
              "with a swapped instruction. The last column: what copying the scripted experts would do.\n")
    reach = not args.mt10_only  # the reach policy's own figures only where it ran
    write(args.name, {"rows": rows, "episodes": args.episodes, "seeds": [1000, 999 + args.episodes],
                      "execute_steps": args.execute_steps, "demos": args.demos if reach else None,
                      "expert": args.expert if reach else None,
                      "mt10_checkpoint": args.mt10_checkpoint or None,
                      "train_config": json.loads((run / "config.json").read_text()) if reach else None,
                      "machine": machine()},
          table, command("grounding.py"))


if __name__ == "__main__":
    main()
