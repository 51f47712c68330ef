"""Snakemake adapter: one support unit (attributor, kind, target); a rerun resumes from its state file."""

from poisonlab.job import start_job

start_job(snakemake.log[0], append=True)  # a resumed unit keeps the log of the killed one

import torch

from poisonlab.attribution.jobs import write_support_unit

torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
write_support_unit(clean=snakemake.input.data, targets=snakemake.input.targets, topk=snakemake.input.topk,
                   out=snakemake.output.unit, kind=w.kind, target=int(w.target),
                   retrain=snakemake.params.retrain,
                   seed=int(w.seed), **snakemake.params.search)
