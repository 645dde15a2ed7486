"""Rule infer_shard: segment the images of one shard with a model package; masks laid out as the inputs are, a
summary table, (instance mode) an object table, and of whole-slide images label pyramids (with their object tables
and GeoJSON polygons) and a table of them. Masks
this shard wrote before for images that no longer exist are removed first."""

import json
from pathlib import Path

import pandas as pd
import torch

from unetflow.infer.ledger import ledger_path, record_written, remove_masks_of_removed_images
from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import predict_slides
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
shard = json.loads(Path(snakemake.input.shard).read_text())
ledger = ledger_path(Path(snakemake.output.table).parent, int(snakemake.wildcards.shard))
masks = snakemake.params.masks
for path in remove_masks_of_removed_images(ledger):
    log.info("removed %s: its image no longer exists", path)
checked = pd.read_parquet(snakemake.input.checked)
sources = checked[checked["image_path"].isin(shard["files"])]
images, slides = sources[sources["kind"] != "slide"], sources[sources["kind"] == "slide"]
predictor = Predictor.load(snakemake.input.package, shard["device"])
summary, objects = predictor.predict_sources(images, masks, shard["save_probabilities"], shard["dicom_seg"])
slide_table = predict_slides(predictor, slides["image_path"].tolist(), masks, shard["slide_pixel_size"],
                             shard["slide_region"], slides["id"].tolist(), shard["slide_object_size"],
                             shard["slide_geojson"])
record_written(ledger, summary, masks, shard["save_probabilities"], slide_table)
summary.to_parquet(snakemake.output.table)
objects.to_parquet(snakemake.output.objects)
slide_table.to_parquet(snakemake.output.slides)
log.info("shard %s: %d image source(s) and %d slide(s) segmented on %s into %s", snakemake.wildcards.shard,
         len(images), len(slides), predictor.device, masks)
