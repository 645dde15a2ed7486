"""Rule infer_summary: one table of every segmented image and class, lowest confidence first in the log; the objects of
the instance mode and the whole-slide images in one table each; and the masks of removed images of shards that have
no images any more removed."""

from pathlib import Path

import pandas as pd

from unetflow.infer.ledger import close_gone_shards
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
for path in close_gone_shards(Path(snakemake.input.tables[0]).parent, set(snakemake.params.shards)):
    log.info("removed %s: its image no longer exists", path)
summary = pd.concat([pd.read_parquet(path) for path in snakemake.input.tables], ignore_index=True)
summary = summary.sort_values(["id", "class"]).reset_index(drop=True) if len(summary) else summary
summary.to_parquet(snakemake.output.summary)
objects = pd.concat([pd.read_parquet(path) for path in snakemake.input.objects], ignore_index=True)
objects.sort_values(["case", "slice", "id"]).reset_index(drop=True).to_parquet(snakemake.output.objects)
slides = pd.concat([pd.read_parquet(path) for path in snakemake.input.slides], ignore_index=True)
slides = slides.sort_values("id").reset_index(drop=True) if len(slides) else slides
slides.to_parquet(snakemake.output.slides)
if len(summary):
    least = summary[summary["class"] > 0].groupby("id")["confidence"].mean().sort_values().head(10)
    log.info("%d image(s) segmented; lowest mean foreground confidence (check these first):\n%s",
             summary["id"].nunique(), least.to_string(float_format="%.4f"))
log.info("%d whole-slide image(s) segmented (slides.parquet)", len(slides))
