"""Rule predict: tiled prediction of the chosen split by one model or the mean softmax of several, written as
masks in the input encoding (NIfTI volumes as NIfTI), with predict.save_probabilities the probabilities beside them."""

from pathlib import Path

import pandas as pd
import torch

from unetflow.gpu import pick_device
from unetflow.logs import stage_logger
from unetflow.predict import (checkpoint_list, labels_from_probabilities, load_models, postprocess_unit,
                              predict_probabilities, write_prediction, write_probabilities)
from unetflow.preprocess import class_values, load_case
from unetflow.split import ids_in
from unetflow.volumes import prediction_units

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.predict
device = pick_device(snakemake.params.device)
checkpoints = checkpoint_list(snakemake.input.models)
models, patch = load_models(checkpoints, device)
classes = pd.read_parquet(snakemake.input.classes)
arrays = pd.read_parquet(snakemake.input.arrays).set_index("id")["array_path"]
manifest = pd.read_parquet(snakemake.input.manifest)
out_dir = snakemake.output[0]
Path(out_dir).mkdir(parents=True, exist_ok=True)
ids = ids_in(pd.read_parquet(snakemake.input.splits), cfg["split"])
for name, rows in prediction_units(manifest[manifest["id"].isin(ids)]):
    labels = []
    for case_id in rows["id"]:
        probs = predict_probabilities(models, load_case(arrays[case_id])[0], patch, cfg, device)
        labels.append(labels_from_probabilities(probs))
        if cfg["save_probabilities"]:
            write_probabilities(probs, out_dir, case_id)
    write_prediction(postprocess_unit(labels, len(class_values(classes)), rows, cfg["largest_component"]), classes,
                     out_dir, name, rows)
log.info("predicted %d cases of the %s split on %s with %d model(s): %s", len(ids), cfg["split"], device,
         len(checkpoints), ", ".join(checkpoints))
