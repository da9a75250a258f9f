"""``vlaforge train`` and ``python -m vlaforge.train`` (the same flags; ``torchrun ... -m vlaforge.train``
too).

Flags are the ``TrainConfig`` fields as dotted paths (``--policy.head=tokens --batch_size 32``) plus a few
options: ``--preset``, ``--policy-preset``, ``--resume``, ``--print-config``, ``--list-presets``, ``--help``.
Heavy imports (torch) happen only when a run starts, so ``--help`` is quick.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from vlaforge.errors import INPUT_ERRORS, report
from vlaforge.training.config import TrainConfig
from vlaforge.training.overrides import (
    OverrideError,
    apply_overrides,
    describe_fields,
    help_table,
    split_override,
)
from vlaforge.training.recipe import get_preset, preset_doc, preset_names

DEFAULT_PRESET = "scratch"
USAGE = """\
usage: vlaforge train [--preset NAME] [--policy-preset NAME] --dataset DIR --out RUN_DIR [--init CHECKPOINT]
                      [--FIELD.PATH=VALUE ...] [--print-config]
       vlaforge train --resume RUN_DIR [--num_workers=N ...]
       torchrun --nproc_per_node=N -m vlaforge.train ...        (the same flags, N processes with DDP)"""

DESCRIPTION = """\
Train a policy on a dataset. The run directory gets config.json (the resolved config), log.jsonl, train.log,
checkpoints/last (full training state), checkpoints/best (best validation loss) and checkpoint/ (the final
EMA policy, for Policy.load). A run can be resumed exactly: SIGINT/SIGTERM save a checkpoint and exit with
status 128+signal; `vlaforge train --resume RUN_DIR` continues it. A NaN/Inf loss stops the run (status 1)
and leaves the last checkpoint as it was."""

OPTIONS = """\
options:
  --preset NAME         training preset (default scratch): {presets}
  --policy-preset NAME  replace the preset's policy by a policy preset ({policy_presets})
  --init CHECKPOINT     start from a trained policy; the policy fields start from the checkpoint's config
  --resume RUN_DIR      continue an interrupted run (only fields that do not change the weights may be set)
  --print-config        print the resolved config as JSON and exit
  --list-presets        list training presets and exit
  -h, --help            this help; with --preset NAME, the fields show that preset's values
  --FIELD=VALUE         any field below; also --FIELD VALUE, and a bare --FIELD for a bool means true.
                        Lists: a,b,c or JSON; stages: --stages.N.FIELD or --stages.NAME.FIELD"""

_VALUELESS = {"help", "h", "print-config", "print_config", "list-presets", "list_presets"}
_OPTIONS = {"preset", "policy-preset", "policy_preset", "resume"}


@dataclass
class Parsed:
    preset: str = DEFAULT_PRESET
    policy_preset: str | None = None
    resume: str | None = None
    overrides: list[tuple[str, str | None]] = field(default_factory=list)
    help: bool = False
    print_config: bool = False
    list_presets: bool = False


def parse_argv(argv: list[str]) -> Parsed:
    out = Parsed()
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("-"):
            raise OverrideError(f"expected --FIELD=VALUE, got {tok!r}")
        name, eq, value = tok.lstrip("-").partition("=")
        if name in _VALUELESS:
            if name in ("help", "h"):
                out.help = True
            elif name.startswith("print"):
                out.print_config = True
            else:
                out.list_presets = True
            i += 1
            continue
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            else:
                value = None  # a bare flag: true for a bool field, an error otherwise
        i += 1
        if name in _OPTIONS:
            if value is None:
                raise OverrideError(f"--{name}: expected a value")
            if name == "preset":
                out.preset = value
            elif name == "resume":
                out.resume = value
            else:
                out.policy_preset = value
            continue
        out.overrides.append((name, value))
    return out


def _bare_flags(config: TrainConfig, overrides: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    types = {f.path: f.type_name for f in describe_fields(config)}
    out = []
    for path, value in overrides:
        if value is None:
            if types.get(path, "").split("|")[0] != "bool":  # bool, or bool|{auto}
                raise OverrideError(f"--{path}: expected a value (--{path}=VALUE)" if path in types else
                                    f"--{path}: expected --FIELD=VALUE")
            value = "true"
        out.append((path, value))
    return out


def build_config(preset: str = DEFAULT_PRESET, overrides=(), policy_preset: str | None = None) -> TrainConfig:
    """The config a command line describes: the preset, its policy replaced by ``policy_preset`` or, with an
    ``init`` override, by the checkpoint's policy config; then the overrides in order. Setting
    ``policy.embodiments`` implies ``embodiments_from_data=false``."""
    from vlaforge import presets

    cfg = get_preset(preset)
    overrides = [split_override(o) if isinstance(o, str) else o for o in overrides]
    if policy_preset:
        cfg = cfg.replace(policy=presets.get(policy_preset))
    init = [v for p, v in overrides if p == "init" and v]
    if init and not policy_preset:
        from vlaforge.training.resolve import policy_config_from_checkpoint

        cfg = cfg.replace(policy=policy_config_from_checkpoint(init[-1]))
    overrides = _bare_flags(cfg, overrides)
    paths = [p for p, _ in overrides]
    if any(p.startswith("policy.embodiments") for p in paths) and "embodiments_from_data" not in paths:
        overrides.append(("embodiments_from_data", "false"))
    return apply_overrides(cfg, overrides)


def help_text(preset: str = DEFAULT_PRESET) -> str:
    from vlaforge import presets

    cfg = get_preset(preset)
    import textwrap

    preset_lines = "\n".join(textwrap.fill(preset_doc(n), width=110, initial_indent=f"  {n:<11}",
                                            subsequent_indent=" " * 13) for n in preset_names())
    return "\n\n".join([
        USAGE, DESCRIPTION,
        OPTIONS.format(presets=", ".join(preset_names()), policy_presets=", ".join(presets.names())),
        "training presets:\n" + preset_lines,
        f"fields (values of preset {preset!r}):\n" + help_table(cfg),
    ]) + "\n"


def _err(msg: str) -> int:
    """A usage error found by the command line itself: one ``error: ...`` line, the input-error status."""
    return report(ValueError(msg))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = parse_argv(argv)
        if parsed.help:
            print(help_text(parsed.preset if parsed.preset in preset_names() else DEFAULT_PRESET))
            return 0
        if parsed.list_presets:
            for n in preset_names():
                print(f"{n:<10} {preset_doc(n)}")
            return 0
        if parsed.resume is None:
            config = build_config(parsed.preset, parsed.overrides, parsed.policy_preset)
            if parsed.print_config:
                print(json.dumps(config.to_dict(), indent=2))
                return 0
            for name in ("dataset", "out"):
                if not getattr(config, name):
                    return _err(f"--{name}: expected a directory, got nothing ({USAGE.splitlines()[0]})")
    except INPUT_ERRORS as e:
        return report(e)

    from vlaforge.data.format import DatasetFormatError
    from vlaforge.data.video import VideoError
    from vlaforge.policy import CheckpointError
    from vlaforge.training.checkpoint import TrainingCheckpointError
    from vlaforge.training.resolve import DataMismatchError
    from vlaforge.training.trainer import NonFiniteLossError, RunDirError, resume, train

    try:
        if parsed.resume is not None:
            if parsed.print_config or parsed.preset != DEFAULT_PRESET or parsed.policy_preset:
                return _err("--resume takes the run's own config; --preset/--policy-preset/--print-config "
                            "do not apply")
            result = resume(parsed.resume, [(p, v if v is not None else "true") for p, v in parsed.overrides])
        else:
            result = train(config)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OverrideError, RunDirError, TrainingCheckpointError, CheckpointError, DatasetFormatError,
            DataMismatchError, VideoError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        return report(e)  # the input's errors; any other exception (a ValueError deep in a step) is a bug
    if result.status == "interrupted":
        return 128 + result.signal if result.signal else 130
    return 0
