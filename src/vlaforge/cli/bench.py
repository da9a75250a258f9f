"""``vlaforge bench [NAME [ARGS...]]``: the benchmarks of a source checkout (``benchmarks/*.py``; they are not
installed with the package). Without NAME it lists them; with NAME it runs ``python benchmarks/NAME.py ARGS``
in the checkout's root (so paths in ARGS are relative to it) and exits with the benchmark's status.
``vlaforge bench --checkpoint DIR [ARGS...]`` is
``vlaforge bench acceleration --checkpoint DIR [ARGS...]``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

#: typer passes every argument through untouched: NAME's own flags, --help included, belong to NAME
SETTINGS = dict(add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
USAGE = ("usage: vlaforge bench NAME [ARGS ...]   (vlaforge bench NAME --help: the benchmark's flags)\n"
         "       vlaforge bench --checkpoint DIR [ARGS ...]   (the acceleration table for DIR)")


def checkout() -> Path:
    """The root of the source checkout this vlaforge is installed from (``pip install -e``,
    ``make install``)."""
    import vlaforge

    package = Path(vlaforge.__file__).resolve().parent
    root = package.parents[1]  # src/vlaforge -> the checkout
    if not (root / "benchmarks").is_dir() or not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"vlaforge bench runs the benchmarks of a source checkout, and this vlaforge "
                                f"({package}) was not installed from one (no benchmarks/ in {root}): clone "
                                f"the repository and install it with `make install`")
    return root


def benchmarks(root: Path) -> dict[str, str]:
    """Each benchmark's name and the first line of its docstring (read, not imported)."""
    import ast

    out = {}
    for path in sorted((root / "benchmarks").glob("*.py")):
        if not path.stem.startswith("_"):
            doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
            out[path.stem] = doc.split("\n\n")[0].replace("\n", " ")
    return out


def bench_cmd(ctx: typer.Context) -> None:
    """Run a benchmark of this checkout: NAME [ARGS ...] (no NAME: list them; NAME --help: its flags)."""
    import subprocess

    from vlaforge.names import unknown_name

    args = list(ctx.args)
    root = checkout()
    known = benchmarks(root)
    if not args or args[0] in ("-h", "--help"):
        typer.echo(USAGE + "\n\nbenchmarks (benchmarks/NAME.py; results in benchmarks/results/):")
        width = max(map(len, known), default=0)
        for name, doc in known.items():
            typer.echo(f"  {name:<{width}}  {doc}")
        return
    # `vlaforge bench --checkpoint DIR ...`: the acceleration table for that checkpoint
    name, rest = ("acceleration", args) if args[0].startswith("--checkpoint") else (args[0], args[1:])
    if name not in known:
        raise unknown_name("benchmark", name, known)
    proc = subprocess.Popen([sys.executable, str(root / "benchmarks" / f"{name}.py"), *rest], cwd=root)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # the benchmark got the SIGINT too: let it finish its own way
            continue
    raise typer.Exit(code if code >= 0 else 128 - code)
