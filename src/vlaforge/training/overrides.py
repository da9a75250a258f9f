"""Dotted-path overrides of frozen config dataclasses, typed parsing, and help generated from field docs.

    cfg = apply_overrides(cfg, ["policy.head=tokens", "batch_size=32", "stages.align.lr=1e-3"])
    for f in describe_fields(cfg): print(f.path, f.type_name, f.value, f.doc)

A path walks nested dataclasses (``policy.head``), tuples of dataclasses by index or by ``name``
(``stages.0.lr``, ``stages.align.lr``) and mappings of dataclasses by key
(``policy.embodiments.sawyer.state_dim``). Values are parsed by the field's annotation: bool, int, float, str,
Literal choices, tuples (comma-separated or a JSON list), mappings and dataclasses (JSON). An unknown path or
a bad value is an error naming what was expected, with a did-you-mean. A dataclass with ``field_aliases()``
(``{old_name: "new.path"}``) still accepts its old field names (``policy.num_bins`` for
``policy.head_settings.tokens.num_bins``). Field docs come from attribute docstrings, ``metadata["help"]``,
inline ``# comments`` or a fallback table, in that order.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vlaforge.config import PolicyConfig
from vlaforge.names import did_you_mean, hint

#: docs for PolicyConfig fields that carry no comment in vlaforge/config.py
_FALLBACK_DOCS: dict[tuple[type, str], str] = {
    (PolicyConfig, "chunk_size"): "Actions per predicted chunk (H).",
    (PolicyConfig, "image_size"): "Square image side in pixels the policy takes (64..224).",
    (PolicyConfig, "cameras"): "Camera names, in order (observation.images.<camera>).",
    (PolicyConfig, "language_encoder"): "minilm (frozen all-MiniLM-L6-v2) or hash "
                                        "(small trainable bag of words).",
    (PolicyConfig, "embodiments"): "Robots: JSON {name: {state_dim, action_dim}}; taken from the dataset "
                                   "when embodiments_from_data is true.",
    (PolicyConfig, "d_model"): "Width of the fusion transformer.",
    (PolicyConfig, "depth"): "Layers of the fusion transformer.",
    (PolicyConfig, "heads"): "Attention heads of the fusion transformer.",
    (PolicyConfig, "mlp_ratio"): "MLP width of a transformer layer, as a multiple of d_model.",
    (PolicyConfig, "dropout"): "Dropout in the fusion transformer.",
    (PolicyConfig, "hash_buckets"): "Hash buckets of the hash language encoder.",
    (PolicyConfig, "normalization"): "quantile (q01..q99 -> -1..1) or mean_std.",
}


class OverrideError(ValueError):
    """A command-line override that names no field or carries a value of the wrong type."""


@dataclass(frozen=True)
class FieldInfo:
    path: str
    type_name: str
    value: Any
    doc: str


# ------------------------------------------------------------------------------------------------- field docs


def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` for a dataclass, from its attribute docstrings, metadata, comments or the fallback
    table."""
    docs: dict[str, str] = {}
    try:
        lines, _ = inspect.getsourcelines(cls)
        src = textwrap.dedent("".join(lines))
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError, SyntaxError, IndexError):
        lines, body = [], []
    src_lines = textwrap.dedent("".join(lines)).splitlines()
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        name = node.target.id
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                and isinstance(nxt.value.value, str):
            docs[name] = " ".join(inspect.cleandoc(nxt.value.value).replace("``", "`").split())
            continue
        line = src_lines[node.end_lineno - 1] if node.end_lineno and node.end_lineno <= len(src_lines) else ""
        if "#" in line:  # inline comment (field defaults here hold no '#')
            docs[name] = line.split("#", 1)[1].strip()
            continue
        prev = []  # a comment block directly above, used when nothing better exists
        j = node.lineno - 2
        while j >= 0 and src_lines[j].strip().startswith("#"):
            prev.insert(0, src_lines[j].strip().lstrip("#").strip())
            j -= 1
        if prev:
            docs[name] = " ".join(prev)
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("help") if f.metadata else None
        fallback = _FALLBACK_DOCS.get((cls, f.name))
        own = docs.get(f.name)
        # a bare section comment ("# fusion transformer") is weaker than the fallback table
        out[f.name] = meta or (own if own and (fallback is None or len(own) > 30) else fallback) or own or ""
    return out


