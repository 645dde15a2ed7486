"""Rule predict: the chosen split segmented through the experiment's model package, exactly as `infer` segments new
images: masks in the input encoding (NIfTI volumes and DICOM series as NIfTI), with predict.save_probabilities the
probabilities and with predict.dicom_seg each DICOM series' SEG beside them."""

from pathlib import Path

import pandas as pd
import torch

from unetflow.data.folds import ids_in
from unetflow.infer.predictor import OBJECTS_FILE, Predictor
from unetflow.infer.summary import small_objects_note
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
torch.set_num_threads(job_threads(snakemake.threads))
cfg = snakemake.params.predict
predictor = Predictor.load(snakemake.input.package, cfg["device"])
manifest = pd.read_parquet(snakemake.input.manifest)
sources = manifest[manifest["id"].isin(ids_in(pd.read_parquet(snakemake.input.splits), cfg["split"]))]
summary, objects = predictor.predict_sources(sources, snakemake.output[0], cfg["save_probabilities"],
                                             cfg["dicom_seg"])
if predictor.package.instance_target:
    objects.to_parquet(Path(snakemake.output[0], OBJECTS_FILE))
if note := small_objects_note(summary, predictor.package.predict["min_object_size"], table=""):
    log.warning(note)
log.info("predicted %d sources of the %s split on %s with %d model(s) of %s", len(sources), cfg["split"],
         predictor.device, len(predictor.models), snakemake.input.package)
