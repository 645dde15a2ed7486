"""Rule preprocess: every source turned into the arrays the network sees (channels, normalisation, volumes resampled to
the target spacing, 2D images scaled, masks as class indices), stored once per source, with the settings as applied."""

import json

import pandas as pd

from unetflow.data.preprocess import preprocess_settings, preprocess_sources
from unetflow.logs import stage_logger
from unetflow.plan.resolution import thin_structure_loss
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
with open(snakemake.input.fingerprint) as file:
    fingerprint = json.load(file)
settings = preprocess_settings(snakemake.params.preprocess, fingerprint)
log.info("normalisation %s (%s); target spacing %s (%s); 2D images scaled by %g (%s)", settings["normalization"],
         settings["normalization_source"], settings["spacing"], settings["spacing_source"], settings["scale"],
         settings["scale_source"])
if settings["scale_source"] == "config" and (lost := thin_structure_loss(
        settings["scale"], fingerprint.get("boundary_distance"), "preprocess.scale", "auto")):
    log.warning(lost)
if settings["weight_map"]:  # only for the instance target weight_map
    log.info("loss weights of the instance target weight_map: w0 %g, sigma %g px", settings["weight_map"]["w0"],
             settings["weight_map"]["sigma"])
manifest = pd.read_parquet(snakemake.input.manifest)
table = preprocess_sources(manifest, pd.read_parquet(snakemake.input.classes), snakemake.output.arrays, settings,
                           job_threads(snakemake.threads))
table.to_parquet(snakemake.output.manifest)
with open(snakemake.output.settings, "w") as file:
    json.dump(settings, file, indent=2)
changed = (table[["slices", "height", "width"]].to_numpy() != manifest[["slices", "height", "width"]].to_numpy())
log.info("preprocessed %d sources (%d resampled or scaled) into %s", len(table), int(changed.any(axis=1).sum()),
         snakemake.output.arrays)
