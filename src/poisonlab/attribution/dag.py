"""The attribution stage's settings (config key ``attribution``) and the files each of its jobs reads.

``rules/attribution.smk`` only wires these lists to rules: which reference models, subset shards,
support units and backbone a job needs follows from the config here, where it is tested without
Snakemake. One attribution *setting* is (dataset, attributed arch, retrain recipe, seed): its files
lie under ``Paths.attribution_dir`` (``{results}/attribution/{dataset}/{arch}/{recipe}/seed{seed}``);
the SSL backbone and its features under ``Paths.ssl_dir``, as they do not depend on the retrained model.

- Reference models are ordinary runs of the ``train`` rule (clean data, the setting's arch and recipe,
  seeds 0..references-1): their mean prediction picks targets and flip classes, and their weights are
  TRAK's checkpoints (so TRAK's M is ``references``).
- The subset pool is two parts, each in shards of ``subsets.shard`` models: ``fit`` (the models the
  ``datamodels`` attributor fits on) and ``heldout`` (the models LDS scores every attributor on). The
  parts draw their masks and model seeds from separate streams, so no attributor sees a held-out mask.
- A support unit is one (attributor, kind, target): target ``t`` is the t-th support target of
  ``targets.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from poisonlab.paths import Paths
from poisonlab.registry import ConfigError

PARTS = {"fit": 1, "heldout": 2}  # subset-pool parts and their seed streams
# Attributors that read the SSL features, TRAK's checkpoints, or the fit part of the subset pool.
NEEDS_FEATURES = ("ssl-esvm", "ssl-knn")
NEEDS_CHECKPOINTS = ("trak",)
NEEDS_SUBSETS = ("datamodels",)


@dataclass(frozen=True)
class SubsetPool:
    fit: int = 0  # models datamodels fits on (0: datamodels is not run)
    heldout: int = 10  # models LDS scores on (at least 3)
    alpha: float = 0.5  # fraction of the training set each model trains on
    shard: int = 5  # models a job trains

    def shards(self, part: str) -> int:
        return math.ceil(getattr(self, part) / self.shard)

    def shard_range(self, part: str, shard: int) -> tuple[int, int]:
        """Model indices [start, stop) of ``shard`` within ``part``."""
        start = shard * self.shard
        return start, min(start + self.shard, getattr(self, part))


@dataclass(frozen=True)
class AttributionSettings:
    """``config['attribution']``; the defaults are the embedded scale's (config/config.yaml repeats them)."""

    ssl: dict[str, Any] = field(default_factory=dict)  # poisonlab.attribution.ssl.SSLConfig's keys
    backbone: str | None = None  # a user's backbone checkpoint instead of SSL pretraining
    references: int = 3
    targets: int = 4  # support targets
    lds_targets: int = 100  # targets LDS is measured on (the support targets are among them)
    k: int = 400  # K: length of every ranking, the largest k probed
    grid: tuple[int, ...] = (50, 100, 200, 400)  # the k probed; or grid_step: every multiple of it up to K
    grid_step: int | None = None
    retrains: int = 1  # R: retrains a probe
    budget: int | None = None  # most probes a search may run (the repository's search_budget)
    attributors: tuple[str, ...] = ()  # the attributors run (LDS and cost rows)
    attributor_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → its options
    removal: tuple[str, ...] = ()  # attributors whose removal support is searched
    mislabel: tuple[str, ...] = ()  # ... and mislabel support
    subsets: SubsetPool = field(default_factory=SubsetPool)
    resources: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AttributionSettings:
        values = dict(config.get("attribution") or {})
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"attribution: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        for key in ("grid", "attributors", "removal", "mislabel"):
            if key in values:
                values[key] = tuple(values[key])
        values["subsets"] = SubsetPool(**(values.get("subsets") or {}))
        if values.get("grid_step"):
            values["grid"] = tuple(range(values["grid_step"], values.get("k", cls.k) + 1, values["grid_step"]))
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        from poisonlab.attribution import ATTRIBUTORS
        from poisonlab.attribution.ssl import SSLConfig

        SSLConfig.from_dict(self.ssl)
        for name in {*self.attributors, *self.attributor_options}:
            ATTRIBUTORS.check_options(name, self.attributor_options.get(name) or {})
        for kind in ("removal", "mislabel"):
            for name in getattr(self, kind):
                if name not in self.attributors:
                    raise ConfigError(f"attribution.{kind}: '{name}' is not one of attribution.attributors "
                                      f"({', '.join(self.attributors)})")
        if list(self.grid) != sorted(set(self.grid)) or self.grid[0] < 1 or self.grid[-1] != self.k:
            raise ConfigError(f"attribution.grid must be increasing positive k ending at attribution.k={self.k}; "
                              f"got {list(self.grid)}")
        if not 1 <= self.targets <= self.lds_targets:
            raise ConfigError(f"attribution.targets must lie in [1, lds_targets={self.lds_targets}]; got {self.targets}")
        if self.references < 1 or self.retrains < 1:
            raise ConfigError("attribution.references and attribution.retrains must be >= 1")
        if self.subsets.heldout < 3:
            raise ConfigError(f"attribution.subsets.heldout must be >= 3 (LDS); got {self.subsets.heldout}")
        if "datamodels" in self.attributors and self.subsets.fit < 2:
            raise ConfigError("attribution: datamodels needs attribution.subsets.fit >= 2 subset models")

    def options(self, attributor: str) -> dict[str, Any]:
        """The attributor's options, its ranking length K included."""
        if attributor not in self.attributors:
            raise ConfigError(f"attribution: '{attributor}' is not one of attribution.attributors "
                              f"({', '.join(self.attributors)})")
        return {"k": self.k, **(self.attributor_options.get(attributor) or {})}

    def job_resources(self, stage: str) -> dict[str, int]:
        return {"gpu": 0, "runtime": 30, "mem_mb": 4000, "cpus": 1, **self.resources.get(stage, {})}


