# poisonlab: dataset → poison → sanitize → train → evaluate → tables and figures.
# `snakemake --profile local all_tables` (or --profile slurm); other scales: --config scale=cifar10-small.
from snakemake.utils import min_version

from poisonlab.config import scale_configfile

min_version("9.0")


configfile: "config/config.yaml"
# The scale's own file (config/scales/<scale>.yaml), merged over the default by Snakemake, which
# then merges --config and --configfile again: the command line still wins.
configfile: scale_configfile(config)


# `snakemake --report report.html` after a run: every paper's tables and figures on one page.
report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/poisons.smk"
include: "rules/sanitize.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/attribution.smk"
include: "rules/editing.smk"
include: "rules/segmentation.smk"
include: "rules/fewshot.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"


# Tables and figures read a few json files: on a cluster they run here, not through the queue.
localrules:
    all_tables,
    table,
    paper_figure,


# On a cluster, a run and its evaluations are one group ("runs"); `--group-components runs=N` packs N
# of them into one Slurm job (profiles/slurm/config.yaml, README "Slurm"). The GPU limit (`--resources
# gpu=N`) is then per submitted job: its runs share its GPUs, in series where they exceed them.
resource_scopes:
    gpu="local",


rule all_tables:
    input:
        get_all_tables(),


# One target a grid: `snakemake --profile local ar-poisoning_tables` builds its tables and figures
# (baselines_tables: the baselines tables the config's `tables` names).
for slug in GRIDS:

    rule:
        name:
            f"{slug}_tables"
        input:
            get_paper_outputs(slug),
        localrule: True
