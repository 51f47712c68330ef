"""The package a cluster installs: ranges in pyproject.toml, the exact versions tested together in constraints.txt."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import ROOT


def locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(pinned)
    return pins


def test_the_lock_pins_every_requirement_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} has no exact version in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt's {name}=={pins[name]} is outside pyproject.toml's {requirement.specifier}")
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")