# ---------------------------------------------------------------- the files a job reads


def reference_models(paths: Paths, dataset: str, arch: str, recipe: str, settings: AttributionSettings) -> list[str]:
    """The reference runs' ``model.pt``: ``train`` rule outputs on the clean data."""
    return [f"{paths.run_dir(dataset, 'clean', 'none', arch, recipe, seed)}/model.pt"
            for seed in range(settings.references)]


def subset_shards(paths: Paths, dataset: str, arch: str, recipe: str, seed: int | str, part: str,
                  settings: AttributionSettings) -> list[str]:
    root = paths.attribution_dir(dataset, arch, recipe, seed)
    return [f"{root}/subsets/{part}/shard{i}.npz" for i in range(settings.subsets.shards(part))]


def backbone(paths: Paths, dataset: str, seed: int | str, settings: AttributionSettings) -> str:
    """The backbone the features come from: the user's checkpoint, or the SSL run's ``backbone.pt``."""
    if settings.backbone:
        return settings.backbone
    from poisonlab.attribution.ssl import SSLConfig

    ssl = SSLConfig.from_dict(settings.ssl)
    return f"{paths.ssl_dir(dataset, ssl.method, ssl.arch, seed)}/backbone.pt"


def attributor_inputs(paths: Paths, dataset: str, arch: str, recipe: str, seed: int | str, attributor: str,
                      settings: AttributionSettings) -> dict[str, Any]:
    """What attributor ``attributor`` reads beyond the clean data and the targets."""
    inputs: dict[str, Any] = {}
    if attributor in NEEDS_FEATURES:
        inputs["features"] = f"{paths.attribution_dir(dataset, arch, recipe, seed)}/features.npz"
        if not settings.backbone:  # the SSL run's record: its cost is the method's upstream cost
            inputs["ssl_metrics"] = backbone(paths, dataset, seed, settings).replace("backbone.pt", "metrics.json")
    if attributor in NEEDS_CHECKPOINTS:
        inputs["references"] = reference_models(paths, dataset, arch, recipe, settings)
    if attributor in NEEDS_SUBSETS:
        inputs["subsets"] = subset_shards(paths, dataset, arch, recipe, seed, "fit", settings)
    return inputs


def support_units(paths: Paths, dataset: str, arch: str, recipe: str, seed: int | str, attributor: str, kind: str,
                  settings: AttributionSettings) -> list[str]:
    root = paths.attribution_dir(dataset, arch, recipe, seed)
    return [f"{root}/support/{attributor}/{kind}/target{t}.json" for t in range(settings.targets)]
