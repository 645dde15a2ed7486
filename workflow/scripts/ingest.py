"""Rule ingest: pair and validate every image and mask; write the manifest and the class table."""

from unetflow.ingest import DataSpec, check_data_set
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
manifest, classes = check_data_set(DataSpec.from_config(snakemake.params.data), snakemake.threads)
manifest.to_parquet(snakemake.output.manifest)
classes.to_parquet(snakemake.output.classes)
snapped = int(manifest["snapped_pixels"].sum())
log.info("%d cases validated; classes: %s%s", len(manifest), dict(zip(classes["name"], classes["value"])),
         f"; {snapped} JPEG mask pixels snapped to the nearest class" if snapped else "")
