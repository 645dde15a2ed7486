"""Rule infer_shard: segment the images of one shard with a model package; masks and a summary table."""

import json
from pathlib import Path

import pandas as pd
import torch

from unetflow.infer.infer import Predictor
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
shard = json.loads(Path(snakemake.input.shard).read_text())
checked = pd.read_parquet(snakemake.input.checked)
sources = checked[checked["image_path"].isin(shard["files"])]
predictor = Predictor.load(snakemake.input.package, shard["device"])
summary = predictor.predict_sources(sources, snakemake.output.masks, shard["save_probabilities"])
summary.to_parquet(snakemake.output.table)
log.info("shard %s: %d image source(s) segmented on %s into %s", snakemake.wildcards.shard, len(sources),
         predictor.device, snakemake.output.masks)
