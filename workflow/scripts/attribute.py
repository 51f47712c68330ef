"""Snakemake adapter: one attributor on every target → topk.npz, cost.json, neighbours.json."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.attribution.jobs import write_attribution

torch.set_num_threads(snakemake.threads)
inputs = snakemake.input
write_attribution(snakemake.wildcards.attributor, snakemake.params.options, clean=inputs.data, targets=inputs.targets,
                  arch=snakemake.wildcards.arch, topk_out=snakemake.output.topk, cost_out=snakemake.output.cost,
                  neighbours_out=snakemake.output.neighbours, features=inputs.get("features"),
                  ssl_metrics=inputs.get("ssl_metrics"), references=list(inputs.get("references", [])),
                  subsets=list(inputs.get("subsets", [])), device=snakemake.params.device)
