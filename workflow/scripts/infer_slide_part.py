"""Rule infer_slide_part: one part of a whole-slide image's labels (a run of rows of its regions) and of an instance
package its objects, predicted with a model package."""

import json
from pathlib import Path

import torch

from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import SlidePredictor
from unetflow.logs import stage_logger
from unetflow.threads import job_threads

log = stage_logger(snakemake.log[0])
torch.set_num_threads(job_threads(snakemake.threads))
listed = json.loads(Path(snakemake.input.listed).read_text())
slides = SlidePredictor(Predictor.load(snakemake.input.package, listed["device"]), listed["slide_region"],
                        listed["slide_object_size"], listed["slide_geojson"], listed["slide_tissue"])
slides.predict_part(listed["files"][0], snakemake.output.labels, listed["slide_pixel_size"],
                    int(snakemake.wildcards.part), listed["slide_jobs"])
