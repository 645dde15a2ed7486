"""Rule infer_slide: the parts of a whole-slide image's labels merged into its label pyramid (named as masks are),
with its object table (instance packages) and GeoJSON polygons beside it, and its summary row."""

import json
from pathlib import Path

import pandas as pd

from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import SlidePredictor
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
listed = json.loads(Path(snakemake.input.listed).read_text())
slides = SlidePredictor(Predictor.load(snakemake.input.package, "cpu"), listed["slide_region"],
                        listed["slide_object_size"], listed["slide_geojson"], listed["slide_tissue"])
Path(snakemake.output.labels).parent.mkdir(parents=True, exist_ok=True)
row = slides.merge(listed["files"][0], snakemake.input.parts, snakemake.output.labels, listed["slide_pixel_size"])
pd.DataFrame([dict(id=snakemake.wildcards.slide, **row)]).to_parquet(snakemake.output.table)
log.info("%s: %d part(s) merged into %s", listed["files"][0], len(snakemake.input.parts), snakemake.output.labels)
