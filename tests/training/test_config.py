"""TrainConfig, dotted overrides, presets, help generated from the field docs, the command line's parsing."""

import json

import pytest

from vlaforge.training import StageConfig, TrainConfig, build_config, get_preset
from vlaforge.training.commandline import help_text, main, parse_argv
from vlaforge.training.overrides import OverrideError, apply_overrides, describe_fields


def test_overrides_parse_by_type_and_nest():
    cfg = apply_overrides(get_preset("scratch"), [
        "policy.head=tokens", "batch_size=32", "lr=2e-4", "bf16=true", "policy.cameras=corner,gripper",
        "betas=[0.8, 0.99]", "stages.0.train=heads,fusion", "stages.train.lr=1e-3",
        "policy.embodiments.sawyer.state_dim=7",
    ])
    assert cfg.policy.head == "tokens" and cfg.batch_size == 32 and cfg.lr == 2e-4 and cfg.bf16 is True
    assert cfg.policy.cameras == ("corner", "gripper") and cfg.betas == (0.8, 0.99)
    assert cfg.stages[0].train == ("heads", "fusion") and cfg.stages[0].lr == 1e-3
    assert cfg.policy.embodiments["sawyer"].state_dim == 7
    assert get_preset("scratch").batch_size != 32  # presets are fresh, frozen values


@pytest.mark.parametrize("item, message", [
    ("policy.hed=flow", "did you mean --policy.head?"),
    ("batch_sise=3", "did you mean --batch_size?"),
    ("policy.head=flw", "did you mean 'flow'?"),
    ("batch_size=abc", "expected an int, got 'abc'"),
    ("bf16=maybe", "expected a bool"),
    ("stages.algn.lr=1", "did you mean 'align'?"),
    ("stages.0.train=vison", "did you mean 'vision'?"),
    ("steps=0", "expected a positive int"),
])
def test_bad_overrides_say_what_was_expected(item, message):
    with pytest.raises(OverrideError, match=message.replace("?", r"\?").replace("[", r"\[")):
        apply_overrides(get_preset("finetune"), [item])


def test_stage_steps_share_the_total_and_explicit_steps_must_add_up():
    cfg = get_preset("finetune").replace(steps=1000)
    steps = cfg.stage_steps()
    assert sum(steps) == 1000 and steps == [150, 600, 250]
    cfg = apply_overrides(cfg, ["stages.align.steps=100"])  # the others share what is left, 900, by weight
    assert cfg.stage_steps()[0] == 100 and sum(cfg.stage_steps()) == 1000
    with pytest.raises(ValueError, match="add up to 30 but steps=50"):
        TrainConfig(steps=50, stages=(StageConfig(name="a", steps=10), StageConfig(name="b", steps=20)))


def test_presets_are_the_documented_recipes():
    ft = get_preset("finetune")
    assert [s.name for s in ft.stages] == ["align", "cofinetune", "specialize"]
    align, co, spec = ft.stages
    assert set(align.train) == {"fusion", "heads"} and align.lr == 1e-3 and align.train_fresh
    assert set(co.train) == {"vision", "language", "state", "fusion", "heads"} and co.lr == 2e-5
    assert spec.train == ("heads",) and spec.lr == 1e-5
    scratch = get_preset("scratch")
    assert len(scratch.stages) == 1 and len(scratch.stages[0].train) == 5
    with pytest.raises(KeyError, match="did you mean 'debug'"):
        get_preset("debg")


def test_json_round_trip():
    cfg = apply_overrides(get_preset("finetune"), ["policy.head=diffusion", "stages.align.lr=5e-4", "seed=3"])
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    d = cfg.to_dict()
    d["learning_rate"] = 1.0
    with pytest.raises(ValueError, match="unknown field 'learning_rate'"):
        TrainConfig.from_dict(d)


def test_help_documents_every_field(capsys):
    text = help_text("scratch")
    fields = describe_fields(get_preset("scratch"))
    assert len(fields) > 40
    for f in fields:
        assert f"--{f.path} " in text, f.path
        assert f.doc, f"field {f.path} has no doc"
    assert main(["--help"]) == 0
    assert "--stages.N.train_fresh" in capsys.readouterr().out


def test_command_line_parsing_and_errors(capsys):
    p = parse_argv(["--preset", "debug", "--dataset", "d", "--out=r", "--bf16", "--policy.head", "tokens"])
    assert p.preset == "debug" and ("dataset", "d") in p.overrides and ("bf16", None) in p.overrides
    cfg = build_config(p.preset, p.overrides)
    assert cfg.bf16 and cfg.policy.head == "tokens" and cfg.out == "r" and cfg.dataset == "d"
    # setting the embodiments by hand turns off taking them from the data
    cfg = build_config("debug", ['policy.embodiments={"ur5": {"state_dim": 6, "action_dim": 7}}'])
    assert not cfg.embodiments_from_data and set(cfg.policy.embodiments) == {"ur5"}
    assert main(["--preset", "debug", "--policy.chunksize=3"]) == 2
    assert "did you mean --policy.chunk_size?" in capsys.readouterr().err
    assert main(["--preset", "debug", "--steps"]) == 2
    assert "--steps: expected a value" in capsys.readouterr().err
    assert main(["--preset", "debug", "--steps=7", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 7


def test_head_settings_keep_their_old_flags_and_run_configs():
    # the flat flags of format 1 still set the head's own settings, also with a space-separated value
    cfg = build_config("debug", parse_argv(["--policy.num_bins", "64", "--policy.flow_steps=3",
                                            "--policy.diffusion_sample_steps=5",
                                            "--policy.head_settings.diffusion.train_steps=40"]).overrides)
    hs = cfg.policy.head_settings
    assert (hs.tokens.num_bins, hs.flow.steps) == (64, 3)
    assert (hs.diffusion.sample_steps, hs.diffusion.train_steps) == (5, 40)
    with pytest.raises(OverrideError, match=r"--policy.num_bins=0: TokensSettings.num_bins: expected a pos"):
        build_config("debug", ["policy.num_bins=0"])
    with pytest.raises(OverrideError, match=r"expected at most train_steps=40, got 50"):
        apply_overrides(cfg, ["policy.diffusion_sample_steps=50"])
    # a run directory's config.json written before head_settings (flat fields) still resumes
    d = cfg.to_dict()
    flat = {k: v for k, v in d["policy"].items() if k != "head_settings"}
    flat.update(num_bins=64, flow_steps=3, diffusion_train_steps=40, diffusion_sample_steps=5)
    assert TrainConfig.from_dict(dict(d, policy=flat)) == cfg
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg


def test_vlaforge_train_command_is_wired():
    from typer.testing import CliRunner

    from vlaforge.cli import app

    res = CliRunner().invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "--policy.head" in res.output and "--ema_decay" in res.output
    res = CliRunner().invoke(app, ["train", "--preset", "debug", "--ema_decay=2"])
    assert res.exit_code == 2 and "ema_decay" in res.output
