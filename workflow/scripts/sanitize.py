"""Snakemake adapter: run one data-level defense on one poisoned container."""

import sys

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.data.container import ImageDataset
from poisonlab.defenses import apply_sanitizer
from poisonlab.training import pick_device

torch.set_num_threads(snakemake.threads)
sanitized = apply_sanitizer(snakemake.wildcards.defense, ImageDataset.load(snakemake.input[0]),
                            seed=snakemake.params.defense["seed"], options=snakemake.params.defense["options"],
                            device=pick_device(snakemake.params.device))
sanitized.save(snakemake.output[0])
print(f"{snakemake.output[0]}: {sanitized.meta['defense']}", file=sys.stderr)
