"""Rule preprocess: normalise images and map labels into per-case arrays (each stack or volume read once)."""

import pandas as pd

from unetflow.logs import stage_logger
from unetflow.preprocess import preprocess_cases

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.preprocess
table = preprocess_cases(pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.classes),
                         snakemake.output.cases, cfg, snakemake.threads)
table.to_parquet(snakemake.output.manifest)
log.info("preprocessed %d cases (%s normalisation) into %s", len(table), cfg["normalization"], snakemake.output.cases)
