"""One registration convention for every extension point: a :class:`Registry` and its decorator.

A contributor adds one module to the extension point's package and decorates the class (or factory
function) in it::

    # backends/my_runtime.py
    from backends.registry import BACKENDS

    @BACKENDS.register("my-runtime")
    class MyRuntimeBackend: ...

The registry imports the modules of its package the first time it is asked for a name
(``Registry(kind, package=...)``), so no list elsewhere has to learn about the new file. A module whose
optional dependency is missing (TensorRT on a CPU machine) still registers its entries if it imports
that dependency lazily, which is the convention; a module that fails to import at all is remembered,
and asking for a name it would have provided says why instead of "unknown".

Why not a library: fast-reid's and mmengine's registries are the model, but both come with a
framework; this is the 100 lines the project needs, with lazy package scanning and error messages
that name the config key. Standard library only: every layer may use it (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or unavailable name was asked for; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message should read as a sentence
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind (detectors, backends, datasets...), filled by :meth:`register`.

    ``kind`` names the extension point in error messages, ``key`` the config key or flag that chooses
    an entry (so an error says what to change), ``package`` the package whose modules register
    entries when imported (scanned once, lazily).
    """

    def __init__(self, kind: str, *, key: str = "", package: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self.package = package
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._scanned = package is None
        self._import_errors: dict[str, str] = {}

    # ---- registering --------------------------------------------------------------------------------

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (and ``aliases``); returns it unchanged."""

        def decorate(obj: T) -> T:
            self.add(name, obj, aliases=aliases)
            return obj

        return decorate

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> None:
        """Register ``obj`` without a decorator. Registering one name twice is a programming error."""
        key = self._normalize(name)
        if not key:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        existing = self._entries.get(key)
        if existing is not None and existing is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({existing!r} and {obj!r})")
        self._entries[key] = obj
        for alias in aliases:
            self._aliases[self._normalize(alias)] = key

    # ---- looking up ---------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (case-insensitive, aliases allowed), or a :class:`RegistryError`."""
        self._scan()
        key = self._normalize(name)
        key = self._aliases.get(key, key)
        if key in self._entries:
            return self._entries[key]
        where = f" in {self.key}" if self.key else ""
        hint = ""
        if self._import_errors:
            broken = "; ".join(f"{mod}: {err}" for mod, err in sorted(self._import_errors.items()))
            hint = f" (modules that failed to import: {broken})"
        raise RegistryError(f"unknown {self.kind} {name!r}{where}; known: {', '.join(self.names()) or 'none'}{hint}")

    def names(self) -> list[str]:
        """Registered names, sorted (aliases left out): what a CLI offers as ``choices``."""
        self._scan()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) in registration order, which is the order modules were imported."""
        self._scan()
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._scan()
        key = self._normalize(name)
        return self._aliases.get(key, key) in self._entries

    def __len__(self) -> int:
        self._scan()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    # ---- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _normalize(name: str) -> str:
        return str(name).strip().lower()

    def _scan(self) -> None:
        """Import every module of ``package`` once, so that their decorators run."""
        if self._scanned:
            return
        self._scanned = True  # set first: a module that looks names up while importing must not recurse
        assert self.package is not None
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if info.name.startswith("_"):
                continue
            module = f"{self.package}.{info.name}"
            try:
                importlib.import_module(module)
            except Exception as exc:  # an optional extension must not take the others down
                self._import_errors[module] = f"{type(exc).__name__}: {exc}"
