"""The done-when of serving: a robot-side process in which torch cannot be imported drives Meta-World through
``vlaforge serve`` (a real server process) with the full runtime (safety, chunk executor, monitor)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.runtime.test_torch_free import run_without_torch
from tests.serving.conftest import TOKEN, tiny_policy


@pytest.fixture
def server_process(tmp_path):
    ckpt = tiny_policy().save(tmp_path / "ckpt")
    (tmp_path / "token").write_text(TOKEN + "\n")
    proc = subprocess.Popen([sys.executable, "-c", "from vlaforge.cli import main; main()", "serve",
                             "--checkpoint", str(ckpt), "--port", "0", "--token-file",
                             str(tmp_path / "token"), "--threads", "1"],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url, lines, t0 = None, [], time.monotonic()
    while url is None and time.monotonic() - t0 < 120:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"serving on (ws://\S+) ", line)
        url = m.group(1) if m else None
    assert url, "the server did not start:\n" + "".join(lines)
    yield url, tmp_path / "token"
    proc.terminate()
    proc.wait(30)


def test_a_torch_free_robot_drives_meta_world_through_the_server(server_process, tmp_path):
    url, token_file = server_process
    out = tmp_path / "deploy"
    code = f"""
    from vlaforge.apps.deploy_sim import DeploySimConfig, run_deploy_sim

    cfg = DeploySimConfig(checkpoint=None, server={url!r}, token_file={str(token_file)!r},
                          task="drawer-open-v3", episodes=2, max_steps=25, out={str(out)!r}, progress=False,
                          image_encoding="jpeg")
    result = run_deploy_sim(cfg)
    assert [e["steps"] for e in result["episodes"]] == [25, 25], result["episodes"]
    assert result["precision"] is None
    """
    proc = run_without_torch(code, timeout=300)
    assert proc.returncode == 0 and "no torch: ok" in proc.stdout, (f"stdout:\n{proc.stdout}\n"
                                                                    f"stderr:\n{proc.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["server"] == url and summary["monitor"]
