"""Rule ingest: pair and validate every image and mask; write the manifest and the class table."""

from unetflow.ingest import build_manifest
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
data = snakemake.params.data
manifest, classes = build_manifest(data["images"], data["masks"], data["mask_suffix"], data["classes"],
                                   snakemake.threads)
manifest.to_parquet(snakemake.output.manifest)
classes.to_parquet(snakemake.output.classes)
log.info("%d cases validated; classes: %s", len(manifest), dict(zip(classes["name"], classes["value"])))
