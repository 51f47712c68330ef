"""Name → implementation registries that every config name resolves through, with each entry's facts.

One dict and a decorator per kind (datasets, models, augmentations, …), after
torchvision's ``models/_api.py``: a duplicate name is an error at import time,
an unknown name fails in one place with the list of known names, and
``names()`` feeds the config schema and the CLI choices.

What the rest of the pipeline needs to know about an entry without calling it
is a fact given at its registration (``@DEFENSES.register("jpeg", level="data",
numbered="quality")``): the registry declares its facts and their defaults, so
the DAG reads a defense's level or a poison's need of a GPU instead of building
the entry or guessing from its keywords. ``numbered`` makes ``jpeg-<q>`` a name of
the entry with ``quality=q``: such names are resolved here and nowhere else.
Option values are checked from the entry's annotations (``poisonlab.checks``).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from poisonlab.checks import ConfigError, check_values

T = TypeVar("T", bound=Callable[..., Any])

__all__ = ["ConfigError", "Registry"]


class Registry(Generic[T]):
    """Entries of one kind by name; ``facts`` names the facts an entry may carry and their defaults.

    ``supplied``: keywords every entry takes from its caller, not from config (a poison's ``num_classes``
    and ``generator``), left out of the options an entry is said to take.
    """

    def __init__(self, kind: str, *, facts: Mapping[str, Any] | None = None, supplied: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.supplied = supplied
        self._defaults = {"numbered": None, **(facts or {})}
        self._entries: dict[str, T] = {}
        self._facts: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **facts: Any) -> Callable[[T], T]:
        unknown = sorted(set(facts) - set(self._defaults))
        if unknown:
            raise ValueError(f"{self.kind} '{name}': unknown fact(s) {', '.join(unknown)}; "
                             f"a {self.kind} has: {', '.join(self._defaults)}")

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            self._facts[name] = {**self._defaults, **facts}
            return entry

        return add

    def resolve(self, name: str) -> tuple[str, dict[str, int]]:
        """A config name → (registered name, options its name carries): ``jpeg-10`` → (``jpeg``, {quality: 10})."""
        family, _, number = name.rpartition("-")
        option = self._facts.get(family, {}).get("numbered")
        if option is not None and number.isdigit():
            return family, {option: int(number)}
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.choices())}")
        if self._facts[name]["numbered"] is not None:
            raise ConfigError(f"{self.kind} '{name}' needs its {self._facts[name]['numbered']} in the name, "
                              f"e.g. '{name}-10'")
        return name, {}

    def get(self, name: str) -> T:
        """The entry ``name`` stands for; a numbered name's number is bound as its option."""
        registered, from_name = self.resolve(name)
        entry = self._entries[registered]
        return functools.partial(entry, **from_name) if from_name else entry  # type: ignore[return-value]

    def facts(self, name: str) -> dict[str, Any]:
        """The facts given at ``name``'s registration (a numbered family's or one of its names'), defaults filled in."""
        return dict(self._facts[name if name in self._facts else self.resolve(name)[0]])

    def options(self, name: str) -> list[str]:
        """The keyword options entry ``name`` takes."""
        return [option for option in _keyword_options(self.get(name)) or [] if option not in self.supplied]

    def check_options(self, name: str, options: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> None:
        """Reject options entry ``name`` does not take, or values its annotations do not allow, without calling it.

        ``context`` holds what some values are checked against (``image_size``: (H, W)).
        """
        entry = self.get(name)
        allowed = _keyword_options(entry)
        allowed = None if allowed is None else [option for option in allowed if option not in self.supplied]
        from_name = set(self.resolve(name)[1])
        clash = sorted(from_name & set(options))
        if clash:
            raise ConfigError(f"{self.kind} '{name}': {', '.join(clash)} is given by the name; "
                              "remove it from the options")
        unknown = sorted(set(options) - set(allowed)) if allowed is not None else []
        if unknown:
            raise ConfigError(
                f"{self.kind} '{name}' got unknown option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
        check_values(f"{self.kind} '{name}'", entry, options, context)

    def build(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Call the entry with ``options``, rejecting options it does not take or values it does not allow."""
        self.check_options(name, options)
        return self.get(name)(*args, **options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def choices(self) -> list[str]:
        """Every accepted name, a numbered entry shown as ``jpeg-<quality>``."""
        return sorted(f"{name}-<{facts['numbered']}>" if facts["numbered"] else name
                      for name, facts in self._facts.items())

    def pattern(self) -> str:
        """A regular expression matching exactly the accepted names (Snakemake's wildcard constraint)."""
        return "|".join(rf"{re.escape(name)}-\d+" if facts["numbered"] else re.escape(name)
                        for name, facts in sorted(self._facts.items()))

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(name)  # type: ignore[arg-type]
        except (ConfigError, AttributeError):  # an unknown name, or not a string
            return False
        return True

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
