"""Snakemake adapter: one seeded support set and the decoded prototypes of IA, IAP and AP → npz, and its json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.atomic import write_json
from poisonlab.fewshot.prototypes import prototypes_run

torch.set_num_threads(snakemake.threads)
runs = {label: Path(snakemake.input[label]).parent for label in snakemake.params.rows}
record = prototypes_run(runs, snakemake.input.data, snakemake.output.arrays, **snakemake.params.options,
                        device=snakemake.params.device)
write_json(snakemake.output.record, record)
