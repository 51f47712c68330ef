"""Snakemake adapter: poison one clean container."""

import sys

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.data.container import ImageDataset
from poisonlab.poisons import apply_poison
from poisonlab.training import pick_device

torch.set_num_threads(snakemake.threads)
poisoned = apply_poison(snakemake.wildcards.poison, ImageDataset.load(snakemake.input[0]),
                        seed=snakemake.params.poison["seed"], params=snakemake.params.poison["options"],
                        device=pick_device(snakemake.params.device))
poisoned.save(snakemake.output[0])
print(f"{snakemake.output[0]}: {poisoned.meta['poison']}", file=sys.stderr)
