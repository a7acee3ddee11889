# specrepro: every method x dataset x pair x temperature x seed, then tables, figures, notebook.
from snakemake.utils import min_version, validate

# 9.15 started jobs past a custom resource limit (two timed jobs at once); 9.27.1 does not.
min_version("9.27.1")


# A config given with --configfile replaces the default one instead of merging into it: each
# named config is complete, and a merge would carry the default's CPU-only entries (the DDD
# sweep, the draft-design study) into a GPU run. Single values still merge with --config.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/study.smk"


# Downloading needs the internet, which cluster compute nodes often lack.
localrules:
    fetch_data,
    download_model,


rule all:
    input:
        final_outputs(),
    default_target: True
