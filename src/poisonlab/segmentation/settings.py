"""robust-seg's settings (config key ``segmentation``) and what each of its DAG jobs is given.

``rules/segmentation.smk`` only wires these to rules. The dataset and the arch a cell uses are the grid's
(config/papers/robust-seg.yaml, per scale); this holds their options and the jobs' settings:

- ``datasets``: per dataset of ``SEG_DATASETS``, its builder's options (mnist5k-seg's counts and grid;
  voc2012 / cityscapes: the user's path, sizes);
- ``models``: per arch of ``SEG_MODELS``, its options (tinyunet's width, depth);
- ``procedures``: per training procedure (the tables' rows), its options (SAT / AdvProp: epsilon, steps …);
- ``judge_seed``: the seed of the independent standard net synthesis is scored by (transfer mIoU);
- ``classifier``: the main job's classifier run that judges a synthesised digit (dataset, arch, seed);
- ``robustness``: ``robustness_run``'s options (attacks: column → attack, the table's columns);
- ``synthesis``: per task (inpaint, generate), ``synthesis_run``'s options;
- ``resources``: scheduler requests per stage (train, robustness, synthesis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poisonlab.checks import job_resources, section_entry
from poisonlab.registry import ConfigError

TASKS = ("inpaint", "generate")


@dataclass(frozen=True)
class SegSettings:
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    procedures: dict[str, dict[str, Any]] = field(default_factory=dict)
    judge_seed: int = 1
    classifier: dict[str, Any] = field(default_factory=lambda: {"dataset": "mnist5k", "arch": "tinycnn", "seed": 0})
    robustness: dict[str, Any] = field(default_factory=dict)
    synthesis: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegSettings:
        settings = cls(**dict(config.get("segmentation") or {}))
        settings.check()
        return settings

    def check(self) -> None:
        from poisonlab.segmentation import SEG_ATTACKS, SEG_DATASETS, SEG_MODELS, SEG_PROCEDURES

        for registry, names in ((SEG_DATASETS, self.datasets), (SEG_MODELS, self.models),
                                (SEG_PROCEDURES, self.procedures)):
            for name in names:
                registry.get(name)
        if "standard" not in self.procedures:
            raise ConfigError("segmentation: procedures needs 'standard' (the judge of synthesis is a standard net)")
        for attack in self.robustness.get("attacks", {}).values():
            SEG_ATTACKS.get(attack.get("attack", ""))
        unknown = sorted(set(self.synthesis) - set(TASKS))
        if unknown:
            raise ConfigError(f"segmentation: synthesis: unknown task(s) {', '.join(unknown)}; "
                              f"tasks: {', '.join(TASKS)}")

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        return section_entry("segmentation", "datasets", "dataset", dataset, self.datasets)

    def model_options(self, arch: str) -> dict[str, Any]:
        return section_entry("segmentation", "models", "arch", arch, self.models)

    def procedure_options(self, procedure: str) -> dict[str, Any]:
        return section_entry("segmentation", "procedures", "procedure", procedure, self.procedures)

    def task_options(self, task: str) -> dict[str, Any]:
        if task not in TASKS:
            raise ConfigError(f"segmentation: task '{task}' is not one of {', '.join(TASKS)}")
        return dict(self.synthesis.get(task, {}))

    def job_resources(self, stage: str) -> dict[str, int]:
        return job_resources(self.resources, stage)
