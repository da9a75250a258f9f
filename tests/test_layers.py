"""The package's layers (docs/DESIGN.md, "Layers"): no import climbs, none circles, every part is placed.

Every ``.py`` under ``src/vlaforge`` is parsed with ``ast``; every import of a vlaforge module counts, at
any depth (an import inside a function is still a dependency), relative imports and
``importlib.import_module("...")`` with a literal name included. Each module maps to its top-level part
(``vlaforge.runtime.safety`` -> ``runtime``, ``vlaforge.precision`` -> ``precision``, the package's own
``__init__`` -> ``vlaforge``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vlaforge"
DESIGN = ROOT / "docs" / "DESIGN.md"

#: Lowest first. A module may import only from its own layer or a lower one; between distinct parts of one
#: layer imports are allowed as long as they form no cycle. A new top-level module or package must be placed
#: here (and in docs/DESIGN.md, which this test compares with).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vlaforge", "types", "fsutil", "names", "errors", "config", "presets", "precision", "synthetic",
     "benchmarking"),
    ("processing", "models", "sim"),
    ("policy", "data"),
    ("runtime", "training", "evaluation", "online", "serving", "export"),
    ("apps",),
    ("cli", "train"),
)


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    text: str  # the import as written
    source: str  # top-level part of the importing module
    target: str  # top-level part of the imported module


def layer_of(layers) -> dict[str, int]:
    return {part: i for i, parts in enumerate(layers) for part in parts}


def _part(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_submodule(package_dir: Path, name: str) -> bool:
    return (package_dir / f"{name}.py").is_file() or (package_dir / name / "__init__.py").is_file()


def _is_import_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return False
    func = node.func
    return ((isinstance(func, ast.Attribute) and func.attr == "import_module")
            or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__")))


def scan(package: Path = PACKAGE) -> tuple[list[Import], set[str]]:
    """Every import of a vlaforge module in ``package``, and the top-level parts that exist."""
    parts = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    parts |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    parts.add("vlaforge")
    found: list[Import] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        module = ".".join(rel.with_suffix("").parts)
        is_init = path.name == "__init__.py"
        if is_init:
            module = module.rsplit(".", 1)[0]
        package_name = module if is_init else module.rsplit(".", 1)[0]
        source = _part(module)
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package_name.split(".")[: len(package_name.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod == "vlaforge":  # from vlaforge import presets (a part) or __version__ (the root)
                    targets = [f"vlaforge.{a.name}" if _is_submodule(package, a.name) else "vlaforge"
                               for a in node.names]
                else:
                    targets = [mod]
            elif _is_import_call(node):  # importlib.import_module("vlaforge.x"), __import__("vlaforge.x")
                targets = [node.args[0].value]
            for t in targets:
                if t == "vlaforge" or t.startswith("vlaforge."):
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(Import(str(where), node.lineno, ast.get_source_segment(text, node) or t,
                                        source, _part(t)))
    return found, parts


def _cycles(edges: dict[tuple[str, str], Import]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan), each as a sorted list."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(imports: list[Import], parts: set[str], layers=LAYERS) -> list[str]:
    """Every violation of the layer rules, one readable line each (empty: all is well)."""
    layer = layer_of(layers)
    problems: list[str] = []
    for part in sorted(parts - set(layer)):
        problems.append(f"{part}: a top-level part with no layer; place it in LAYERS (tests/test_layers.py) "
                        f"and in docs/DESIGN.md")
    for part in sorted(set(layer) - parts):
        problems.append(f"{part}: in LAYERS but no such module or package under src/vlaforge; remove it")
    edges: dict[tuple[str, str], Import] = {}
    for imp in sorted(imports, key=lambda i: (i.file, i.line)):
        if imp.source == imp.target:
            continue
        edges.setdefault((imp.source, imp.target), imp)
        src, dst = layer.get(imp.source), layer.get(imp.target)
        if src is None or dst is None:
            continue  # reported above
        if dst > src:
            problems.append(f"{imp.file}:{imp.line}: `{imp.text}` climbs: {imp.source} (layer {src}) imports "
                            f"{imp.target} (layer {dst})")
    for comp in _cycles(edges):
        members = set(comp)
        via = [f"{a} -> {b} ({imp.file}:{imp.line})" for (a, b), imp in sorted(edges.items())
               if a in members and b in members]
        problems.append(f"import cycle between {', '.join(comp)}: " + "; ".join(via))
    return problems


def test_no_import_climbs_or_circles_and_every_part_has_a_layer():
    imports, parts = scan()
    problems = check(imports, parts)
    assert not problems, "layer violations (docs/DESIGN.md, Layers):\n" + "\n".join(problems)


def test_the_scan_sees_function_level_and_relative_imports():
    """The checker cannot pass by seeing nothing: cli's commands import the apps inside functions."""
    imports, parts = scan()
    assert {"runtime", "apps", "cli", "vlaforge"} <= parts
    assert any(i.source == "cli" and i.target == "apps" for i in imports)  # inside a command function
    assert any(i.source == "policy" and i.target == "models" for i in imports)
    assert len({(i.source, i.target) for i in imports if i.source != i.target}) > 20


def test_the_checker_catches_a_climbing_import_a_cycle_and_an_unplaced_part():
    def imp(source, target, line=1):
        return Import("src/vlaforge/x.py", line, f"import vlaforge.{target}", source, target)

    parts = {p for layer in LAYERS for p in layer}
    assert check([imp("policy", "models"), imp("apps", "runtime")], parts) == []

    climbs = check([imp("types", "cli", 7)], parts)
    assert len(climbs) == 1 and "src/vlaforge/x.py:7" in climbs[0] and "climbs: types (layer 0)" in climbs[0]

    circles = check([imp("runtime", "evaluation", 3), imp("evaluation", "training", 4),
                     imp("training", "runtime", 5)], parts)  # one layer, so only the cycle is wrong
    assert len(circles) == 1 and circles[0].startswith("import cycle between evaluation, runtime, training")

    unplaced = check([imp("plugins", "types")], parts | {"plugins"})
    assert len(unplaced) == 1 and unplaced[0].startswith("plugins: a top-level part with no layer")
    assert check([], parts - {"sim"})[0].startswith("sim: in LAYERS but no such module")


def _design_layers() -> list[list[str]]:
    text = DESIGN.read_text()
    match = re.search(r"^## Layers\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"{DESIGN}: expected a '## Layers' section"
    rows = re.findall(r"^\| *(\d+) *\| *([^|]*)\|", match.group(1), re.M)
    return [re.findall(r"`([\w.]+?)(?:\.py|/)?`", names) for _, names in rows]


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_design_doc_lists_the_same_layers(layer):
    doc = _design_layers()
    assert len(doc) == len(LAYERS), f"docs/DESIGN.md Layers: expected {len(LAYERS)} rows, got {len(doc)}"
    assert sorted(doc[layer]) == sorted(LAYERS[layer]), (
        f"docs/DESIGN.md Layers, layer {layer}: {doc[layer]} != LAYERS here: {list(LAYERS[layer])}")
