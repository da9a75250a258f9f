"""The task catalogue: Meta-World's own task lists, instructions, resolve_tasks."""

from __future__ import annotations

import itertools

import pytest

from vlaforge.sim import instructions as cat
from vlaforge.sim.instructions import (
    DERIVED_TASKS,
    METAWORLD_TASKS,
    TASK_SETS,
    all_tasks,
    base_task,
    instruction,
    instructions,
    resolve_tasks,
)

# Tasks that share a scene (same objects on the table); their instructions must tell them apart.
SHARED_SCENES = [
    ["drawer-open-v3", "drawer-close-v3"],
    ["window-open-v3", "window-close-v3"],
    ["door-open-v3", "door-close-v3", "door-lock-v3", "door-unlock-v3"],
    ["faucet-open-v3", "faucet-close-v3"],
    ["button-press-v3", "button-press-wall-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3"],
    ["plate-slide-v3", "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3"],
    ["handle-press-v3", "handle-press-side-v3", "handle-pull-v3", "handle-pull-side-v3"],
    ["coffee-button-v3", "coffee-pull-v3", "coffee-push-v3"],
    ["peg-insert-side-v3", "peg-unplug-side-v3"],
    ["assembly-v3", "disassemble-v3"],
    ["stick-push-v3", "stick-pull-v3"],
    ["sweep-v3", "sweep-into-v3"],
    ["push-v3", "push-wall-v3", "push-back-v3"],
    ["pick-place-v3", "pick-place-wall-v3", "pick-out-of-hole-v3", "shelf-place-v3"],
    ["reach-v3", "reach-wall-v3", "reach-goal-v3", "reach-puck-v3"],
]


def test_task_lists_match_metaworld():
    from metaworld import env_dict
    from metaworld.policies import ENV_POLICY_MAP

    assert list(METAWORLD_TASKS) == list(env_dict.ALL_V3_ENVIRONMENTS)
    assert set(METAWORLD_TASKS) == set(ENV_POLICY_MAP)
    assert TASK_SETS["mt10"] == list(env_dict.MT10_V3)
    assert TASK_SETS["mt25"] == list(env_dict.MT25_V3)
    assert TASK_SETS["mt50"] == list(env_dict.MT50_V3)
    assert TASK_SETS["ml10-train"] == list(env_dict.ML10_V3["train"])
    assert TASK_SETS["ml10-test"] == list(env_dict.ML10_V3["test"])
    assert set(TASK_SETS["ml45-train"]) == set(env_dict.ML45_V3["train"])
    assert TASK_SETS["ml45-test"] == list(env_dict.ML45_V3["test"])
    # MT50's difficulty groups partition it: 28 easy, 11 medium, 6 hard, 5 very hard
    groups = [TASK_SETS[f"mt50-{g}"] for g in ("easy", "medium", "hard", "very-hard")]
    assert [len(g) for g in groups] == [28, 11, 6, 5]
    assert sorted(t for g in groups for t in g) == sorted(env_dict.MT50_V3)
    assert "pick-place-v3" in TASK_SETS["mt50-hard"] and "reach-v3" in TASK_SETS["mt50-easy"]


def test_every_task_has_a_canonical_sentence_and_two_paraphrases():
    assert len(METAWORLD_TASKS) == 50
    for task in all_tasks():
        sentences = instructions(task)
        assert len(sentences) >= 3, task
        assert len(set(sentences)) == len(sentences), f"{task}: repeated sentence"
        assert all(s == s.strip() and s for s in sentences), task
        assert instruction(task) == sentences[0]


def test_no_sentence_is_shared_between_tasks():
    """Except an already-done task's: it is told the other task's sentences (DONE_TASKS)."""
    from vlaforge.sim.instructions import DONE_TASKS

    owner: dict[str, str] = {}
    for task in all_tasks():
        if task in DONE_TASKS:
            assert instructions(task) == instructions(DONE_TASKS[task][1])
            continue
        for s in instructions(task):
            assert s not in owner, f"{s!r} is used by both {owner.get(s)} and {task}"
            owner[s] = task


