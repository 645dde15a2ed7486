"""Rule infer_summary: one table of every segmented image and class, lowest confidence first in the log; and the
objects of the instance mode in one table."""

import pandas as pd

from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
summary = pd.concat([pd.read_parquet(path) for path in snakemake.input.tables], ignore_index=True)
summary = summary.sort_values(["id", "class"]).reset_index(drop=True)
summary.to_parquet(snakemake.output.summary)
objects = pd.concat([pd.read_parquet(path) for path in snakemake.input.objects], ignore_index=True)
objects.sort_values(["case", "slice", "id"]).reset_index(drop=True).to_parquet(snakemake.output.objects)
foreground = summary[summary["class"] > 0]
least = foreground.groupby("id")["confidence"].mean().sort_values().head(10)
log.info("%d image(s) segmented; lowest mean foreground confidence (check these first):\n%s",
         summary["id"].nunique(), least.to_string(float_format="%.4f"))
