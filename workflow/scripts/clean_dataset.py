"""Snakemake adapter: build data/clean/{dataset}.npz."""

import sys

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.data import build_dataset

dataset = build_dataset(snakemake.wildcards.dataset, **snakemake.params.dataset)
dataset.save(snakemake.output[0])
print(f"{snakemake.output[0]}: {len(dataset.x_train)} train / {len(dataset.x_test)} test, "
      f"{dataset.image_shape}, {dataset.num_classes} classes", file=sys.stderr)
