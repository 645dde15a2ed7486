"""Rules infer_list and infer_slide_list: the image files and prediction settings of one inference shard or of one
whole-slide image (what infer_shard and infer_slide_part read)."""

import json
from pathlib import Path

from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
shard = dict(files=sorted(map(str, snakemake.input.images)), **snakemake.params.infer)
Path(snakemake.output[0]).write_text(json.dumps(shard, indent=1))
log.info("%s: %d image file(s)", snakemake.output[0], len(shard["files"]))
