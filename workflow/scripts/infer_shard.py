"""Rule infer_shard: segment the images of one shard with a model package; masks laid out as the inputs are, a
summary table and (instance mode) an object table. Masks this shard wrote before for images that no longer exist are
removed first."""

import json
from pathlib import Path

import pandas as pd
import torch

from unetflow.infer.ledger import ledger_path, record_written, remove_masks_of_removed_images
from unetflow.infer.predictor import Predictor
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
torch.set_num_threads(job_threads(snakemake.threads))
shard = json.loads(Path(snakemake.input.shard).read_text())
ledger = ledger_path(Path(snakemake.output.table).parent, int(snakemake.wildcards.shard))
masks = snakemake.params.masks
for path in remove_masks_of_removed_images(ledger):
    log.info("removed %s: its image no longer exists", path)
checked = pd.read_parquet(snakemake.input.checked)
sources = checked[checked["image_path"].isin(shard["files"])]
predictor = Predictor.load(snakemake.input.package, shard["device"])
summary, objects = predictor.predict_sources(sources, masks, shard["save_probabilities"], shard["dicom_seg"])
record_written(ledger, summary, masks, shard["save_probabilities"])
summary.to_parquet(snakemake.output.table)
objects.to_parquet(snakemake.output.objects)
log.info("shard %s: %d image source(s) segmented on %s into %s", snakemake.wildcards.shard, len(sources),
         predictor.device, masks)
