"""Reading the project's config: scales merged over the default, names checked before any job.

``config/config.yaml`` is the embedded default; ``config/scales/<scale>.yaml``
holds what another scale changes and is merged over it, then the command
line's own values are merged again so they still win. ``check_config`` runs
the checks a JSON schema cannot: names against the registries, recipes
against the trainer, dataset options against each loader's signature.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from poisonlab.registry import ConfigError
from poisonlab.training.recipe import Recipe


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        return yaml.safe_load(f) or {}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def known_scales(scales_dir: str | os.PathLike) -> list[str]:
    return ["embedded", *sorted(p.stem for p in Path(scales_dir).glob("*.yaml"))]


def typed(value: Any) -> Any:
    """Numbers inside lists and mappings of ``--config`` values as numbers.

    Snakemake parses ``--config seeds=[0,1]`` with YAML's BaseLoader, which keeps every nested
    scalar a string ('0', '1'); the schema then rightly refuses them.
    """
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, str):
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
    return value


def apply_scale(config: dict[str, Any], scales_dir: str | os.PathLike,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default config with ``config['scale']``'s file merged over it, then ``overrides`` again."""
    overrides = typed(overrides or {})
    scale = config.get("scale", "embedded")
    if scale == "embedded":
        return merge(config, overrides)
    path = Path(scales_dir) / f"{scale}.yaml"
    if not path.exists():
        raise ConfigError(f"scale: unknown scale '{scale}'; known scales: {', '.join(known_scales(scales_dir))}")
    return merge(merge(config, load_config(path)), overrides)


def get_recipe(config: dict[str, Any], name: str) -> Recipe:
    recipes = config.get("recipes", {})
    if name not in recipes:
        raise ConfigError(f"unknown recipe '{name}'; the config defines: {', '.join(sorted(recipes)) or '(none)'}")
    return Recipe.from_dict(recipes[name], name=f"recipes.{name}")


def get_dataset_options(config: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(loader options, subset) of dataset ``name``: ``datasets: {name: {subset: {...}, **options}}``."""
    options = dict(config.get("datasets", {}).get(name) or {})
    return options, options.pop("subset", None)


def _per_dataset(config: dict[str, Any], key: str, name: str, dataset: str) -> dict[str, Any]:
    """``config[key][name]``'s options on a dataset: its ``default`` with the dataset's own merged over."""
    entry = config.get(key, {}).get(name, {})
    return merge(entry.get("default", {}), entry.get(dataset, {}))


def get_poison_options(config: dict[str, Any], poison: str, dataset: str) -> dict[str, Any]:
    """A poison's options on a dataset: ``poison_options: {poison: {default: {...}, <dataset>: {...}}}``."""
    return _per_dataset(config, "poison_options", poison, dataset)


def get_defense_options(config: dict[str, Any], defense: str, dataset: str) -> dict[str, Any]:
    """A defense's options on a dataset, laid out as poison_options (``jpeg-10`` is its own entry)."""
    return _per_dataset(config, "defense_options", defense, dataset)


def get_evaluation_options(config: dict[str, Any], evaluation: str, dataset: str) -> dict[str, Any]:
    return _per_dataset(config, "evaluation_options", evaluation, dataset)


def check_config(config: dict[str, Any]) -> None:
    """Everything a run of this config will need, checked now: one ConfigError naming the field."""
    from poisonlab.data import DATASETS
    from poisonlab.defenses import build_defense
    from poisonlab.evaluation import EVALUATIONS
    from poisonlab.models import MODELS
    from poisonlab.poisons import POISONS

    for name in config["datasets"]:
        DATASETS.check_options(name, get_dataset_options(config, name)[0])
    if config["dataset"] not in config["datasets"]:
        raise ConfigError(f"dataset: '{config['dataset']}' has no entry under datasets "
                          f"(defined: {', '.join(sorted(config['datasets']))})")
    for arch in config["archs"]:
        MODELS.get(arch)
    for poison, per_dataset in config.get("poison_options", {}).items():
        for dataset in per_dataset:
            POISONS.check_options(poison, get_poison_options(config, poison, dataset))
    for defense in {*config.get("defenses", []), *config.get("defense_options", {})}:
        for dataset in config["datasets"]:
            build_defense(defense, get_defense_options(config, defense, dataset))  # raises on bad input
    for evaluation in {*config.get("evaluations", []), *config.get("evaluation_options", {})}:
        for dataset in config["datasets"]:
            EVALUATIONS.check_options(evaluation, get_evaluation_options(config, evaluation, dataset))
    for name in config["recipes"]:
        get_recipe(config, name)
    get_recipe(config, config["recipe"])
