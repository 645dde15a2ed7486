"""Rule split: seeded train/val/test split of the cases, k-fold folds, or the manifest's fixed split."""

import pandas as pd

from unetflow.config import split_fractions
from unetflow.data.split import folder_leak_note, held_out_share_note, name_leak_note, split_cases
from unetflow.logs import stage_logger

log = stage_logger(snakemake.log[0])
cfg = snakemake.params.split
manifest = pd.read_parquet(snakemake.input.manifest)
if "split" in manifest and manifest["split"].notna().any() and not cfg["fixed"]:
    log.warning("data.manifest has a split column, which this split does not use (split.fixed is false): the cases "
                "are split by split.seed %d; set split.fixed: true to take the manifest's split", cfg["seed"])
fractions = split_fractions(cfg)
splits = split_cases(manifest, *fractions, cfg["seed"], cfg["group_by"], cfg["folds"], cfg["fixed"],
                     cfg["stratify_by"], cfg["group_pattern"])
if not cfg["fixed"] and (note := held_out_share_note(splits, fractions[2])):
    log.warning(note)
if not cfg["fixed"] and cfg["group_by"] is None and cfg["group_pattern"] is None and (
        note := folder_leak_note(manifest, splits) or name_leak_note(manifest, splits)):
    log.warning(note)
splits.to_parquet(snakemake.output[0])
log.info("split sizes: %s%s", splits["split"].value_counts().to_dict(),
         f"; fold sizes: {splits['fold'].value_counts().sort_index().to_dict()}" if "fold" in splits else "")
