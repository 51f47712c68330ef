"""autoprotonet's settings (config key ``fewshot``) and what each of its DAG jobs is given.

``rules/fewshot.smk`` only wires these to rules. The dataset, recipe and seeds a cell uses are the grid's
(config/papers/autoprotonet.yaml, per scale); this holds:

- ``datasets``: per dataset (a container of ``poisonlab.paths``), its class split (``SPLITS``) and ``pad_to``;
- ``recipes``: per few-shot recipe name, ``FewShotRecipe`` fields;
- ``methods``: per method of ``METHODS`` (the accuracy table's rows), ``recipes`` (per recipe name, fields
  replacing that recipe's for this method: the embedded recipe is shorter for IA and IAP) and ``options``;
  ``autoprotonet-ft`` starts from the ``ae-pretrain`` run of its seed;
- ``evaluation``: ``evaluate_fewshot_run``'s options (way, shots, query, episodes, seed);
- ``prototypes``: ``prototypes_run``'s (way, shot, seed); ``refinement``: ``refinement_run``'s;
- ``resources``: scheduler requests per stage (train, evaluate, study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poisonlab.checks import job_resources, section_entry
from poisonlab.registry import ConfigError

FINE_TUNED, PRETRAINED = "autoprotonet-ft", "ae-pretrain"  # IAP starts from IA's weights
PROTOTYPE_ROWS = {"IA": PRETRAINED, "IAP": FINE_TUNED, "AP": "autoprotonet"}  # the paper's figure rows


@dataclass(frozen=True)
class FewShotSettings:
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    prototypes: dict[str, Any] = field(default_factory=dict)
    refinement: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FewShotSettings:
        settings = cls(**dict(config.get("fewshot") or {}))
        settings.check()
        return settings

    def check(self) -> None:
        from poisonlab.fewshot import METHODS, SPLITS

        for method in self.methods:
            METHODS.get(method)
        for options in self.datasets.values():
            SPLITS.get(options.get("split", ""))
        for name in self.recipes:
            for method in self.methods:
                self.recipe(name, method)  # every combination parses (FewShotRecipe checks its values)
        if FINE_TUNED in self.methods and PRETRAINED not in self.methods:
            raise ConfigError(f"fewshot: methods has {FINE_TUNED} but not {PRETRAINED}, the run it starts from")

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        entry = section_entry("fewshot", "datasets", "dataset", dataset, self.datasets)
        return {"split": None, "pad_to": None, **entry}

    def recipe(self, name: str, method: str) -> dict[str, Any]:
        """The recipe's fields with the method's replacements, checked by ``FewShotRecipe``."""
        from poisonlab.fewshot import FewShotRecipe

        if name not in self.recipes:
            raise ConfigError(f"fewshot: unknown recipe '{name}'; fewshot.recipes defines: {', '.join(self.recipes)}")
        values = {**self.recipes[name], **self.method(method).get("recipes", {}).get(name, {})}
        return FewShotRecipe.from_dict(values, name=f"fewshot recipe {name} ({method})").to_dict()

    def method(self, method: str) -> dict[str, Any]:
        return section_entry("fewshot", "methods", "method", method, self.methods)

    def method_options(self, method: str) -> dict[str, Any]:
        return dict(self.method(method).get("options", {}))

    def job_resources(self, stage: str) -> dict[str, int]:
        return job_resources(self.resources, stage)
