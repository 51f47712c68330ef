"""Snakemake adapter: features of the training and test images from the setting's backbone."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.attribution.jobs import write_features

torch.set_num_threads(snakemake.threads)
write_features(snakemake.input.data, snakemake.input.backbone, snakemake.output.features,
               arch=snakemake.params.arch, device=snakemake.params.device)
