"""Rule preprocess: normalise images and map labels into per-case arrays (each stack or volume read once)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from unetflow.logs import stage_logger
from unetflow.preprocess import preprocess_source

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.preprocess
manifest = pd.read_parquet(snakemake.input.manifest)
classes = pd.read_parquet(snakemake.input.classes)
Path(snakemake.output.cases).mkdir(parents=True, exist_ok=True)
sources = [rows for _, rows in manifest.groupby("image_path", sort=False)]
with ThreadPoolExecutor(snakemake.threads) as pool:
    rows = [row for source_rows in pool.map(
        lambda rows: preprocess_source(rows, classes, snakemake.output.cases, cfg["normalization"],
                                       cfg["clip_percentiles"]), sources) for row in source_rows]
pd.DataFrame(rows).to_parquet(snakemake.output.manifest)
log.info("preprocessed %d cases (%s normalisation) into %s", len(rows), cfg["normalization"], snakemake.output.cases)
