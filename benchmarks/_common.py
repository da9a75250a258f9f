"""Shared helpers for benchmarks: results as JSON + a markdown table, machine facts."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "date": _dt.date.today().isoformat()}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that ran a benchmark, as recorded beside its results: ``python benchmarks/<script>``
    followed by its arguments (``argv``, or the process's own)."""
    import shlex
    import sys

    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


def write(name: str, payload: dict, table: str, command: str) -> None:
    from vlaforge.fsutil import write_atomic

    write_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=2))
    md = f"# {name}\n\nCommand: `{command}`\n\n{table}\nMachine: {json.dumps(payload.get('machine', {}))}\n"
    write_atomic(RESULTS / f"{name}.md", md)
    print(table)
