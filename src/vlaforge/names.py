"""Names looked up by the user: the did-you-mean for a typo, and the registry every named thing lives in
(presets and training presets: factories; heads and simulators: frozen specs whose classes load lazily).

Pure Python (``difflib``, ``importlib``); every "unknown ...; did you mean ...?" message in the package is
built here.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def hint(matches: Iterable[str], show: Callable[[str], str] = repr, otherwise: str = "") -> str:
    """``"; did you mean 'a'?"`` (``'a' or 'b'`` for several matches), or ``otherwise`` when there is none."""
    shown = [show(m) for m in matches]
    return f"; did you mean {' or '.join(shown)}?" if shown else otherwise


def did_you_mean(name: Any, known: Iterable[Any], *, n: int = 1, cutoff: float = 0.6,
                 otherwise: str = "") -> str:
    """The hint for the ``n`` names of ``known`` closest to ``name`` (``difflib`` ratio >= ``cutoff``)."""
    return hint(difflib.get_close_matches(str(name), [str(k) for k in known], n=n, cutoff=cutoff),
                otherwise=otherwise)


def unknown_name(kind: str, name: str, known: Iterable[str], *, exc: type[Exception] = ValueError,
                 known_label: str = "Known", n: int = 1, otherwise: str = "") -> Exception:
    """``exc("unknown <kind> 'name'; did you mean 'x'? <known_label>: a, b, c")`` (known names sorted)."""
    known = sorted(known)
    return exc(f"unknown {kind} {name!r}{did_you_mean(name, known, n=n, otherwise=otherwise)} "
               f"{known_label}: {', '.join(known)}")


def load_object(path: str) -> Any:
    """The object an import path ``"package.module:Name"`` names, imported now (so a registry stays light)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"import path: expected 'package.module:Name', got {path!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named zero-argument factories (or ready values, ``add``), each registered once and looked up by name
    with a did-you-mean. ``names(sort=False)``: in the order registered."""

    def __init__(self, kind: str, known_label: str = "Known") -> None:
        self.kind, self.known_label = kind, known_label  # kind "preset": "unknown preset 'x'", ...
        self._factories: dict[str, Callable[[], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
        """Decorator: ``@registry.register("name")`` on a zero-argument function."""

        def deco(fn: Callable[[], T]) -> Callable[[], T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = fn
            return fn

        return deco

    def add(self, name: str, value: T, doc: str = "") -> T:
        """Register a ready value (a frozen spec) under ``name``: ``get(name)`` gives that same value back."""

        def factory() -> T:
            return value

        factory.__doc__ = doc
        self.register(name)(factory)
        return value

    def names(self, sort: bool = True) -> list[str]:
        return sorted(self._factories) if sort else list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __len__(self) -> int:
        return len(self._factories)

    def factory(self, name: str) -> Callable[[], T]:
        try:
            return self._factories[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._factories, exc=KeyError,
                               known_label=self.known_label) from None

    def get(self, name: str) -> T:
        """What the factory called ``name`` makes (a fresh object every call)."""
        return self.factory(name)()

    def doc(self, name: str) -> str:
        """The factory's docstring on one line."""
        return " ".join((self.factory(name).__doc__ or "").split())


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's ``__getattr__`` and ``__all__`` when its public names live in its modules and load on first
    use (``exports``: name -> module of ``package``), so importing the package stays light."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
