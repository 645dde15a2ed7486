"""Rule infer_list: the image files of one inference shard, one per line (what the shard's prediction reads)."""

from pathlib import Path

from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
files = sorted(map(str, snakemake.input))
Path(snakemake.output[0]).write_text("".join(f"{path}\n" for path in files))
log.info("shard %s: %d image file(s)", snakemake.wildcards.shard, len(files))
