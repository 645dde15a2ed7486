"""Rule predict: tiled prediction of the chosen split, written as masks in the input encoding."""

from pathlib import Path

import pandas as pd
import torch

from unetflow.logs import stage_logger
from unetflow.predict import load_model, predict_labels, write_prediction
from unetflow.preprocess import class_values, load_case
from unetflow.split import ids_in
from unetflow.train import pick_device

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.predict
device = pick_device(snakemake.params.device)
model, patch = load_model(snakemake.input.model, device)
values = class_values(pd.read_parquet(snakemake.input.classes))
paths = pd.read_parquet(snakemake.input.manifest).set_index("id")["array_path"]
Path(snakemake.output[0]).mkdir(parents=True, exist_ok=True)
ids = ids_in(pd.read_parquet(snakemake.input.splits), cfg["split"])
for case_id in ids:
    image, _ = load_case(paths[case_id])
    write_prediction(predict_labels(model, image, patch, cfg, device), values, snakemake.output[0], case_id)
log.info("predicted %d cases of the %s split on %s", len(ids), cfg["split"], device)
