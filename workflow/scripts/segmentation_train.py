"""Snakemake adapter: train one segmentation net by its procedure (its own MLflow run) → model.pt, metrics.json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed run keeps the log of the killed one

import torch

from poisonlab.segmentation.run import SegRunSpec, train_segmentation
from poisonlab.training import Recipe

torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
spec = SegRunSpec(dataset=w.segdata, procedure=w.procedure, arch=w.segarch, recipe=w.recipe, seed=int(w.seed))
train_segmentation(spec, Recipe.from_dict(snakemake.params.recipe_config, name=f"recipes.{w.recipe}"),
                   snakemake.input.data, Path(snakemake.output.metrics).parent,
                   procedure_options=snakemake.params.procedure_options,
                   model_options=snakemake.params.model_options, device=snakemake.params.device, progress=False)
