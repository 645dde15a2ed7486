"""Rule predict: tiled prediction of the chosen split by one model or the mean softmax of several, written as
masks in the input encoding (NIfTI volumes as NIfTI), with predict.save_probabilities the probabilities beside them."""

import json

import pandas as pd
import torch

from unetflow.data.folds import ids_in
from unetflow.gpu import pick_device
from unetflow.infer.predict import checkpoint_list, predict_cases
from unetflow.io.volumes import slice_axis_target
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.predict
device = pick_device(snakemake.params.device)
checkpoints = checkpoint_list(snakemake.input.models)
manifest = pd.read_parquet(snakemake.input.manifest)
ids = ids_in(pd.read_parquet(snakemake.input.splits), cfg["split"])
with open(snakemake.input.settings) as file:
    target_spacing = slice_axis_target(json.load(file))
predict_cases(manifest[manifest["id"].isin(ids)], pd.read_parquet(snakemake.input.arrays).set_index("id")["array_path"],
              checkpoints, pd.read_parquet(snakemake.input.classes), cfg, device, snakemake.output[0], target_spacing)
log.info("predicted %d cases of the %s split on %s with %d model(s): %s", len(ids), cfg["split"], device,
         len(checkpoints), ", ".join(checkpoints))
