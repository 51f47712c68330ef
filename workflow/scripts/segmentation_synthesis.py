"""Snakemake adapter: one net's inpainting or generation (wildcard task), scored by the independent judges →
<task>.json, <task>.npz."""

from pathlib import Path

from poisonlab.job import start_job

start_job(snakemake.log[0])

import torch

from poisonlab.segmentation.run import synthesis_run
from poisonlab.training.loop import pick_device

torch.set_num_threads(snakemake.threads)
i = snakemake.input
synthesis_run(Path(i.metrics).parent, i.data, snakemake.output.record, snakemake.output.arrays,
              task=snakemake.wildcards.task, classifier_path=i.classifier, classifier_data_path=i.classifier_data,
              transfer_run_dir=Path(i.judge_metrics).parent, device=str(pick_device(snakemake.params.device)),
              **snakemake.params.options)
