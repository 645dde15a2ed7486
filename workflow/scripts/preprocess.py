"""Rule preprocess: normalise images and map labels into per-case arrays."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from unetflow.logs import stage_logger
from unetflow.preprocess import class_values, preprocess_case

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.preprocess
manifest = pd.read_parquet(snakemake.input.manifest)
values = class_values(pd.read_parquet(snakemake.input.classes))
Path(snakemake.output.cases).mkdir(parents=True, exist_ok=True)
with ThreadPoolExecutor(snakemake.threads) as pool:
    rows = list(pool.map(lambda row: preprocess_case(row, values, snakemake.output.cases, cfg["normalization"],
                                                     cfg["clip_percentiles"]), (r for _, r in manifest.iterrows())))
pd.DataFrame(rows).to_parquet(snakemake.output.manifest)
log.info("preprocessed %d cases (%s normalisation) into %s", len(rows), cfg["normalization"], snakemake.output.cases)
