"""Rule train: train the experiment's planned 2D or 3D U-Net on one fold's training sources, validating on its
validation sources every epoch."""

import json

import pandas as pd
import torch

from unetflow.data.folds import fold_ids
from unetflow.io.regions import Regions
from unetflow.logs import stage_logger
from unetflow.plan.plan import settings_of
from unetflow.threads import job_threads
from unetflow.tracking.tracker import tracker_for
from unetflow.train.finetune import init_weights
from unetflow.train.sampler import training_cases, validation_cases
from unetflow.train.train import Trainer

log = stage_logger(snakemake.log[0])
torch.set_num_threads(job_threads(snakemake.threads))
with open(snakemake.input.plan) as file:
    plan = json.load(file)
tracker = tracker_for(snakemake.config["tracking"], snakemake.config["results"], snakemake.wildcards.experiment,
                      int(snakemake.wildcards.fold), snakemake.params.train, plan)  # refuses an unusable store now
cfg = {**snakemake.params.train, **settings_of(plan)}
stored = pd.read_parquet(snakemake.input.stored)
train_ids, val_ids = fold_ids(pd.read_parquet(snakemake.input.splits), int(snakemake.wildcards.fold))
train_cases = training_cases(stored, train_ids, cfg["dims"], weights=True, resolution=cfg["resolution"])
val_cases = validation_cases(stored, val_ids, cfg["dims"], resolution=cfg["resolution"])
log.info("fold %s: %d training and %d validation sources (%d and %d cases of a %dD U-Net)", snakemake.wildcards.fold,
         len(train_ids), len(val_ids), len(train_cases), len(val_cases), cfg["dims"])
regions = Regions.of(pd.read_parquet(snakemake.input.regions))
weights = init_weights(plan, str(snakemake.input.init))  # None without train.init
trainer = Trainer(cfg, plan, train_cases, val_cases, train_ids, snakemake.params.state, log, regions, weights,
                  tracker)
with tracker:  # a run that fails is marked failed
    metrics = trainer.run(snakemake.output.model, snakemake.output.last)
metrics.to_parquet(snakemake.output.metrics)
with open(snakemake.output.tracking, "w") as file:
    json.dump(tracker.record(), file, indent=2)
log.info("tracking: %s", tracker.record())
