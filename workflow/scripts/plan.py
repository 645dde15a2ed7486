"""Rule plan: the experiment's training plan, made once from the stored training sources (all but the test split),
the fingerprint and the device its training jobs run on; every fold, the package and the leaderboard read it."""

import json

import pandas as pd

from unetflow.gpu import pick_device
from unetflow.io.labels import class_values
from unetflow.logs import stage_logger
from unetflow.plan.plan import make_plan

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.train
stored, splits = pd.read_parquet(snakemake.input.stored), pd.read_parquet(snakemake.input.splits)
sources = stored[stored["id"].isin(splits.loc[splits["split"] != "test", "id"])]
with open(snakemake.input.fingerprint) as file:
    fingerprint = json.load(file)
outputs = len(pd.read_parquet(snakemake.input.regions)) or len(class_values(pd.read_parquet(snakemake.input.classes)))
plan = make_plan(cfg, sources, fingerprint, outputs, pick_device(cfg["device"]))  # one output per class or region
with open(snakemake.output[0], "w") as file:
    json.dump(plan, file, indent=2)
log.info("plan for %s (%s) from %d training sources; traits %s", plan["device"]["type"], plan["device"]["name"],
         len(sources), plan["traits"])
for key, entry in plan["settings"].items():
    log.info("plan: %s = %s (%s: %s)", key, entry["value"], entry["source"], entry["reason"])
