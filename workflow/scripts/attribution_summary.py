"""Snakemake adapter: the support record of one (attributor, kind) from its units."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.attribution.jobs import write_support_summary

write_support_summary(list(snakemake.input.units), snakemake.output.summary,
                      attributor=snakemake.wildcards.attributor, kind=snakemake.wildcards.kind)
