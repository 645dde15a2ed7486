"""Rule plan: the experiment's training plan, made once from the stored training sources (all but the test split),
the fingerprint and the device its training jobs run on; every fold, the package and the leaderboard read it."""

import json

import pandas as pd
import torch

from unetflow.gpu import pick_device
from unetflow.instances.targets import instance_target
from unetflow.io.labels import class_values
from unetflow.logs import stage_logger
from unetflow.plan.plan import make_plan

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)  # as training, whose step time the plan may measure
cfg = snakemake.params.train
stored, splits = pd.read_parquet(snakemake.input.stored), pd.read_parquet(snakemake.input.splits)
sources = stored[stored["id"].isin(splits.loc[splits["split"] != "test", "id"])]
with open(snakemake.input.fingerprint) as file:
    fingerprint = json.load(file)
classes = pd.read_parquet(snakemake.input.classes)
outputs = len(pd.read_parquet(snakemake.input.regions)) or len(class_values(classes))  # one per class or region
plan = make_plan(cfg, sources, fingerprint, outputs, pick_device(cfg["device"]),
                 instances=bool(instance_target(classes)))
with open(snakemake.output[0], "w") as file:
    json.dump(plan, file, indent=2)
log.info("plan for %s (%s) from %d training sources; traits %s", plan["device"]["type"], plan["device"]["name"],
         len(sources), plan["traits"])
for trial in plan["resolutions_tried"]:
    log.info("resolution %(resolution)g: patch %(patch_size)s, batch %(batch_size)d, step %(step_seconds)s s, "
             "%(passes)g passes over the training pixels in the budget", trial)
for key, entry in plan["settings"].items():
    log.info("plan: %s = %s (%s: %s)", key, entry["value"], entry["source"], entry["reason"])
