"""Rule demo_data: write the synthetic demo data set."""

from unetflow.data.demo import write_demo_data
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.demo
write_demo_data(snakemake.output[0], cfg["count"], cfg["size"], cfg["seed"], cfg["instances"])
log.info("wrote %d demo cases of %dx%d%s to %s", cfg["count"], cfg["size"], cfg["size"],
         " (touching cells, instance masks)" if cfg["instances"] else "", snakemake.output[0])
