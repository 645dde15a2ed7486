"""Rule train: train a 2D or 3D U-Net (train.dims) on the training split, validating on the validation split every
epoch."""

import json

import pandas as pd
import torch

from unetflow.data.folds import fold_ids
from unetflow.io.labels import class_values
from unetflow.io.volumes import slice_axis_target
from unetflow.logs import stage_logger
from unetflow.train.train import Trainer
from unetflow.train.volume_training import choose_dims, training_cases, volume_geometry

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = dict(snakemake.params.train, num_classes=len(class_values(pd.read_parquet(snakemake.input.classes))))
preprocessed, splits = pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.splits)
manifest = pd.read_parquet(snakemake.input.data)
train_ids, val_ids = fold_ids(splits, int(snakemake.wildcards.fold))
geometry = volume_geometry(manifest)  # each volume's header read once
dims, dims_reason = choose_dims(cfg["dims"], manifest, geometry, cfg["patch_size"])
with open(snakemake.input.settings) as file:
    target_spacing = slice_axis_target(json.load(file))
train_cases, val_cases, spacing = training_cases(manifest, geometry, preprocessed, train_ids, val_ids, dims,
                                                 target_spacing)
log.info("fold %s: %d training and %d validation %s; a %dD U-Net (%s)", snakemake.wildcards.fold, len(train_cases),
         len(val_cases), "volumes" if dims == 3 else "cases", dims, dims_reason)
trainer = Trainer(cfg, train_cases, val_cases, train_ids, snakemake.params.state, log, spacing, dims_reason)
with open(snakemake.output.plan, "w") as plan:
    json.dump(trainer.plan, plan, indent=2)
metrics = trainer.run(snakemake.output.model, snakemake.output.last)
metrics.to_parquet(snakemake.output.metrics)
