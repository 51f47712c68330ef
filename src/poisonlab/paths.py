"""Where the pipeline's files lie, defined once for the rules, ``poisonlab train``, ``launch`` and the tables.

The config's ``paths: {data, results}`` roots a scale's containers and runs, so
scales never overwrite each other's (DESIGN.md, "Data flow"). A method called
without names returns its Snakemake pattern, wildcards in braces:
``Paths("data", "results").run_dir()`` is
``results/runs/{dataset}/{poison}/{defense}/{arch}/{recipe}/seed{seed}``; with
names it returns that one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Paths:
    data: str = "data"
    results: str = "results"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Paths:
        return cls(**config.get("paths", {}))

    def clean(self, dataset: str = "{dataset}") -> str:
        return f"{self.data}/clean/{dataset}.npz"

    def poisoned(self, dataset: str = "{dataset}", poison: str = "{poison}") -> str:
        return f"{self.data}/poisoned/{dataset}/{poison}.npz"

    def sanitized(self, dataset: str = "{dataset}", poison: str = "{poison}", defense: str = "{defense}") -> str:
        return f"{self.data}/sanitized/{dataset}/{poison}/{defense}.npz"

    def poisoned_or_clean(self, dataset: str, poison: str) -> str:
        """The training set as poisoned: ``poison=clean`` is the clean container itself."""
        return self.clean(dataset) if poison == "clean" else self.poisoned(dataset, poison)

    # The recipe is part of a run's name: the papers train the same cell with different recipes.
    def run_dir(self, dataset: str = "{dataset}", poison: str = "{poison}", defense: str = "{defense}",
                arch: str = "{arch}", recipe: str = "{recipe}", seed: int | str = "{seed}") -> str:
        return f"{self.results}/runs/{dataset}/{poison}/{defense}/{arch}/{recipe}/seed{seed}"

    def attribution_dir(self, dataset: str = "{dataset}", arch: str = "{arch}", recipe: str = "{recipe}",
                        seed: int | str = "{seed}") -> str:
        """One attribution setting (ssl-attribution): targets, attributions, subset models, supports, LDS."""
        return f"{self.results}/attribution/{dataset}/{arch}/{recipe}/seed{seed}"

    def ssl_dir(self, dataset: str = "{dataset}", method: str = "{method}", arch: str = "{ssl_arch}",
                seed: int | str = "{seed}") -> str:
        """One SSL pretraining run: backbone.pt, metrics.json (and its MLflow run)."""
        return f"{self.results}/attribution/{dataset}/ssl/{method}/{arch}/seed{seed}"

    # jpeg-photoguard (editing): photo sets, immunized sets, the in-pipeline autoencoder, the sweep's records.
    def photos(self, photos: str = "{photos}") -> str:
        """A photo set (``editing.photos.PhotoSet``): label-free, uint8."""
        return f"{self.data}/editing/{photos}.npz"

    def immunized(self, photos: str = "{photos}", autoencoder: str = "{autoencoder}", row: str = "{immunizer}",
                  seed: int | str = "{seed}") -> str:
        """A photo set immunized by one row of ``editing.rows`` against ``autoencoder`` (uint8)."""
        return f"{self.data}/editing/{photos}/{autoencoder}/seed{seed}/{row}.npz"

    def autoencoder_dir(self, autoencoder: str = "small-ae", seed: int | str = "{seed}") -> str:
        """An autoencoder the pipeline trains (small-ae): model.pt, metrics.json (and its MLflow run)."""
        return f"{self.results}/editing/autoencoders/{autoencoder}/seed{seed}"

    def editing_dir(self, photos: str = "{photos}", autoencoder: str = "{autoencoder}",
                    seed: int | str = "{seed}") -> str:
        """The JPEG sweep's records of one photo set and autoencoder: ``{row}/{purifier}.json``."""
        return f"{self.results}/editing/{photos}/{autoencoder}/seed{seed}"

    # robust-seg (segmentation): the canvases or a user's VOC / Cityscapes, one run's net and its evaluations.
    def segmentation_data(self, dataset: str = "{segdata}") -> str:
        """A segmentation container (``segmentation.SegmentationDataset``: images, maps)."""
        return f"{self.data}/segmentation/{dataset}.npz"

    def segmentation_dir(self, dataset: str = "{segdata}", arch: str = "{segarch}", procedure: str = "{procedure}",
                         recipe: str = "{recipe}", seed: int | str = "{seed}") -> str:
        """One segmentation run: model.pt, metrics.json, robustness.{json,npz}, {inpaint,generate}.{json,npz}."""
        return f"{self.results}/segmentation/{dataset}/{arch}/{procedure}/{recipe}/seed{seed}"

    # autoprotonet (few-shot): one episodic run and its evaluations.
    def fewshot_dir(self, dataset: str = "{fsdata}", method: str = "{fsmethod}", recipe: str = "{fsrecipe}",
                    seed: int | str = "{seed}") -> str:
        """One few-shot run: model.pt, metrics.json, evaluation.json; the AP run also holds refinement.{json,npz}
        and prototypes.{json,npz} (the decoded prototypes of IA, IAP and itself)."""
        return f"{self.results}/fewshot/{dataset}/{method}/{recipe}/seed{seed}"

    @staticmethod
    def table(slug: str = "{slug}", table: str = "{table}") -> str:
        """A grid's table, without extension (.csv, .md, .tex): config/papers/<slug>.yaml's ``table``."""
        return f"paper/{slug}/tables/{table}"

    @staticmethod
    def table_metrics(slug: str = "{slug}", table: str = "{table}") -> str:
        """A table's cells as DVC metrics, one number a (row, column): ``dvc metrics diff`` reads them."""
        return f"paper/{slug}/metrics/{table}.json"

    @staticmethod
    def figure(slug: str = "{slug}", figure: str = "{figure}") -> str:
        """A paper's figure, without extension (.pdf, .png)."""
        return f"paper/{slug}/figures/{figure}"


def training_data(config: dict[str, Any], dataset: str, poison: str, defense: str) -> str:
    """What a run trains on: the sanitized set for a data-level defense, else the poisoned (or clean) one."""
    from poisonlab.defenses import is_sanitizer

    paths = Paths.from_config(config)
    if is_sanitizer(defense):  # the defense's registration says, without building it
        return paths.sanitized(dataset, poison, defense)
    return paths.poisoned_or_clean(dataset, poison)
