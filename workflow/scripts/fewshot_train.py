"""Snakemake adapter: train one few-shot method (its own MLflow run; IAP from IA's weights) → model.pt,
metrics.json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed run keeps the log of the killed one

import torch

from poisonlab.fewshot import FewShotRecipe, FewShotRunSpec, train_fewshot_run

torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
spec = FewShotRunSpec(dataset=w.fsdata, method=w.fsmethod, recipe=w.fsrecipe, seed=int(w.seed))
train_fewshot_run(spec, FewShotRecipe.from_dict(snakemake.params.recipe_config, name=f"fewshot.recipes.{w.fsrecipe}"),
                  snakemake.input.data, Path(snakemake.output.metrics).parent,
                  **snakemake.params.dataset_options, method_options=snakemake.params.method_options,
                  init_weights=snakemake.input.init or None, device=snakemake.params.device, progress=False)
