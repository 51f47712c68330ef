"""Snakemake adapter: one evaluation of one finished run → its json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab import tracking
from poisonlab.atomic import write_json
from poisonlab.evaluation import evaluate_run
from poisonlab.training import pick_device

torch.set_num_threads(snakemake.threads)
result = evaluate_run(snakemake.wildcards.evaluation, Path(snakemake.input.metrics).parent,
                      training_data=snakemake.input.training_data, clean_data=snakemake.input.clean_data,
                      options=snakemake.params.options, device=pick_device(snakemake.params.device))
write_json(snakemake.output[0], result)
tracking.log_results(Path(snakemake.input.metrics).parent, snakemake.wildcards.evaluation, result)
