"""Rule package: the experiment's models and everything needed to apply them, in one portable file."""

import json

import pandas as pd
import torch

from unetflow.infer.object_probability import choose_object_probability
from unetflow.infer.package import build_package, packaged_predict, save_package
from unetflow.instances.targets import instance_target
from unetflow.logs import stage_logger
from unetflow.threads import job_threads
from unetflow.tracking.artifacts import log_to_runs

log = stage_logger(snakemake.log[0])
if snakemake.params.sharing:
    log.info("experiment %s: %s", snakemake.wildcards.experiment, snakemake.params.sharing)
checkpoints = [snakemake.input.models] if isinstance(snakemake.input.models, str) else list(snakemake.input.models)
splits = pd.read_parquet(snakemake.input.splits)
trained = splits.loc[splits["split"] != "test", "id"]
manifest, stored = pd.read_parquet(snakemake.input.manifest), pd.read_parquet(snakemake.input.stored)
with open(snakemake.input.settings) as file:
    settings = json.load(file)
with open(snakemake.input.plan) as file:
    plan = json.load(file)
with open(snakemake.input.fingerprint) as file:
    fingerprint = json.load(file)
predict = packaged_predict(snakemake.params.predict, fingerprint, snakemake.input.fingerprint)
if snakemake.params.predict["min_object_size"] == "auto":
    log.info("predict.min_object_size auto: %d px (%s)", predict["min_object_size"],
             fingerprint["min_object_size_reason"])
package_classes = pd.read_parquet(snakemake.input.classes)
package = build_package(checkpoints, snakemake.params.sources, plan, manifest[manifest["id"].isin(trained)],
                        stored[stored["id"].isin(trained)], package_classes, settings,
                        predict, snakemake.params.data, pd.read_parquet(snakemake.input.regions))
save_package(package, snakemake.output[0])
if snakemake.params.predict["object_probability"] == "auto" and instance_target(package_classes):
    torch.set_num_threads(job_threads(snakemake.threads))
    log.info("predict.object_probability auto: %s", choose_object_probability(
        snakemake.output[0], package, splits, manifest, snakemake.params.predict["device"]))
log.info("packaged %d model(s) (%s), mirrored: %s, and %d classes into %s", len(checkpoints),
         ", ".join(f"{m['source']}: patch {m['patch_size']}" for m in package["models"]), package["predict"]["mirror"],
         len(package["classes"]),
         snakemake.output[0])
runs = log_to_runs(list(snakemake.input.tracking), "package", [snakemake.output[0]],
                   snakemake.config["tracking"]["timeout"])
if runs:
    log.info("package logged to the MLflow runs of %d fold(s)", runs)
