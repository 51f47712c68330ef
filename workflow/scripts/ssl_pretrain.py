"""Snakemake adapter: one SSL pretraining run (its own MLflow run) → backbone.pt, metrics.json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed run keeps the log of the killed one

import torch

from poisonlab.attribution.pretrain import pretrain_ssl
from poisonlab.attribution.ssl import SSLConfig
from poisonlab.data.container import ImageDataset

torch.set_num_threads(snakemake.threads)
pretrain_ssl(ImageDataset.load(snakemake.input.data), SSLConfig.from_dict(snakemake.params.ssl),
             Path(snakemake.output.backbone).parent, seed=int(snakemake.wildcards.seed),
             dataset_name=snakemake.wildcards.dataset, device=snakemake.params.device, progress=False)
