"""Snakemake adapter: a photo set (scikit-image's PNG photos, or a user's folder) → its label-free container."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.editing import build_photos

build_photos(snakemake.wildcards.photos, **snakemake.params.options).save(snakemake.output.photos)
