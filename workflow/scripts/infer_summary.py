"""Rule infer_summary: one table of every segmented image and class, lowest confidence first in the log; the objects of
the instance mode and the whole-slide images in one table each; and the masks of removed images of shards that have
no images any more, and the outputs of slides that no longer exist, removed."""

from pathlib import Path

import pandas as pd

from unetflow.infer.ledger import close_gone_shards, forget_gone_slides
from unetflow.infer.summary import SUMMARY_COLUMNS, check_first, small_objects_note
from unetflow.instances.objects import OBJECT_COLUMNS
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
out = Path(snakemake.output.summary).parent
for path in close_gone_shards(out / "shards", set(snakemake.params.shards)):
    log.info("removed %s: its image no longer exists", path)
for path in forget_gone_slides(out / "slides" / "written.json", snakemake.params.slides):
    log.info("removed %s: its slide no longer exists", path)


def joined(paths, order: list[str], columns) -> pd.DataFrame:
    """The tables at `paths` in one, sorted by the columns `order` (without tables: empty, with `columns`)."""
    tables = [pd.read_parquet(path) for path in paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(columns))
    return table.sort_values(order).reset_index(drop=True) if len(table) else table


summary = joined(snakemake.input.tables, ["id", "class"], SUMMARY_COLUMNS)
summary.to_parquet(snakemake.output.summary)
joined(snakemake.input.objects, ["case", "slice", "id"], OBJECT_COLUMNS).to_parquet(snakemake.output.objects)
slides = joined(snakemake.input.slides, ["id"], ["id", "image_path", "mask_path"])
slides.to_parquet(snakemake.output.slides)
if len(summary):
    log.info("%d image(s) segmented; no foreground or the lowest mean foreground confidence (check these first):\n%s",
             summary["id"].nunique(), "\n".join(check_first(summary)))
    if note := small_objects_note(summary):
        log.warning(note)
log.info("%d whole-slide image(s) segmented (slides.parquet)", len(slides))
