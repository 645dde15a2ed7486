"""Rule train: train a U-Net on the training split, validating on the validation split every epoch."""

import pandas as pd
import torch

from unetflow.logs import stage_logger
from unetflow.train import Trainer, load_split_cases

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = dict(snakemake.params.train, num_classes=len(pd.read_parquet(snakemake.input.classes)))
preprocessed, splits = pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.splits)
train_ids, train_cases = load_split_cases(preprocessed, splits, "train")
_, val_cases = load_split_cases(preprocessed, splits, "val")
trainer = Trainer(cfg, train_cases, val_cases, train_ids, snakemake.params.state, log)
metrics = trainer.run(snakemake.output.model, snakemake.output.last)
metrics.to_parquet(snakemake.output.metrics)
