"""Rule train: train a U-Net on the training split, validating on the validation split every epoch."""

import json

import pandas as pd
import torch

from unetflow.cases import load_cases
from unetflow.labels import class_values
from unetflow.logs import stage_logger
from unetflow.split import fold_ids
from unetflow.train import Trainer

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = dict(snakemake.params.train, num_classes=len(class_values(pd.read_parquet(snakemake.input.classes))))
preprocessed, splits = pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.splits)
train_ids, val_ids = fold_ids(splits, int(snakemake.wildcards.fold))
train_cases, val_cases = load_cases(preprocessed, train_ids), load_cases(preprocessed, val_ids)
log.info("fold %s: %d training and %d validation cases", snakemake.wildcards.fold, len(train_ids), len(val_ids))
trainer = Trainer(cfg, train_cases, val_cases, train_ids, snakemake.params.state, log)
with open(snakemake.output.plan, "w") as plan:
    json.dump(trainer.plan, plan, indent=2)
metrics = trainer.run(snakemake.output.model, snakemake.output.last)
metrics.to_parquet(snakemake.output.metrics)
