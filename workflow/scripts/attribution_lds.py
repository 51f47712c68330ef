"""Snakemake adapter: the LDS record of one attributor on the held-out subset models."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

import numpy as np

from poisonlab.attribution.jobs import write_lds

write_lds(snakemake.input.topk, snakemake.input.targets, list(snakemake.input.heldout), snakemake.output.lds,
          attributor=snakemake.wildcards.attributor, n_train=int(np.load(snakemake.input.data)["y_train"].shape[0]))
