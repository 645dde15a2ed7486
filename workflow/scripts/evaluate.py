"""Rule evaluate: per unit and class (per region with data.regions) metrics of the predictions, and their summary."""

import pandas as pd

from unetflow.data.folds import ids_in
from unetflow.evaluate.evaluate import evaluate_sources, summarize, unpredicted_notes
from unetflow.evaluate.object_metrics import HEADLINE_METRICS
from unetflow.io.regions import Regions
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
manifest = pd.read_parquet(snakemake.input.manifest)
sources = manifest[manifest["id"].isin(ids_in(pd.read_parquet(snakemake.input.splits), snakemake.params.split))]
per_case = evaluate_sources(sources, snakemake.input.predictions, pd.read_parquet(snakemake.input.classes),
                            snakemake.params.evaluate, job_threads(snakemake.threads),
                            Regions.of(pd.read_parquet(snakemake.input.regions)))
summary = summarize(per_case)
per_case.to_parquet(snakemake.output.per_case)
summary.to_parquet(snakemake.output.summary)
columns = ["class_name", "n_cases", "dice_mean", "dice_median", "dice_std", "iou_mean"]
columns += [f"{metric}_mean" for metric in HEADLINE_METRICS if f"{metric}_mean" in summary]
n_roi = per_case.drop_duplicates("id")["roi"].sum()
log.info("evaluation of %d units of %d sources (%d restricted to an ROI):\n%s", per_case["id"].nunique(),
         len(sources), n_roi, summary[columns].to_string(index=False, float_format="%.4f"))
for note in unpredicted_notes(summary):
    log.warning(note)
