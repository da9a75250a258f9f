"""Every command turns bad input into one ``error: ...`` line and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``vlaforge ARGV`` in this process, as the console script runs it: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from vlaforge.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def broken_checkpoint(tmp_path) -> Path:
    from tests.conftest import uniform_stats
    from vlaforge import presets
    from vlaforge.policy import Policy

    ckpt = Policy(presets.get("tiny"), {"sawyer": uniform_stats(4, 4)}).save(tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    return ckpt


@pytest.fixture
def corrupt_dataset(tmp_path) -> Path:
    root = tmp_path / "corrupt"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text("{ not json")
    return root


def test_missing_checkpoint(tmp_path):
    for argv in (["eval", "--checkpoint", "/nonexistent"],
                 ["deploy-sim", "--checkpoint", "/nonexistent", "--task", "drawer-open-v3"]):
        _one_error_line(*run_cli(argv)[::2], "/nonexistent: not a policy checkpoint (missing config.json)")


def test_broken_checkpoint_weights_fail_before_any_worker_starts(broken_checkpoint, tmp_path):
    code, _, err = run_cli(["eval", "--checkpoint", str(broken_checkpoint), "--tasks", "drawer-open-v3",
                            "--episodes", "1", "--workers", "2", "--out", str(tmp_path / "e")])
    _one_error_line(code, err, "not a readable safetensors file")


def test_unknown_task_and_preset(tmp_path):
    code, _, err = run_cli(["collect", "--tasks", "drawer-opn-v3", "--out", str(tmp_path / "d")])
    _one_error_line(code, err, "unknown task or task set 'drawer-opn-v3'", "did you mean 'drawer-open-v3'")
    assert not (tmp_path / "d").exists()
    code, _, err = run_cli(["eval", "--checkpoint", "/nonexistent", "--tasks", "mt11"])
    _one_error_line(code, err, "unknown task or task set 'mt11'")
    code, _, err = run_cli(["train", "--preset", "scratc", "--dataset", "d", "--out", "r"])
    _one_error_line(code, err, "unknown training preset 'scratc'; did you mean 'scratch'?")
    # the demo checks its preset before collecting anything
    code, _, err = run_cli(["demo", "--root", str(tmp_path / "demo"), "--preset", "dem"])
    _one_error_line(code, err, "did you mean 'demo'?")
    assert not (tmp_path / "demo" / "data").exists()


def test_bad_option_values(tmp_path):
    _one_error_line(*run_cli(["eval", "--checkpoint", "x", "--bf16", "maybe"])[::2],
                    "bf16: expected auto, true or false, got 'maybe'")
    _one_error_line(*run_cli(["eval", "--checkpoint", "x", "--strategy", "fast"])[::2], "EvalConfig.strategy")


def test_corrupt_dataset(corrupt_dataset, tmp_path):
    _one_error_line(*run_cli(["dataset", "info", str(corrupt_dataset)])[::2], str(corrupt_dataset))
    _one_error_line(*run_cli(["train", "--preset", "debug", "--dataset", str(corrupt_dataset), "--out",
                              str(tmp_path / "run")])[::2], str(corrupt_dataset))
    _one_error_line(*run_cli(["collect", "--tasks", "drawer-open-v3", "--out", str(corrupt_dataset),
                              "--resume", "--episodes-per-task", "1"])[::2], str(corrupt_dataset))
    assert (json.loads(json.dumps((corrupt_dataset / "meta/info.json").read_text()))
            == "{ not json")  # untouched


def test_the_console_script_prints_one_line(tmp_path):
    """The installed entry point, in a fresh process: no traceback around the message."""
    exe = Path(sys.executable).with_name("vlaforge")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from vlaforge.cli import main; main()"]
    res = subprocess.run([*cmd, "eval", "--checkpoint", str(tmp_path / "none")], capture_output=True,
                         text=True, env=dict(os.environ, VLAFORGE_TRACEBACK=""))
    _one_error_line(res.returncode, res.stderr, "not a policy checkpoint")
    res = subprocess.run([*cmd, "eval", "--checkpoint", str(tmp_path / "none")], capture_output=True,
                         text=True, env=dict(os.environ, VLAFORGE_TRACEBACK="1"))
    assert res.returncode == 1 and "Traceback" in res.stderr  # the traceback, on request


def test_train_reports_bad_input_through_the_same_mapping(tmp_path):
    """``vlaforge train`` parses its own flags; its errors still come out as one line and status 2."""
    _one_error_line(*run_cli(["train", "--preset", "no-such-preset", "--dataset", str(tmp_path),
                              "--out", str(tmp_path / "run")])[::2], "no-such-preset")
    _one_error_line(*run_cli(["train", "--preset", "debug", "--dataset", str(tmp_path / "missing"),
                              "--out", str(tmp_path / "run")])[::2])


def test_bench_lists_and_names_the_benchmarks():
    code, out, err = run_cli(["bench"])
    root = Path(__file__).resolve().parents[1]
    names = sorted(p.stem for p in (root / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
    assert code == 0 and names, err
    table = out.split("\nbenchmarks (", 1)[1]  # the usage lines above the table are indented too
    listed = [line.split()[0] for line in table.splitlines() if line.startswith("  ")]
    assert listed == names
    _one_error_line(*run_cli(["bench", "latenc"])[::2], "latency")  # the did-you-mean names the real one


@pytest.mark.parametrize("how", ["script", "bench"])
def test_a_benchmark_runs_without_path_edits(how):
    """A benchmark imports what it shares from the library: as a plain script and through
    ``vlaforge bench``."""
    root = Path(__file__).resolve().parents[1]
    if how == "script":
        cmd = [sys.executable, str(root / "benchmarks" / "safety_stress.py"), "--help"]
    else:
        cmd = [sys.executable, "-c", "from vlaforge.cli import main; main()", "bench", "safety_stress",
               "--help"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root.parent)
    assert res.returncode == 0 and "--n" in res.stdout, res.stderr


def test_deploy_sim_takes_a_checkpoint_or_a_server(tmp_path):
    _one_error_line(*run_cli(["deploy-sim", "--task", "drawer-open-v3", "--out", str(tmp_path)])[::2],
                    "exactly one")
    _one_error_line(*run_cli(["deploy-sim", "--task", "drawer-open-v3", "--server", "ws://127.0.0.1:1",
                              "--confidence", "--out", str(tmp_path)])[::2], "need --checkpoint")
    _one_error_line(*run_cli(["serve", "--checkpoint", str(tmp_path), "--host", "0.0.0.0"])[::2],
                    "token-file")