@pytest.mark.parametrize("group", SHARED_SCENES, ids=lambda g: g[0])
def test_shared_scene_tasks_have_distinct_canonical_instructions(group):
    canon = {t: instruction(t) for t in group}
    assert len(set(canon.values())) == len(group), canon
    for a, b in itertools.combinations(group, 2):
        # different words, not just different phrasing of the same words
        assert set(canon[a].split()) != set(canon[b].split()), (a, b)


def test_shared_scene_table_mentions_every_known_pair():
    # guards the SHARED_SCENES list itself: open/close and lock/unlock pairs are all covered
    grouped = {t for g in SHARED_SCENES for t in g}
    for task in METAWORLD_TASKS:
        for a, b in (("open", "close"), ("lock", "unlock"), ("press", "pull"), ("push", "pull")):
            twin = task.replace(f"-{a}-", f"-{b}-")
            if twin != task and twin in METAWORLD_TASKS:
                assert task in grouped and twin in grouped, (task, twin)


def test_resolve_tasks_set_names_and_lists():
    assert resolve_tasks("mt10") == TASK_SETS["mt10"]
    assert resolve_tasks("MT10") == TASK_SETS["mt10"]
    assert resolve_tasks("drawer-open-v3, drawer-close-v3") == ["drawer-open-v3", "drawer-close-v3"]
    mixed = resolve_tasks("ml10-test,drawer-open-v3,reach-puck-v3")
    assert mixed == TASK_SETS["ml10-test"] + ["reach-puck-v3"]  # drawer-open-v3 is in ml10-test already
    assert resolve_tasks(["reach-goal-v3", "reach-puck-v3"]) == ["reach-goal-v3", "reach-puck-v3"]
    assert len(resolve_tasks("mt50")) == 50


def test_resolve_tasks_unknown_name_suggests():
    with pytest.raises(ValueError,
                       match=r"unknown task or task set 'drawer-opne-v3'; did you mean 'drawer-open-v3'"):
        resolve_tasks("drawer-close-v3,drawer-opne-v3")
    with pytest.raises(ValueError, match=r"did you mean 'mt10'"):
        resolve_tasks("mt11")
    with pytest.raises(ValueError, match="expected a task set name"):
        resolve_tasks(" , ")


def test_unknown_task_lookups_suggest():
    with pytest.raises(ValueError, match=r"did you mean 'reach-puck-v3'"):
        instructions("reach-puk-v3")
    with pytest.raises(ValueError, match=r"unknown task 'nope'"):
        base_task("nope")


def test_derived_tasks_have_a_base_scene():
    assert base_task("reach-puck-v3") == "reach-v3"
    assert base_task("drawer-open-v3") == "drawer-open-v3"
    for name, base in DERIVED_TASKS.items():
        assert base in METAWORLD_TASKS, name


def test_add_task_validates(monkeypatch):
    monkeypatch.setattr(cat, "DERIVED_TASKS", dict(cat.DERIVED_TASKS))
    monkeypatch.setattr(cat, "_INSTRUCTIONS", dict(cat._INSTRUCTIONS))
    with pytest.raises(ValueError, match="already in the catalogue"):
        cat.add_task("reach-puck-v3", "reach-v3", ["touch it"])
    with pytest.raises(ValueError, match="unknown base scene 'rech-v3'; did you mean 'reach-v3'"):
        cat.add_task("reach-x-v3", "rech-v3", ["touch it"])
    with pytest.raises(ValueError, match="at least one non-empty instruction"):
        cat.add_task("reach-x-v3", "reach-v3", [])
    cat.add_task("reach-x-v3", "reach-v3", ["touch the table", "tap the table"])
    assert cat.resolve_tasks("reach-x-v3") == ["reach-x-v3"]
    assert cat.instructions("reach-x-v3") == ["touch the table", "tap the table"]
