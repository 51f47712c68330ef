"""Snakemake adapter: a few-shot run's 5-way accuracy per shot over fixed seeded test episodes → one json."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.fewshot import evaluate_fewshot_run

torch.set_num_threads(snakemake.threads)
options = dict(snakemake.params.options)
options["shots"] = tuple(options.get("shots", (1, 5)))
evaluate_fewshot_run(Path(snakemake.input.metrics).parent, snakemake.input.data, snakemake.output.record,
                     **options, device=snakemake.params.device)
