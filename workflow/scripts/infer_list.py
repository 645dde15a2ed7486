"""Rule infer_list: one inference shard's image files and prediction settings (what infer_shard reads)."""

import json
from pathlib import Path

from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
shard = dict(files=sorted(map(str, snakemake.input.images)), **snakemake.params.infer)
Path(snakemake.output[0]).write_text(json.dumps(shard, indent=1))
log.info("shard %s: %d image file(s)", snakemake.wildcards.shard, len(shard["files"]))