def _union_args(tp: Any) -> tuple | None:
    """The alternatives of ``A | B`` / ``Union[A, B]``, or None."""
    import types

    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else None


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _union_args(tp):
        return "|".join(_type_name(a) for a in args)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{_type_name(args[0])}]"
        return "(" + ", ".join(_type_name(a) for a in args) + ")"
    if _is_mapping(tp):
        return f"{{{_type_name(args[0])}: {_type_name(args[1])}}}"
    if dataclasses.is_dataclass(tp):
        return tp.__name__
    return getattr(tp, "__name__", str(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _format_value(v: Any) -> str:
    if dataclasses.is_dataclass(v):
        return json.dumps(_jsonable(v))
    if isinstance(v, (tuple, list)):
        if v and dataclasses.is_dataclass(v[0]):
            return json.dumps(_jsonable(v))
        return ",".join(str(x) for x in v) if v else "[]"
    if isinstance(v, Mapping):
        return json.dumps(_jsonable(v))
    if isinstance(v, bool):
        return str(v).lower()
    return str(v) if v != "" else '""'


def _jsonable(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def describe_fields(config: Any, prefix: str = "") -> list[FieldInfo]:
    """Every settable path of a config (nested dataclasses expanded; stage fields as ``stages.N.<field>``)."""
    out: list[FieldInfo] = []
    cls = type(config)
    docs, hints = field_docs(cls), _hints(cls)
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(config, f.name)
        path = prefix + f.name
        if dataclasses.is_dataclass(tp):
            out.extend(describe_fields(value, path + "."))
            continue
        out.append(FieldInfo(path, _type_name(tp), _format_value(value), docs[f.name]))
        elem = _tuple_elem(tp)
        if elem is not None and dataclasses.is_dataclass(elem):
            edocs, ehints = field_docs(elem), _hints(elem)
            for ef in dataclasses.fields(elem):
                out.append(FieldInfo(f"{path}.N.{ef.name}", _type_name(ehints[ef.name]), "", edocs[ef.name]))
    return out


def help_table(config: Any, width: int = 100) -> str:
    """Fields as an indented table: path, type, value, then the doc wrapped below."""
    lines = []
    for f in describe_fields(config):
        value = f" = {f.value}" if f.value != "" else ""
        lines.append(f"  --{f.path}  {f.type_name}{value}")
        if f.doc:
            lines.extend(textwrap.wrap(f.doc, width=width, initial_indent="      ",
                                       subsequent_indent="      "))
    return "\n".join(lines)


def all_paths(config: Any) -> list[str]:
    return [f.path for f in describe_fields(config)]


# ------------------------------------------------------------------------------------------------- parsing


def _tuple_elem(tp: Any) -> Any:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _is_mapping(tp: Any) -> bool:
    import collections.abc

    return typing.get_origin(tp) in (dict, collections.abc.Mapping)


def parse_value(tp: Any, text: Any, path: str) -> Any:
    """Parse ``text`` (a str from the command line, or an already-decoded JSON value) as type ``tp``."""

    def fail(expected: str) -> OverrideError:
        return OverrideError(f"--{path}: expected {expected}, got {text!r}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    alternatives = _union_args(tp)
    if alternatives:  # the first alternative that parses (bool | Literal["auto"]: true, false or auto)
        for alt in alternatives:
            try:
                return parse_value(alt, text, path)
            except OverrideError:
                continue
        names = " or ".join("a bool (true/false)" if a is bool else _type_name(a) for a in alternatives)
        raise fail(names)
    if tp is bool:
        if isinstance(text, bool):
            return text
        t = str(text).strip().lower()
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise fail("a bool (true/false)")
    if tp is int:
        if isinstance(text, int) and not isinstance(text, bool):
            return text
        try:
            return int(str(text).replace("_", ""))
        except ValueError:
            try:
                f = float(str(text))
            except ValueError:
                raise fail("an int") from None
            if f.is_integer():
                return int(f)
            raise fail("an int") from None
    if tp is float:
        try:
            return float(text)
        except (TypeError, ValueError):
            raise fail("a float") from None
    if tp is str:
        return str(text)
    if origin is Literal:
        if text in args:
            return text
        raise OverrideError(f"--{path}: expected one of {list(args)}, got {text!r}"
                            f"{did_you_mean(text, args, cutoff=0.4)}")
    elem = _tuple_elem(tp)
    if elem is not None or origin is tuple:
        items = _as_list(text, path, split=not dataclasses.is_dataclass(elem))
        if elem is None:  # fixed-size tuple
            if len(items) != len(args):
                raise fail(f"{len(args)} values")
            return tuple(parse_value(a, x, path) for a, x in zip(args, items))
        return tuple(parse_value(elem, x, f"{path}.{i}") for i, x in enumerate(items))
    if _is_mapping(tp):
        obj = _as_json(text, path, dict, "a JSON object")
        return {str(k): parse_value(args[1], v, f"{path}.{k}") for k, v in obj.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(text, tp):
            return text
        obj = _as_json(text, path, dict, "a JSON object")
        known = [f.name for f in dataclasses.fields(tp)]
        for k in obj:
            if k not in known:
                raise OverrideError(f"--{path}: unknown field {k!r}{did_you_mean(k, known)}"
                                    f" Known fields: {', '.join(known)}")
        hints = _hints(tp)
        return tp(**{k: parse_value(hints[k], v, f"{path}.{k}") for k, v in obj.items()})
    raise OverrideError(f"--{path}: cannot parse a value of type {tp!r}")


def _as_json(text: Any, path: str, kind: type, expected: str) -> Any:
    if isinstance(text, kind):
        return text
    try:
        obj = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise OverrideError(f"--{path}: expected {expected}, got {text!r}") from None
    if not isinstance(obj, kind):
        raise OverrideError(f"--{path}: expected {expected}, got {text!r}")
    return obj


def _as_list(text: Any, path: str, split: bool) -> list:
    if isinstance(text, (list, tuple)):
        return list(text)
    t = str(text).strip()
    if t.startswith("["):
        return _as_json(t, path, list, "a JSON list")
    if not split:
        raise OverrideError(f"--{path}: expected a JSON list, got {text!r}")
    return [x.strip() for x in t.split(",") if x.strip()] if t else []


# ------------------------------------------------------------------------------------------------- applying


def split_override(item: str | tuple[str, Any]) -> tuple[str, Any]:
    if isinstance(item, tuple):
        return item
    if "=" not in item:
        raise OverrideError(f"override: expected path=value, got {item!r}")
    path, value = item.split("=", 1)
    return path.strip().lstrip("-"), value


def apply_overrides(config: Any, overrides: Iterable[str | tuple[str, Any]]) -> Any:
    """A new config with each ``path=value`` applied in order (validation runs on every rebuilt dataclass)."""
    for item in overrides:
        path, value = split_override(item)
        config = _set(config, path.split("."), value, path, config)
    return config


def _unknown(path: str, root: Any) -> OverrideError:
    # score each known path on the whole path and on its last segment: "--hed" -> "--policy.head"
    leaf = path.rsplit(".", 1)[-1]
    best, best_score = None, 0.0
    for p in all_paths(root):
        score = max(difflib.SequenceMatcher(None, path, p).ratio(),
                    difflib.SequenceMatcher(None, leaf, p.rsplit(".", 1)[-1]).ratio() - 0.05)
        if score > best_score:
            best, best_score = p, score
    suggestion = hint([f"--{best}"] if best is not None and best_score >= 0.6 else [], show=str)
    return OverrideError(f"--{path}: unknown field{suggestion} (vlaforge train --help lists every field)")


def _set(obj: Any, parts: Sequence[str], value: Any, path: str, root: Any) -> Any:
    cls = type(obj)
    if not dataclasses.is_dataclass(obj):
        raise _unknown(path, root)
    names = [f.name for f in dataclasses.fields(cls)]
    name = parts[0]
    aliases = cls.field_aliases() if hasattr(cls, "field_aliases") else {}  # old names: num_bins -> a path
    if name not in names and name in aliases:
        return _set(obj, [*aliases[name].split("."), *parts[1:]], value, path, root)
    if name not in names:
        raise _unknown(path, root)
    tp = _hints(cls)[name]
    current = getattr(obj, name)
    rest = parts[1:]
    if not rest:
        new = parse_value(tp, value, path)
    elif dataclasses.is_dataclass(tp):
        new = _set(current, rest, value, path, root)
    elif _tuple_elem(tp) is not None and dataclasses.is_dataclass(_tuple_elem(tp)):
        items = list(current)
        key = rest[0]
        idx = _find_item(items, key, path)
        if len(rest) == 1:
            items[idx] = parse_value(_tuple_elem(tp), value, path)
        else:
            items[idx] = _set(items[idx], rest[1:], value, path, root)
        new = tuple(items)
    elif _is_mapping(tp) and dataclasses.is_dataclass(typing.get_args(tp)[1]):
        d = dict(current)
        key = rest[0]
        vtp = typing.get_args(tp)[1]
        if len(rest) == 1:
            d[key] = parse_value(vtp, value, path)
        elif key in d:
            d[key] = _set(d[key], rest[1:], value, path, root)
        else:
            raise OverrideError(f"--{path}: no entry {key!r}; present: {sorted(d)}. Set a new one as JSON: "
                                f"--{'.'.join(path.split('.')[:-len(rest) + 1])}={{...}}")
        new = d
    else:
        raise _unknown(path, root)
    try:
        return dataclasses.replace(obj, **{name: new})
    except (TypeError, ValueError) as e:
        if isinstance(e, OverrideError):
            raise
        raise OverrideError(f"--{path}={value}: {e}") from None


def _find_item(items: list, key: str, path: str) -> int:
    if key.lstrip("-").isdigit():
        i = int(key)
        if not -len(items) <= i < len(items):
            raise OverrideError(f"--{path}: expected an index in [0, {len(items)}), got {i}")
        return i % len(items)
    names = [getattr(x, "name", None) for x in items]
    if key in names:
        return names.index(key)
    raise OverrideError(f"--{path}: expected an index or one of the names {names}, got {key!r}"
                        f"{did_you_mean(key, [n for n in names if n])}")
