"""Snakemake adapter: the prototype-refinement case study on a few-shot run → its json (per-i accuracy) and npz."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.fewshot.prototypes import refinement_run

torch.set_num_threads(snakemake.threads)
refinement_run(Path(snakemake.input.metrics).parent, snakemake.input.data, snakemake.output.record,
               snakemake.output.arrays, **snakemake.params.options, device=snakemake.params.device)
