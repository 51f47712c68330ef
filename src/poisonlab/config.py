"""Reading the project's config: a scale over the default, names checked before any job.

``config/config.yaml`` is the embedded default; ``config/scales/<scale>.yaml``
holds what a scale changes. The Snakefile names the scale's file as a second
``configfile:``, so Snakemake merges it over the default and then the command
line's ``--config``/``--configfile`` again, which still win; ``load_scaled``
does the same merge (Snakemake's own) for the ``poisonlab`` commands.
``validate_config`` checks the config against ``config/schema.yaml``, whose
name enums (datasets, archs, poisons, evaluations) are filled from the
registries when it is read, and fills the schema's defaults; ``check_config``
runs the checks a JSON schema cannot: every option name and value against its
entry's signature (``poisonlab.checks``), numbered defense names, recipes
against the trainer. Each error is one ConfigError naming the field.
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


def schema(path: str | os.PathLike) -> dict[str, Any]:
    """The config schema at ``path`` with its name enums filled from the registries (``$defs``: one a kind)."""
    from poisonlab.data import DATASETS
    from poisonlab.evaluation import EVALUATIONS
    from poisonlab.models import MODELS
    from poisonlab.poisons import POISONS

    loaded = load_config(path)
    for kind, registry in (("dataset", DATASETS), ("arch", MODELS), ("poison", POISONS), ("evaluation", EVALUATIONS)):
        loaded["$defs"][kind]["enum"] = registry.names()
    # Keys of per-dataset options: a dataset, or `default` for every dataset.
    loaded["$defs"]["dataset_or_default"]["enum"] = ["default", *DATASETS.names()]
    return loaded


def validate_config(config: dict[str, Any], schema_path: str | os.PathLike) -> None:
    """Validate ``config`` in place against the schema, filling its defaults; a ConfigError naming the field.

    As Snakemake's ``validate``, which takes only a file and so could not see enums filled at run time.
    """
    import jsonschema

    loaded = schema(schema_path)
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def with_defaults(validator, properties, instance, subschema):
        for name, property_schema in properties.items():
            if isinstance(instance, dict) and "default" in property_schema:
                instance.setdefault(name, copy.deepcopy(property_schema["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    validator = jsonschema.validators.extend(base, {"properties": with_defaults})(loaded)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        field = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"{field}: {error.message}")


def resolve(config: dict[str, Any], root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The Snakefile's config (the scale merged in), checked in place before any job: typed, validated with the
    schema's defaults filled, paper recipes added, every name, option and recipe checked. Returns the grid
    specs all_tables builds (``config/papers/<slug>.yaml``: baselines, then each of ``papers``), checked too.
    """
    from poisonlab.papers import add_paper_recipes, check_papers, load_grids
    from poisonlab.reporting.figures import FIGURES

    resolved = typed(config)
    config.clear()
    config.update(resolved)
    validate_config(config, Path(root) / "config" / "schema.yaml")
    grids = load_grids(Path(root) / "config" / "papers", config)
    config["recipes"] = add_paper_recipes(config, grids)
    check_config(config)
    check_papers(grids, config, FIGURES.names())
    return grids


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
    """Everything a run of this config will need, checked now: one ConfigError naming the field.

    Option values are checked against the entries' annotations, with the facts of the dataset they are for
    (its image size), so a patch that does not divide the images stops here, not in a job.
    """
    from poisonlab.data import DATASETS, image_size
    from poisonlab.defenses import DEFENSES
    from poisonlab.evaluation import EVALUATIONS
    from poisonlab.models import MODELS
    from poisonlab.poisons import POISONS

    for name in config["datasets"]:
        _named(f"datasets.{name}", DATASETS.check_options, name, get_dataset_options(config, name)[0])
    if config["dataset"] not in config["datasets"]:
        raise ConfigError(f"dataset: '{config['dataset']}' has no entry under datasets "
                          f"(defined: {', '.join(sorted(config['datasets']))})")
    for arch in config["archs"]:
        _named("archs", MODELS.get, arch)
    datasets = list(config["datasets"])
    for key, names, registry, options_of in (
            ("poison", config.get("poisons", []), POISONS, get_poison_options),
            ("defense", config.get("defenses", []), DEFENSES, get_defense_options),
            ("evaluation", config.get("evaluations", []), EVALUATIONS, get_evaluation_options)):
        for name in names:
            _named(f"{key}s", registry.get, name)
        options = config.get(f"{key}_options", {})
        for name in {*names, *options}:
            # Every dataset the config names, and those the options name (a paper's dataset may be
            # configured for a scale that does not list it under datasets).
            for dataset in dict.fromkeys([*datasets, *(d for d in options.get(name, {}) if d != "default")]):
                context = {"image_size": image_size(dataset, get_dataset_options(config, dataset)[0])
                           if dataset in config["datasets"] else image_size(dataset)}
                # The field the values come from: the options, or the name itself (jpeg-0).
                field = f"{key}_options.{name}.{dataset}" if name in options else f"{key}s"
                _named(field, registry.check_options, name, options_of(config, name, dataset), context)
    for name in {*config.get("defenses", []), *config.get("defense_options", {})}:
        # A defense's factory checks what its annotations cannot (an L∞ budget at most 1) when built.
        for dataset in datasets:
            field = f"defense_options.{name}.{dataset}" if name in config.get("defense_options", {}) else "defenses"
            _named(field, DEFENSES.build, name, **get_defense_options(config, name, dataset))
    for name in config["recipes"]:
        get_recipe(config, name)
    get_recipe(config, config["recipe"])


def _named(field: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)``, its ConfigError prefixed with the config field it is about."""
    try:
        return check(*args, **kwargs)
    except ConfigError as error:
        raise ConfigError(f"{field}: {error}") from None
