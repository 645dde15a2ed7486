"""Rule demo_data: write the synthetic demo data set."""

from unetflow.demo import write_demo_data
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.demo
write_demo_data(snakemake.output[0], cfg["count"], cfg["size"], cfg["seed"])
log.info("wrote %d demo cases of %dx%d to %s", cfg["count"], cfg["size"], cfg["size"], snakemake.output[0])
