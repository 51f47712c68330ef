"""Snakemake adapter: targets and flip classes from the reference models → targets.json."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.attribution.jobs import write_targets

torch.set_num_threads(snakemake.threads)
write_targets(snakemake.input.data, list(snakemake.input.references), snakemake.output.targets,
              **snakemake.params.options)
