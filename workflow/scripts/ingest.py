"""Rule ingest: pair and validate every image and mask; write the manifest, the class table, the warnings, the
region table (data.regions) and the annotated regions of GeoJSON masks (images and masks, `annotated`)."""

from pathlib import Path

from unetflow.data.data_warnings import data_warnings, log_warnings
from unetflow.data.ingest import DataSpec, check_data_set
from unetflow.data.pairing import DataValidationError, subfolder_note, unread_images_note
from unetflow.io.regions import region_table
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
for note in [unread_images_note(snakemake.params.data["images"], "data.images"),
             subfolder_note(snakemake.params.data["images"])]:
    if note:
        log.warning(note)
Path(snakemake.output.annotated).mkdir(parents=True, exist_ok=True)  # the folder is an output, empty without GeoJSON
data = DataSpec.from_config(snakemake.params.data)
try:
    manifest, classes = check_data_set(data, job_threads(snakemake.threads), snakemake.output.annotated)
except DataValidationError as error:  # what else the checked files hold, so one round of fixes sees it all
    if error.checked is not None:
        log_warnings(data_warnings(*error.checked), "data/warnings.parquet once the problems below are fixed")
    raise
regions = region_table(data.regions, classes)
warnings = data_warnings(manifest, classes)
log_warnings(warnings, snakemake.output.warnings)
manifest.to_parquet(snakemake.output.manifest)
classes.to_parquet(snakemake.output.classes)
warnings.to_parquet(snakemake.output.warnings)
regions.to_parquet(snakemake.output.regions)
snapped = int(manifest["snapped_pixels"].sum())
log.info("%d cases validated; classes: %s%s; %d warning(s)", len(manifest),
         dict(zip(classes["name"], classes["value"])),
         f"; {snapped} lossy mask pixels snapped to the nearest class" if snapped else "", len(warnings))
if len(regions):
    log.info("regions (network outputs, written as the label of each): %s",
             ", ".join(f"{r['name']} {list(r['values'])} -> {r['value']}" for r in regions.to_dict("records")))
