"""Rule report: figures and tables of one experiment for `snakemake --report`."""

import pandas as pd

from unetflow.evaluate.html_tables import write_html_tables
from unetflow.evaluate.report import (
    case_scores,
    example_cases,
    fold_metrics,
    load_overlay_unit,
    per_case_table,
    plan_table,
    plan_title,
    plot_metric_distributions,
    plot_overlays,
    plot_training_curves,
    summary_table,
)
from unetflow.instances.targets import instance_target
from unetflow.io.labels import trained_classes
from unetflow.io.sources import units
from unetflow.logs import stage_logger
from unetflow.tracking.artifacts import evaluation_metrics, log_figures_to_tensorboard, log_to_runs

log = stage_logger(snakemake.log[0])
per_case = pd.read_parquet(snakemake.input.per_case)
classes = pd.read_parquet(snakemake.input.classes).sort_values("index")
manifest = pd.read_parquet(snakemake.input.manifest)
plot_training_curves(fold_metrics(list(snakemake.input.metrics)), snakemake.output.curves)
plot_metric_distributions(per_case, snakemake.output.distributions)
scores = case_scores(per_case)
examples = example_cases(per_case)
unit_of = {name: (row, unit) for row in manifest.to_dict("records") for name, unit in units(row)}
score_name = "mAP" if scores.name == "object_map" else "Dice"
panels = [dict(title=f"{kind}, {score_name} {scores[name]:.3f}: {name}",
               **load_overlay_unit(*unit_of[name], snakemake.input.predictions, classes))
          for kind, name in examples.items()]
plot_overlays(panels, trained_classes(classes)["name"].tolist(), snakemake.output.overlays,
              instances=instance_target(classes) is not None)
write_html_tables([("Summary per class", summary_table(pd.read_parquet(snakemake.input.summary))),
                   ("Per case (best first)", per_case_table(per_case)),
                   (plan_title(snakemake.wildcards.experiment, snakemake.params.trained_by),
                    plan_table(snakemake.input.plan))], snakemake.output.tables)
log.info("report of %d cases; %s", len(scores), ", ".join(f"{kind} {case_id}" for kind, case_id in examples.items()))
test_metrics = evaluation_metrics(pd.read_parquet(snakemake.input.summary))
runs = log_to_runs(list(snakemake.input.tracking), "report", list(snakemake.output),
                   snakemake.config["tracking"]["timeout"], test_metrics)
if runs:
    log.info("report and test metrics logged to the MLflow runs of %d fold(s)", runs)
boards = log_figures_to_tensorboard(list(snakemake.input.tracking), list(snakemake.output))
if boards:
    log.info("report figures added to the TensorBoard event files of %d fold(s)", boards)
