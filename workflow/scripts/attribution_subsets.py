"""Snakemake adapter: one shard of subset-trained models → their masks and the targets' margins."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.attribution.dag import SubsetPool
from poisonlab.attribution.jobs import write_subset_shard

torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
write_subset_shard(snakemake.input.data, snakemake.input.targets, snakemake.output.shard,
                   retrain=snakemake.params.retrain,
                   pool=SubsetPool(**snakemake.params.pool), part=w.part, shard=int(w.shard), seed=int(w.seed))
