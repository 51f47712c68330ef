# poisonlab: dataset → poison → sanitize → train → evaluate → tables and figures.
# `snakemake --profile local all_tables` (or --profile slurm); other scales: --config scale=cifar10-small.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/poisons.smk"
include: "rules/sanitize.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


localrules:
    all_tables,


rule all_tables:
    input:
        get_all_tables(),
