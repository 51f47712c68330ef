"""Snakemake adapter: one net's mIoU and pixel accuracy clean and under each attack → robustness.json, .npz."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.segmentation.run import robustness_run
from poisonlab.training.loop import pick_device

torch.set_num_threads(snakemake.threads)
robustness_run(Path(snakemake.input.metrics).parent, snakemake.input.data, snakemake.output.record,
               snakemake.output.examples, device=str(pick_device(snakemake.params.device)),
               **snakemake.params.options)
