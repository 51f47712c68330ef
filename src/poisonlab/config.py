"""Reading the project's config: a scale over the default, names checked before any job.

``config/config.yaml`` is the embedded default; ``config/scales/<scale>.yaml``
holds what a scale changes. The Snakefile names the scale's file as a second
``configfile:``, so Snakemake merges it over the default and then the command
line's ``--config``/``--configfile`` again, which still win; ``load_scaled``
does the same merge (Snakemake's own) for the ``poisonlab`` commands.
``check_config`` runs the checks a JSON schema cannot: names against the
registries, recipes against the trainer, dataset options against each
loader's signature.
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
    """Deep merge, Snakemake's own (as its ``--config`` over a configfile): mappings key by key, lists replaced."""
    from snakemake.utils import update_config

    merged = copy.deepcopy(base)
    update_config(merged, copy.deepcopy(update))
    return merged


def scale_configfile(config: dict[str, Any], config_dir: str | os.PathLike = "config") -> str:
    """``config/scales/<scale>.yaml`` of ``config['scale']``: the Snakefile's second configfile."""
    scales_dir = Path(config_dir) / "scales"
    known = sorted(path.stem for path in scales_dir.glob("*.yaml"))
    scale = config.get("scale", "embedded")
    if scale not in known:
        raise ConfigError(f"scale: unknown scale '{scale}'; known scales: {', '.join(known)}")
    return str(scales_dir / f"{scale}.yaml")


def load_scaled(path: str | os.PathLike, scale: str | None = None) -> dict[str, Any]:
    """The config file at ``path`` with its scale's file (or ``scale``'s) merged over it, as the Snakefile does.

    The scales are the folder ``scales/`` beside the file; a file with none beside it (a config written
    out whole, as a test or a sweep keeps one) is taken as it is unless ``scale`` asks for one.
    """
    config = load_config(path)
    if scale is None and not (Path(path).parent / "scales").is_dir():
        return config
    if scale is not None:
        config["scale"] = scale
    return merge(config, load_config(scale_configfile(config, Path(path).parent)))


def typed(value: Any) -> Any:
    """Numbers inside lists and mappings of ``--config`` values as numbers.

    Snakemake parses ``--config seeds=[0,1]`` with YAML's BaseLoader, which keeps every nested
    scalar a string ('0', '1'); the schema then rightly refuses them. Applied to the whole merged
    config, since the command line's values are no longer told apart from the files' there.
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
