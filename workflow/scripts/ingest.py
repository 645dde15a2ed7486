"""Rule ingest: pair and validate every image and mask; write the manifest, the class table and the warnings."""

from unetflow.data.data_warnings import data_warnings, log_warnings
from unetflow.data.ingest import DataSpec, check_data_set
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
manifest, classes = check_data_set(DataSpec.from_config(snakemake.params.data), snakemake.threads)
warnings = data_warnings(manifest, classes)
log_warnings(warnings, snakemake.output.warnings)
manifest.to_parquet(snakemake.output.manifest)
classes.to_parquet(snakemake.output.classes)
warnings.to_parquet(snakemake.output.warnings)
snapped = int(manifest["snapped_pixels"].sum())
log.info("%d cases validated; classes: %s%s; %d warning(s)", len(manifest),
         dict(zip(classes["name"], classes["value"])),
         f"; {snapped} lossy mask pixels snapped to the nearest class" if snapped else "", len(warnings))
