"""Snakemake adapter: train the in-pipeline autoencoder small-ae (its own MLflow run) → model.pt, metrics.json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed run keeps the log of the killed one

import torch

from poisonlab.editing.small_ae import train_small_autoencoder

torch.set_num_threads(snakemake.threads)
train_small_autoencoder(Path(snakemake.output.model).parent, seed=int(snakemake.wildcards.seed),
                        device=snakemake.params.device, **snakemake.params.options)
