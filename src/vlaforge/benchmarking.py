"""What every benchmark (``benchmarks/<name>.py`` in a source checkout) shares: the machine it ran on, a
markdown table, the command line that ran it, and the writer of ``benchmarks/results/<name>.json`` +
``.md``.

It lives in the library so a benchmark imports it like anything else: ``python benchmarks/NAME.py``,
``python -m benchmarks.NAME`` and ``vlaforge bench NAME`` all work without editing ``sys.path``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path


def results_dir() -> Path:
    """``results/`` beside the benchmark that is running (the ``__main__`` script's directory)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main:
        raise RuntimeError("vlaforge.benchmarking.results_dir: no running script (expected a benchmark run "
                           "as `python benchmarks/NAME.py` or `vlaforge bench NAME`); pass the directory "
                           "instead")
    return Path(main).resolve().parent / "results"


def machine(precision: str | None = None) -> dict:
    """Where a benchmark ran: CPU model, torch's CPU capability, bf16 support, threads, torch version (and any
    emulation of a slower CPU), the load, the date and, when given, the precision it used."""
    from vlaforge.precision import machine_info, machine_kind

    m = machine_info()
    m.update(kind=machine_kind(m), load_avg_1m=round(os.getloadavg()[0], 2),
             date=_dt.date.today().isoformat())
    if precision is not None:
        m["precision"] = precision
    return m


def machine_line(m: dict) -> str:
    """The machine as one markdown line (``write`` puts it under every table)."""
    from vlaforge.precision import describe_machine

    if "cpu_capability" not in m:  # a result recorded before the machine was described in full
        return f"Machine: {json.dumps(m)}"
    line = (f"Machine: {describe_machine(m)}; load average {m.get('load_avg_1m')} at the start; "
            f"{m.get('date')}")
    return line + (f". Precision: {m['precision']}." if m.get("precision") else ".")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as a markdown table with ``columns`` (a missing value is an empty cell)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that ran a benchmark, as recorded beside its results: ``python benchmarks/<script>``
    followed by its arguments (``argv``, or the process's own)."""
    import shlex

    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, args)])


def write(name: str, payload: dict, table: str, command: str, out: Path | None = None) -> None:
    """Write ``<out>/<name>.json`` (``payload``) and ``<out>/<name>.md`` (the command, ``table`` and the
    machine line), each atomically, and print the table; ``out`` defaults to :func:`results_dir`."""
    from vlaforge.fsutil import write_atomic

    out = results_dir() if out is None else Path(out)
    write_atomic(out / f"{name}.json", json.dumps(payload, indent=2))
    md = f"# {name}\n\nCommand: `{command}`\n\n{table}\n{machine_line(payload.get('machine', {}))}\n"
    write_atomic(out / f"{name}.md", md)
    print(table)


def run_log(run: str | Path) -> list[dict]:
    """A training run's ``log.jsonl`` events (empty when it has none yet)."""
    from vlaforge.fsutil import read_jsonl

    return read_jsonl(Path(run) / "log.jsonl")


def train_minutes(run: str | Path) -> float | None:
    """Training time from the run's own log: its clock survives a resume, so time spent on an interrupted
    attempt's restart is not counted. ``None`` when the run has logged nothing."""
    times = [e["time"] for e in run_log(run) if isinstance(e.get("time"), (int, float))]
    return max(times) / 60 if times else None


def run_precision(run: str | Path) -> str | None:
    """The precision a run trained in (``fp32`` / ``bf16``: what ``bf16=auto`` chose on its machine)."""
    return next((e.get("precision") for e in run_log(run) if e.get("event") == "precision"), None)
