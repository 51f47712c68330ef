"""Allowed option values, declared in annotations and checked in one place with one wording.

An entry's keyword options say what values they take in their annotations::

    @POISONS.register("cuda")
    def cuda(images, labels, *, num_classes, generator, kernel_size: OddSize = 3,
             blur_parameter: Fraction = 0.3): ...

``Registry.check_options`` reads these (``constraints``) and checks every value,
the defaults included, so a config is checked when it is read (``check_config``,
before any job) and a call through the registry (``apply_poison``,
``build_defense``, ``evaluate_run``) the same way. Recipes' fields use the same
annotations (``Recipe.from_dict``). Every failure reads
``<where>: <option> must be <allowed>; got <value>``.

A bound may name another option (``Number(gt=0, le="epsilon")``: a step no larger
than the radius); a constraint may need the data (``DividesImage``: the image
size, from the dataset's registration when the config is read, from the images
when a job runs) and is left to the job when the size is not known.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin



class ConfigError(ValueError):
    """Bad input from a user: names the field and what would have been allowed."""


def option_error(where: str, option: str, allowed: str, value: Any) -> ConfigError:
    """The one wording of a bad option value."""
    return ConfigError(f"{where}: {option} must be {allowed}; got {value!r}")


@dataclass(frozen=True)
class Number:
    """A number (an integer when ``integer``; odd when ``odd``) within bounds; a bound may name another option.

    ``when`` (the options → bool) limits the check to some settings: an L∞ radius is at most 1, an L2 one is not.
    """

    gt: float | str | None = None
    ge: float | str | None = None
    lt: float | str | None = None
    le: float | str | None = None
    integer: bool = False
    odd: bool = False
    when: Callable[[Mapping[str, Any]], bool] | None = None

    def _bounds(self, options: Mapping[str, Any]) -> list[tuple[str, float, str]]:
        """(operator, value, how it is shown) of each bound set, another option's value looked up."""
        bounds = []
        for op, bound in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)):
            if isinstance(bound, str):
                other = options.get(bound)
                if isinstance(other, (int, float)) and not isinstance(other, bool):  # unset or itself bad: no bound
                    bounds.append((op, other, f"{bound} ({other!r})"))
            elif bound is not None:
                bounds.append((op, bound, repr(bound)))
        return bounds

    def allows(self, value: Any, options: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        if self.when is not None and not self.when(options):
            return True
        kinds = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        if self.odd and value % 2 == 0:
            return False
        compare = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
        return all(compare[op](value, bound) for op, bound, _ in self._bounds(options))

    def describe(self, options: Mapping[str, Any], context: Mapping[str, Any]) -> str:
        bounds = self._bounds(options)
        if self.integer and [op for op, _, _ in bounds] == [">=", "<="]:
            return f"an integer in {bounds[0][1]}..{bounds[1][1]}"
        shown = " and ".join(f"{op} {text}" for op, _, text in bounds)
        if not self.integer:
            return shown or "a number"
        kind = "an odd integer" if self.odd else "an integer"
        return f"{kind} {shown}".strip()


@dataclass(frozen=True)
class OneOf:
    """One of ``values``: a tuple, or a Registry read when checked (every entry registered by then)."""

    values: Iterable[Any]

    def allows(self, value: Any, options: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        return value in list(self.values)

    def describe(self, options: Mapping[str, Any], context: Mapping[str, Any]) -> str:
        return f"one of {', '.join(map(str, self.values))}"


@dataclass(frozen=True)
class DividesImage:
    """An integer dividing the image's height and width (``context['image_size']``: (H, W)); unchecked without it."""

    def allows(self, value: Any, options: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        size = context.get("image_size")
        return size is None or (isinstance(value, int) and value > 0 and all(side % value == 0 for side in size))

    def describe(self, options: Mapping[str, Any], context: Mapping[str, Any]) -> str:
        return "a divisor of the image size {}x{}".format(*context["image_size"])


Constraint = Number | OneOf | DividesImage

# The common kinds of option, by what they mean.
Count = Annotated[int, Number(ge=1, integer=True)]  # steps, epochs, batch sizes, repeats
Seed = Annotated[int, Number(ge=0, integer=True)]
Positive = Annotated[float, Number(gt=0)]  # rates, spreads, L2 budgets
Fraction = Annotated[float, Number(gt=0, le=1.0)]  # L∞ budgets in [0, 1] pixel units, probabilities
NonNegative = Annotated[float, Number(ge=0)]


def constraints(entry: Callable[..., Any]) -> dict[str, tuple[Constraint, ...]]:
    """The constraints of each keyword-only parameter of ``entry`` (a function, a partial of one, or a dataclass).

    Annotations are strings under ``from __future__ import annotations``; each is evaluated in its
    module's namespace. One that names something not there at run time (an import under
    TYPE_CHECKING) is not a constraint.
    """
    function = getattr(entry, "func", entry)
    namespace = getattr(inspect.getmodule(function), "__dict__", {})
    found = {}
    for parameter in inspect.signature(entry).parameters.values():
        if parameter.kind is not parameter.KEYWORD_ONLY and not inspect.isclass(entry):
            continue
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 -- our own source's annotations
            except Exception:  # noqa: BLE001 -- a name only a type checker sees
                continue
        found[parameter.name] = _constraints_of(annotation)
    return {name: found for name, found in found.items() if found}


def _constraints_of(annotation: Any) -> tuple[Constraint, ...]:
    """Constraints of an ``Annotated`` type, also inside ``X | None``."""
    if get_origin(annotation) is Annotated:
        return tuple(meta for meta in annotation.__metadata__ if isinstance(meta, Constraint))
    return tuple(found for arg in get_args(annotation) for found in _constraints_of(arg))


def check_values(where: str, entry: Callable[..., Any], options: Mapping[str, Any],
                 context: Mapping[str, Any] | None = None) -> None:
    """Check ``options`` (defaults of ``entry`` filled in) against ``entry``'s annotations.

    None is allowed where it is the default (a value computed from the others, or no limit).
    """
    parameters = inspect.signature(entry).parameters
    resolved = {name: p.default for name, p in parameters.items() if p.default is not p.empty}
    resolved.update(getattr(entry, "keywords", {}) or {})
    resolved.update(options)
    for option, allowed in constraints(entry).items():
        value = resolved.get(option)
        if value is None and parameters[option].default is None:
            continue
        for constraint in allowed:
            if not constraint.allows(value, resolved, context or {}):
                raise option_error(where, option, constraint.describe(resolved, context or {}), value)


def check_value(where: str, option: str, value: Any, allowed: Any) -> None:
    """Check one value against an annotation (``Fraction``, ``Annotated[int, Number(...)]``) chosen by something
    the entry's options do not hold (an adversarial-training factory's norm, fixed when it was registered)."""
    for constraint in _constraints_of(allowed):
        if not constraint.allows(value, {}, {}):
            raise option_error(where, option, constraint.describe({}, {}), value)


def section_entry(section: str, key: str, what: str, name: str, entries: Mapping[str, Any], hint: str = "") -> dict:
    """A copy of ``entries[name]`` (the config's ``<section>.<key>``), or the one error naming what is defined."""
    if name not in entries:
        raise ConfigError(f"{section}: {what} '{name}' has no entry under {section}.{key} "
                          f"({hint}defined: {', '.join(entries)})")
    return dict(entries[name] or {})


# A paper stage's job when its config's `<section>.resources.<stage>` says nothing: one CPU, half an hour.
DEFAULT_JOB_RESOURCES = {"gpu": 0, "runtime": 30, "mem_mb": 4000, "cpus": 1}


def job_resources(resources: Mapping[str, Mapping[str, int]], stage: str) -> dict[str, int]:
    """The threads and scheduler requests of a ``stage`` job: the defaults, overridden by ``resources[stage]``."""
    return {**DEFAULT_JOB_RESOURCES, **resources.get(stage, {})}
