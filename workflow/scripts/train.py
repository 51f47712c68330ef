"""Snakemake adapter: train one run into the folder of its metrics.json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed run keeps the log of the killed one

import torch

from poisonlab.training import Recipe
from poisonlab.training.run import RunSpec, train_run

torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
spec = RunSpec(dataset=w.dataset, poison=w.poison, defense=w.defense, arch=w.arch, seed=int(w.seed),
               recipe=snakemake.params.recipe)
train_run(spec, Recipe.from_dict(snakemake.params.recipe_config, name=f"recipes.{spec.recipe}"),
          snakemake.input.data, Path(snakemake.output.metrics).parent, device=snakemake.params.device,
          progress=False, defense_options=snakemake.params.defense_options,
          keep_weights_every=snakemake.params.keep_weights_every)
