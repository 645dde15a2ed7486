"""Rule infer_shard: segment the images of one shard with a model package; masks and a summary table."""

from pathlib import Path

import pandas as pd
import torch

from unetflow.infer import Predictor
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.infer
checked = pd.read_parquet(snakemake.input.checked)
sources = checked[checked["image_path"].isin(Path(snakemake.input.files).read_text().splitlines())]
predictor = Predictor.load(snakemake.input.package, cfg["device"])
summary = predictor.predict_sources(sources, snakemake.output.masks, cfg["save_probabilities"])
summary.to_parquet(snakemake.output.table)
log.info("shard %s: %d image source(s) segmented on %s into %s", snakemake.wildcards.shard, len(sources),
         predictor.device, snakemake.output.masks)
