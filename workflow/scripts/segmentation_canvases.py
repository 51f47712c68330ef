"""Snakemake adapter: a segmentation dataset (mnist5k-seg's canvases, a user's VOC / Cityscapes) → its container."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.segmentation import SEG_DATASETS

SEG_DATASETS.build(snakemake.wildcards.segdata, **snakemake.params.options).save(snakemake.output.data)
