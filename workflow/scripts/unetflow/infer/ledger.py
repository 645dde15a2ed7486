"""Each inference shard keeps a ledger of the files it wrote (JSON, beside its table but not a Snakemake output, so it
survives reruns): when the shard runs again, or the summary finds the shard gone, the files of images that no longer
exist are removed. Files of images that still exist stay: another shard may write them now."""

import json
from pathlib import Path

import pandas as pd

from unetflow.io.formats import seg_path

SLIDE_FILES = ("mask_path", "objects_path", "geojson_path")  # the columns of a slide's files in its summary row


def ledger_path(shards_dir, shard: int) -> Path:
    """The ledger of shard `shard` in the folder of the shard tables."""
    return Path(shards_dir, f"shard{shard}_written.json")


def record_written(ledger, summary: pd.DataFrame, out_dir, probabilities: bool, slides: pd.DataFrame) -> Path:
    """Write a shard's ledger: {image: the files written for it}, its mask (and the DICOM SEG beside it, if any)
    and, with `probabilities`, the probabilities of each unit; of each slide (a row of `slides`) its label pyramid,
    object table and polygons (those it has)."""
    written = {row["image_path"]: [row[key] for key in SLIDE_FILES if isinstance(row.get(key), str)]
               for row in slides.to_dict("records")}
    units = summary.drop_duplicates("id").to_dict("records") if len(summary) else []  # a class row per unit
    for row in units:
        seg = seg_path(row["mask_path"])
        written.setdefault(row["image_path"], [row["mask_path"], *([str(seg)] if seg.is_file() else [])])
        written[row["image_path"]] += [str(Path(out_dir, f"{row['id']}.npz"))] if probabilities else []
    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    Path(ledger).write_text(json.dumps(written, indent=1))
    return Path(ledger)


def remove_masks_of_removed_images(ledger) -> list[str]:
    """The files a shard wrote before (its ledger) for images that no longer exist, removed; their paths."""
    if not Path(ledger).is_file():
        return []
    removed = []
    for image, files in json.loads(Path(ledger).read_text()).items():
        if not Path(image).exists():
            for file in files:
                Path(file).unlink(missing_ok=True)
                removed.append(file)
    return removed


def close_gone_shards(shards_dir, shards: set[int]) -> list[str]:
    """The ledgers of shards that have no images any more (not in `shards`): the files of their removed images
    removed, the ledgers deleted; the paths removed."""
    removed = []
    for ledger in Path(shards_dir).glob("shard*_written.json"):
        if int(ledger.name[5:-len("_written.json")]) not in shards:
            removed += remove_masks_of_removed_images(ledger)
            ledger.unlink()
    return removed
