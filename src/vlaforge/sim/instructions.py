"""The Meta-World task catalogue: task names, the standard task sets, and language instructions.

Pure Python, no simulator import: datasets, the CLI and the trainer can look up names and
sentences without loading MuJoCo. The simulator itself is in :mod:`vlaforge.sim.metaworld`.

Every task has one canonical instruction (first) and paraphrases. Tasks that share a scene
(drawer open / close, the four door tasks, the button variants, ...) have canonical sentences
that tell them apart, so a policy conditioned on language can tell which one is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

from vlaforge.names import unknown_name

#: The 50 Meta-World v3 tasks, in Meta-World's own order (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``).
METAWORLD_TASKS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3",
    "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3",
    "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3", "handle-press-v3",
    "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3", "pick-place-wall-v3", "pick-out-of-hole-v3",
    "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3", "plate-slide-back-v3",
    "plate-slide-back-side-v3", "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3",
    "stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3",
    "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)

#: What a dataset calls each dimension of the Sawyer's state and action, and of the environment state
STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper_opening")
ACTION_NAMES = ("hand_dx", "hand_dy", "hand_dz", "gripper_effort")
#: ``observation.environment_state``: Meta-World's object and goal positions
ENV_STATE_NAMES = ("obj1_x", "obj1_y", "obj1_z", "obj2_x", "obj2_y", "obj2_z", "goal_x", "goal_y", "goal_z")

#: Derived tasks: a base Meta-World scene with its own success test, expert and instruction.
#: name -> base scene. Their behaviour is registered in :mod:`vlaforge.sim.metaworld`.
DERIVED_TASKS: dict[str, str] = {
    "reach-goal-v3": "reach-v3",
    "reach-puck-v3": "reach-v3",
}
#: "Already done" tasks (issue 18): each scene of an open/close pair starts where the other task is done
#: (window-open's window is closed, drawer-close's drawer is open). Told to do what is already done, the robot
#: holds still: it must not do the scene's usual task. Meta-World's scripted experts do not know this: on
#: seeds 1000-1019 window-close's expert opens window-open's window 20 times out of 20 and window-open's
#: closes window-close's 9 times. name -> (scene, the task whose instruction it is given); its sentences are
#: that task's.
DONE_TASKS: dict[str, tuple[str, str]] = {
    "drawer-close-done-v3": ("drawer-open-v3", "drawer-close-v3"),
    "drawer-open-done-v3": ("drawer-close-v3", "drawer-open-v3"),
    "window-close-done-v3": ("window-open-v3", "window-close-v3"),
    "window-open-done-v3": ("window-close-v3", "window-open-v3"),
}
DERIVED_TASKS.update({name: scene for name, (scene, _) in DONE_TASKS.items()})

#: The standard sets, as listed in ``metaworld.env_dict`` (MT10_V3, MT25_V3, ML10_V3, ML45_V3).
TASK_SETS: dict[str, list[str]] = {
    "mt10": [
        "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
    ],
    "mt25": [
        "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
        "coffee-pull-v3", "pick-out-of-hole-v3", "disassemble-v3", "pick-place-wall-v3", "basketball-v3",
        "stick-pull-v3", "button-press-wall-v3", "faucet-open-v3", "door-lock-v3", "lever-pull-v3",
        "sweep-into-v3", "faucet-close-v3", "coffee-button-v3", "button-press-topdown-wall-v3",
        "dial-turn-v3",
    ],
    "mt50": list(METAWORLD_TASKS),
    "ml10-train": [
        "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3",
    ],
    "ml10-test": ["drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"],
    "ml45-train": [t for t in METAWORLD_TASKS if t not in (
        "bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3")],
    "ml45-test": ["bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3"],
    "reach-grounding": ["reach-goal-v3", "reach-puck-v3"],
}
#: MT50's difficulty groups (Seo et al. 2022, "Masked World Models", by the success of a single-task RL agent;
#: SmolVLA and LeRobot report by them): 28 easy, 11 medium, 6 hard, 5 very hard tasks.
MT50_GROUPS: dict[str, list[str]] = {
    "mt50-medium": [f"{t}-v3" for t in (
        "basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer", "peg-insert-side",
        "push-wall", "soccer", "sweep", "sweep-into")],
    "mt50-hard": [f"{t}-v3" for t in (
        "assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back")],
    "mt50-very-hard": [f"{t}-v3" for t in (
        "shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall")],
}
MT50_GROUPS = {"mt50-easy": [t for t in METAWORLD_TASKS if not any(t in g for g in MT50_GROUPS.values())],
               **MT50_GROUPS}
TASK_SETS.update(MT50_GROUPS)

# Canonical sentence first, then paraphrases. Objects are named as they look in the scene.
_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": (
        "put the ring onto the peg",
        "pick up the ring by its handle and slide it down over the peg",
        "assemble the ring onto the peg",
    ),
    "basketball-v3": (
        "put the ball into the basketball hoop",
        "pick up the ball and dunk it into the hoop",
        "grab the ball and drop it through the hoop",
    ),
    "bin-picking-v3": (
        "move the cube from its bin into the other bin",
        "pick the cube out of the red bin and put it in the blue bin",
        "transfer the cube to the empty bin",
    ),
    "box-close-v3": (
        "put the lid on the box",
        "pick up the lid and close the box with it",
        "cover the box with its lid",
    ),
    "button-press-topdown-v3": (
        "press the button from the top",
        "push the button straight down",
        "press down on the top of the button",
    ),
    "button-press-topdown-wall-v3": (
        "reach past the wall and press the button from the top",
        "press the button straight down behind the wall",
        "push down on the button on the other side of the wall",
    ),
    "button-press-v3": (
        "press the button from the front",
        "push the button in horizontally",
        "press the button on the front of the box",
    ),
    "button-press-wall-v3": (
        "reach around the wall and press the button from the front",
        "push the button in horizontally, going past the wall",
        "press the front button behind the wall",
    ),
    "coffee-button-v3": (
        "press the button on the coffee machine",
        "push the coffee machine's button",
        "start the coffee machine by pressing its button",
    ),
    "coffee-pull-v3": (
        "pull the mug out from under the coffee machine",
        "drag the mug away from the coffee machine to the goal",
        "take the mug out from the coffee machine",
    ),
    "coffee-push-v3": (
        "push the mug under the coffee machine",
        "slide the mug into place beneath the coffee machine",
        "move the mug under the coffee spout",
    ),
    "dial-turn-v3": (
        "turn the dial",
        "rotate the dial on the table",
        "spin the dial around",
    ),
    "disassemble-v3": (
        "take the ring off the peg",
        "lift the ring by its handle up and off the peg",
        "remove the ring from the peg",
    ),
    "door-close-v3": (
        "close the door",
        "push the open door shut",
        "swing the door closed",
    ),
    "door-lock-v3": (
        "lock the door by turning the lock down",
        "turn the door lock downward",
        "rotate the lock on the door down to lock it",
    ),
    "door-open-v3": (
        "open the door",
        "pull the door open by its handle",
        "swing the door open",
    ),
    "door-unlock-v3": (
        "unlock the door by turning the lock",
        "rotate the door lock to unlock it",
        "turn the lock on the door to the unlocked position",
    ),
    "hand-insert-v3": (
        "put the block into the hole in the table",
        "push the block into the hole",
        "move the block over the hole and drop it in",
    ),
    "drawer-close-v3": (
        "close the drawer",
        "push the drawer shut",
        "slide the open drawer closed",
    ),
    "drawer-open-v3": (
        "open the drawer",
        "pull the drawer open by its handle",
        "slide the drawer out",
    ),
    "faucet-open-v3": (
        "open the faucet",
        "turn the faucet handle to open it",
        "turn the tap on",
    ),
    "faucet-close-v3": (
        "close the faucet",
        "turn the faucet handle to close it",
        "turn the tap off",
    ),
    "hammer-v3": (
        "hammer the nail into the wall",
        "pick up the hammer and drive the nail in",
        "use the hammer to hit the nail",
    ),
    "handle-press-side-v3": (
        "press the sideways handle down",
        "push down the handle that sticks out to the side",
        "press down on the side-facing handle",
    ),
    "handle-press-v3": (
        "press the handle down",
        "push the front handle all the way down",
        "press down on the handle facing you",
    ),
    "handle-pull-side-v3": (
        "pull the sideways handle up",
        "lift up the handle that sticks out to the side",
        "raise the side-facing handle",
    ),
    "handle-pull-v3": (
        "pull the handle up",
        "lift the front handle all the way up",
        "raise the handle facing you",
    ),
    "lever-pull-v3": (
        "pull the lever up",
        "lift the lever until it points upward",
        "raise the lever",
    ),
    "pick-place-wall-v3": (
        "pick up the puck and place it at the goal behind the wall",
        "lift the puck over the wall and put it at the goal",
        "carry the puck past the wall to the goal position",
    ),
    "pick-out-of-hole-v3": (
        "pick the puck out of the hole",
        "lift the puck up out of the hole to the goal",
        "take the puck out of the hole in the table",
    ),
    "pick-place-v3": (
        "pick up the puck and place it at the goal",
        "grab the puck and carry it to the goal position",
        "lift the puck and put it down at the goal",
    ),
    "plate-slide-v3": (
        "slide the plate forward into the net",
        "push the plate ahead into the goal net",
        "slide the plate away from you into the net",
    ),
    "plate-slide-side-v3": (
        "slide the plate sideways into the net",
        "push the plate to the side into the goal net",
        "slide the plate across into the net beside it",
    ),
    "plate-slide-back-v3": (
        "slide the plate back out of the net toward you",
        "pull the plate backward out of the goal net",
        "bring the plate back out of the net",
    ),
    "plate-slide-back-side-v3": (
        "slide the plate sideways out of the net",
        "pull the plate to the side out of the goal net",
        "slide the plate back out of the side net",
    ),
    "peg-insert-side-v3": (
        "insert the peg into the hole from the side",
        "pick up the peg and push it sideways into the hole",
        "put the peg in the hole on the side of the box",
    ),
    "peg-unplug-side-v3": (
        "pull the peg out of the hole sideways",
        "unplug the peg from the side of the box",
        "slide the peg out of its hole",
    ),
    "soccer-v3": (
        "kick the ball into the goal",
        "push the soccer ball into the net",
        "score by moving the ball into the goal",
    ),
    "stick-push-v3": (
        "use the stick to push the thermos to the goal",
        "pick up the stick and push the thermos with it",
        "grab the stick and shove the thermos forward with it",
    ),
    "stick-pull-v3": (
        "use the stick to pull the thermos to the goal",
        "pick up the stick and drag the thermos with it",
        "hook the thermos with the stick and pull it",
    ),
    "push-v3": (
        "push the puck to the goal",
        "slide the puck along the table to the goal",
        "shove the puck over to the goal position",
    ),
    "push-wall-v3": (
        "push the puck around the wall to the goal",
        "slide the puck past the wall to the goal",
        "push the puck to the goal, going around the wall",
    ),
    "push-back-v3": (
        "push the puck back toward you to the goal",
        "slide the puck backward to the goal",
        "pull the puck back along the table to the goal",
    ),
    "reach-v3": (
        "reach to the goal position",
        "move the hand to the goal",
        "reach the target position in the air",
    ),
    "reach-wall-v3": (
        "reach over the wall to the goal position",
        "move the hand past the wall to the goal",
        "reach the target on the other side of the wall",
    ),
    "shelf-place-v3": (
        "pick up the puck and place it on the shelf",
        "put the puck onto the shelf",
        "lift the puck and set it down on the shelf",
    ),
    "sweep-into-v3": (
        "sweep the puck into the hole",
        "push the puck across the table into the hole",
        "slide the puck into the hole in the table",
    ),
    "sweep-v3": (
        "sweep the puck off the edge of the table",
        "push the puck off the side of the table",
        "slide the puck sideways off the table",
    ),
    "window-open-v3": (
        "slide the window open",
        "open the window by sliding it",
        "push the window sash open",
    ),
    "window-close-v3": (
        "slide the window closed",
        "close the window by sliding it",
        "push the window sash shut",
    ),
    # derived tasks (see DERIVED_TASKS)
    "reach-goal-v3": (
        "move the gripper to the goal marker",
        "reach to the marker floating above the table",
        "put the gripper on the small floating goal ball",
    ),
    "reach-puck-v3": (
        "touch the puck",
        "move the gripper down to the puck",
        "reach for the puck on the table",
    ),
}
_INSTRUCTIONS.update({name: _INSTRUCTIONS[told] for name, (_, told) in DONE_TASKS.items()})


def all_tasks() -> list[str]:
    """Every task name: the 50 Meta-World tasks, then the derived tasks."""
    return list(METAWORLD_TASKS) + list(DERIVED_TASKS)


def _unknown(kind: str, name: str, known: Iterable[str]) -> Exception:
    return unknown_name(kind, name, known, n=3, otherwise=".")


def instructions(task: str) -> list[str]:
    """All sentences for ``task``: the canonical instruction first, then its paraphrases."""
    try:
        return list(_INSTRUCTIONS[task])
    except KeyError:
        raise _unknown("task", task, _INSTRUCTIONS) from None


def add_task(name: str, base: str, sentences: Iterable[str]) -> None:
    """Add a derived task to the catalogue: its base scene and its sentences (canonical first).

    Used by :func:`vlaforge.sim.metaworld.register_derived_task`; a name may be added once.
    """
    sentences = tuple(sentences)
    if name in METAWORLD_TASKS or name in DERIVED_TASKS:
        raise ValueError(f"task {name!r} is already in the catalogue")
    if base not in METAWORLD_TASKS:
        raise _unknown("base scene", base, METAWORLD_TASKS)
    if not sentences or not all(isinstance(x, str) and x.strip() for x in sentences):
        raise ValueError(f"task {name!r}: expected at least one non-empty instruction, got {sentences!r}")
    DERIVED_TASKS[name] = base
    _INSTRUCTIONS[name] = sentences


def instruction(task: str) -> str:
    """The canonical instruction for ``task``."""
    return instructions(task)[0]


def base_task(task: str) -> str:
    """The Meta-World scene a task runs in: itself, or the base of a derived task."""
    if task in DERIVED_TASKS:
        return DERIVED_TASKS[task]
    if task in METAWORLD_TASKS:
        return task
    raise _unknown("task", task, all_tasks())


def resolve_tasks(spec: str | Iterable[str]) -> list[str]:
    """Task names from a set name (``"mt10"``), comma-separated names, or a mix of both.

    ``resolve_tasks("mt10")``, ``resolve_tasks("drawer-open-v3,drawer-close-v3")``,
    ``resolve_tasks(["ml10-test", "reach-puck-v3"])``. Order is kept, duplicates dropped.
    An unknown name raises ``ValueError`` with a did-you-mean.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise ValueError(f"expected a task set name or comma-separated task names, got {spec!r}")
    out: list[str] = []
    for name in names:
        key = name.lower()
        if key in TASK_SETS:
            expanded = TASK_SETS[key]
        elif key in METAWORLD_TASKS or key in DERIVED_TASKS:
            expanded = [key]
        else:
            raise _unknown("task or task set", name, all_tasks() + list(TASK_SETS))
        out.extend(t for t in expanded if t not in out)
    return out
