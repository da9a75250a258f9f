"""MT50, a first figure: one policy for all 50 Meta-World tasks, 50 scripted demonstrations per task,
evaluated on 10 unseen seeds per task (1000-1009), reported overall and by difficulty group (easy 28,
medium 11, hard 6, very hard 5 tasks: ``vlaforge.sim.instructions.MT50_GROUPS``).

    .venv/bin/python benchmarks/mt50.py --head flow [--root runs/mt50] [--set steps=12000 ...]
        [--expert centred] [--execute-steps 4] [--name mt50_flow]

The same pipeline and options as ``benchmarks/mt10.py`` (``vlaforge.apps.multitask.multitask_run``): the
``mt10`` recipe unless ``--preset`` says otherwise. Its three cameras make a step about twice as long as the
one-camera recipe the committed figure (``mt50_flow_h4``) was measured with; ``--set policy.cameras=corner``
repeats that one.

References (their protocol differs from ours: LeRobot's MT50 data, the ``corner2`` camera at 480 px, 10 trials
per task): SmolVLA 57.3% (0.45 B parameters) and 68.2% (2.25 B), pi0 about 50% (SmolVLA paper, Table 2).
Writes benchmarks/results/<name>.json and .md (default ``mt50_<head>``; ``_h<N>`` added with
``--execute-steps N``).
"""

from __future__ import annotations

import argparse

from vlaforge.apps.multitask import (
    multitask_arguments,
    multitask_footer,
    multitask_result_name,
    multitask_run,
    multitask_task_rows,
)
from vlaforge.benchmarking import command, machine, markdown_table, write

REFERENCE = {"SmolVLA 0.45 B": 0.573, "SmolVLA 2.25 B": 0.682, "pi0 (as reported by SmolVLA)": 0.50}
GROUPS = ("easy", "medium", "hard", "very-hard")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    multitask_arguments(ap, root="runs/mt50", preset="mt10", episodes=10)
    ap.add_argument("--name", default="", help="results file name under benchmarks/results/ (default "
                                               "mt50_<head>)")
    args = ap.parse_args()

    from vlaforge.sim.instructions import MT50_GROUPS
    from vlaforge.sim.metaworld import resolve_tasks

    res = multitask_run(args, resolve_tasks("mt50"), args.name or args.head)
    per_task = {t: v["success_rate"] for t, v in res["tasks"].items()}
    groups = {g: sum(per_task[t] for t in MT50_GROUPS[f"mt50-{g}"]) / len(MT50_GROUPS[f"mt50-{g}"])
              for g in GROUPS}
    rows = [{"group": g, "tasks": len(MT50_GROUPS[f"mt50-{g}"]), "success": f"{groups[g] * 100:.1f}%"}
            for g in GROUPS]
    rows.append({"group": "**all 50**", "tasks": len(per_task),
                 "success": f"**{res['mean_success'] * 100:.1f}%**"})
    table = markdown_table(rows, ["group", "tasks", "success"])
    group_of = {t: g for g in GROUPS for t in MT50_GROUPS[f"mt50-{g}"]}
    table += "\n" + markdown_table(multitask_task_rows(res, group=group_of.__getitem__),
                                   ["task", "group", "success", "ci95"])
    table += (multitask_footer(res) + " References (another protocol, see the script): "
              + ", ".join(f"{k} {v * 100:.1f}%" for k, v in REFERENCE.items()) + ".\n")
    write(multitask_result_name(args, "mt50"),
          {**res, "groups": groups, "reference": REFERENCE, "machine": machine()}, table, command("mt50.py"))


if __name__ == "__main__":
    main()
