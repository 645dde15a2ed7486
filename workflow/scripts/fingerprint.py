"""Rule fingerprint: what the training cases look like (never the test cases), per source and for the data set."""

import json

import pandas as pd

from unetflow.logs import stage_logger
from unetflow.plan.fingerprint import fingerprint_data
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
table, summary = fingerprint_data(pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.classes),
                                  pd.read_parquet(snakemake.input.splits), threads=job_threads(snakemake.threads))
table.to_parquet(snakemake.output.table)
with open(snakemake.output.summary, "w") as file:
    json.dump(summary, file, indent=2)
log.info("fingerprint of %d training source(s) (%d cases): target spacing %s (%s); automatic normalisation %s (%s); "
         "scale of 2D images %g (%s)", summary["sources"], summary["cases"], summary["target_spacing"],
         summary["target_spacing_reason"], summary["normalization"], summary["normalization_reason"], summary["scale"],
         summary["scale_reason"])
