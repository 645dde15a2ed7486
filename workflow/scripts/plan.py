"""Rule plan: the experiment's training plan, made once from the stored training sources (all but the test split),
the fingerprint and the device its training jobs run on; every fold, the package and the leaderboard read it."""

import json

import pandas as pd
import torch

from unetflow.gpu import pick_device
from unetflow.instances.targets import instance_target
from unetflow.io.labels import class_values, trained_classes
from unetflow.logs import stage_logger
from unetflow.plan.plan import PlanError, make_plan, unseen_class_problem
from unetflow.plan.resolution import few_passes, image_scale, thin_structure_loss, undertrained_note
from unetflow.threads import job_threads
from unetflow.train.finetune import checked_init, init_record, package_network

log = stage_logger(snakemake.log[0])
torch.set_num_threads(job_threads(snakemake.threads))  # as training, whose step time the plan may measure
cfg = snakemake.params.train
stored, splits = pd.read_parquet(snakemake.input.stored), pd.read_parquet(snakemake.input.splits)
sources = stored[stored["id"].isin(splits.loc[splits["split"] != "test", "id"])]
with open(snakemake.input.fingerprint) as file:
    fingerprint = json.load(file)
classes, regions = pd.read_parquet(snakemake.input.classes), pd.read_parquet(snakemake.input.regions)
outputs = len(regions) or len(class_values(classes))  # one per class or region
if unseen := unseen_class_problem(trained_classes(classes)["name"].tolist(), stored, splits):
    raise PlanError(unseen)
package = checked_init(str(snakemake.input.init), cfg, sources, classes, regions) if cfg["init"] else None
network = package and dict(network=package_network(package.models[0]),
                           name=f"train.init package {package.path} (model {package.models[0]['source']})")
plan = make_plan(cfg, sources, fingerprint, outputs, pick_device(cfg["device"]),
                 instances=bool(instance_target(classes)), package=network)
with open(snakemake.input.settings) as file:
    preprocess = json.load(file)
plan["image_scale"] = image_scale(preprocess, plan["settings"]["resolution"]["value"])
if package:
    plan["init"] = init_record(package, classes, regions, preprocess)
with open(snakemake.output[0], "w") as file:
    json.dump(plan, file, indent=2)
log.info("plan for %s (%s) from %d training sources; traits %s", plan["device"]["type"], plan["device"]["name"],
         len(sources), plan["traits"])
for trial in plan["resolutions_tried"]:
    step = "not measured (a budget in steps)" if trial["step_seconds"] is None else f"{trial['step_seconds']} s"
    log.info("resolution %g: patch %s, batch %d, step %s, %g passes over the training pixels in the budget",
             trial["resolution"], trial["patch_size"], trial["batch_size"], step, trial["passes"])
for key, entry in plan["settings"].items():
    log.info("plan: %s = %s (%s: %s)", key, entry["value"], entry["source"], entry["reason"])
if plan["image_scale"] and plan["image_scale"]["value"] != 1:
    log.info("2D images reach the network at %g of their size in the files: %s", plan["image_scale"]["value"],
             plan["image_scale"]["reason"])
if cfg["resolution"] is not None and (lost := thin_structure_loss(
        float(cfg["resolution"]), plan["traits"].get("boundary_distance"), "train.resolution")):
    log.warning(lost)
if cfg["resolution"] is not None and plan["resolutions_tried"] and (
        few := few_passes(plan["resolutions_tried"][0], "train.resolution")):
    log.warning(few)
if cfg["resolution"] is None and (few := undertrained_note(plan["resolutions_tried"],
                                                           plan["settings"]["resolution"]["value"])):
    log.warning(few)
if package:
    init = plan["init"]
    log.info("fine-tuning from %s (model %s, sha256 %s): %s", init["package"], init["model"], init["sha256"][:12],
             "new output head (the classes differ)" if init["new_head"] else "every layer, the head included")
    if init["normalization_warning"]:
        log.warning("normalisation differs a lot from the package's: %s. The package's features see inputs scaled "
                    "otherwise than in its training", init["normalization_warning"])
