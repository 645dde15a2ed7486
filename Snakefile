# unetflow: train and apply U-Nets. Run `snakemake --cores all`; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo_data.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/fingerprint.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/package.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/leaderboard.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/infer.smk"


rule all:
    default_target: True
    input:
        rules.leaderboard.output.table,
        report_targets(),
        expand(rules.package.output[0], experiment=EXPERIMENTS),
