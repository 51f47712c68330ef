"""Name → implementation registries that every config name resolves through.

One dict and a decorator per kind (datasets, models, augmentations, …), after
torchvision's ``models/_api.py``: a duplicate name is an error at import time,
an unknown name fails in one place with the list of known names, and
``names()`` feeds the config schema and the CLI choices.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class ConfigError(ValueError):
    """Bad input from a user: names the field and what would have been allowed."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def options(self, name: str) -> list[str]:
        """The keyword options entry ``name`` takes."""
        return _keyword_options(self.get(name)) or []

    def check_options(self, name: str, options: Iterable[str]) -> None:
        """Reject option names entry ``name`` does not take, without calling it."""
        allowed = _keyword_options(self.get(name))
        unknown = sorted(set(options) - set(allowed)) if allowed is not None else []
        if unknown:
            raise ConfigError(
                f"{self.kind} '{name}' got unknown option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )

    def build(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Call the entry with ``options``, rejecting option names it does not take."""
        self.check_options(name, options)
        return self.get(name)(*args, **options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _keyword_options(entry: Callable[..., Any]) -> list[str] | None:
    """Keyword-only parameter names of ``entry``; None when it takes ``**kwargs``.

    A variant registered as ``functools.partial(family, **fixed)`` (``em-class``: the EM family with
    ``classwise=True``) is its family with ``fixed`` settled: those keywords are not its options.
    """
    parameters = inspect.signature(entry).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    fixed = entry.keywords if isinstance(entry, functools.partial) else {}
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in fixed]
