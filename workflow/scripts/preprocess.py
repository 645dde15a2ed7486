"""Rule preprocess: normalise images, resample volumes to the target spacing and map labels into per-case arrays
(each stack or volume read once), with the settings as applied."""

import json

import pandas as pd

from unetflow.data.preprocess import preprocess_cases, preprocess_settings
from unetflow.io.store import off_file_grid
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
with open(snakemake.input.fingerprint) as file:
    settings = preprocess_settings(snakemake.params.preprocess, json.load(file))
log.info("normalisation %s (%s); target spacing %s (%s); 2D images scaled by %g (%s)", settings["normalization"],
         settings["normalization_source"], settings["spacing"], settings["spacing_source"], settings["scale"],
         settings["scale_source"])
if settings["weight_map"]:  # only for the instance target weight_map
    log.info("loss weights of the instance target weight_map: w0 %g, sigma %g px", settings["weight_map"]["w0"],
             settings["weight_map"]["sigma"])
table = preprocess_cases(pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.classes),
                         snakemake.output.cases, settings, snakemake.threads)
table.to_parquet(snakemake.output.manifest)
with open(snakemake.output.settings, "w") as file:
    json.dump(settings, file, indent=2)
resampled = int(off_file_grid(table).sum())
log.info("preprocessed %d cases (%d resampled or scaled) into %s", len(table), resampled, snakemake.output.cases)
