"""Each inference shard keeps a ledger of the files it wrote (JSON, beside its table but not a Snakemake output, so it
survives reruns): when the shard runs again, or the summary finds the shard gone, the files of images that no longer
exist are removed. Files of images that still exist stay: another shard may write them now. Whole-slide images have
one ledger of the outputs of each slide: the summary removes those of slides that no longer exist. And every output
name is claimed by the image it was last written for (`claims.json`, kept across runs): an image of another folder
would replace outputs of the same name, and is refused while the image they belong to exists."""

import glob
import json
import os
from pathlib import Path

import pandas as pd

from unetflow.io.formats import seg_path

CLAIMS_FILE = "claims.json"  # beside the masks: every output name and the image it was last written for


def ledger_path(shards_dir, shard: int) -> Path:
    """The ledger of shard `shard` in the folder of the shard tables."""
    return Path(shards_dir, f"shard{shard}_written.json")


def record_written(ledger, summary: pd.DataFrame, out_dir, probabilities: bool) -> Path:
    """Write a shard's ledger: {image: the files written for it}, its mask (and the DICOM SEG beside it, if any)
    and, with `probabilities`, the probabilities of each unit."""
    written = {}
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


def forget_gone_slides(ledger, slides: dict[str, dict]) -> list[str]:
    """The outputs of the slides the ledger (JSON {name: {image, outputs}}) lists that are not among `slides` and
    whose file no longer exists removed (and their folders once empty); the ledger rewritten with `slides` and the
    slides still on disk, whose outputs stay (as a plain image's masks stay); the paths removed."""
    before = json.loads(Path(ledger).read_text()) if Path(ledger).is_file() else {}
    removed, kept = [], {}
    for name in before.keys() - slides.keys():
        if Path(before[name]["image"]).exists():
            kept[name] = before[name]
            continue
        for file in map(Path, before[name]["outputs"]):
            if file.is_file():
                file.unlink()
                removed.append(str(file))
            if file.parent.is_dir() and not any(file.parent.iterdir()):
                file.parent.rmdir()
    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    Path(ledger).write_text(json.dumps(kept | slides, indent=1))
    return removed


def overwrite_problems(table: pd.DataFrame, out_dir) -> list[str]:
    """The images of `table` (checked sources: id, image_path) whose outputs would replace those an earlier run wrote
    in `out_dir` for another image that still exists (two folders' images of one name), each named."""
    claims, problems = read_claims(out_dir), []
    for name, image in zip(table["id"], table["image_path"]):
        earlier = claims.get(name)
        if earlier is None or os.path.realpath(earlier) == os.path.realpath(image) or not Path(earlier).exists():
            continue
        written = glob.glob(os.path.join(glob.escape(str(Path(out_dir, "masks", name))) + ".*"))
        if written:
            problems.append(f"{written[0]}: the mask of {earlier}, which {image} would replace (one name, two "
                            f"images); move or delete {Path(out_dir, 'masks')} to keep or replace the earlier masks")
    return problems


def record_claims(table: pd.DataFrame, out_dir) -> None:
    """Claim the output names of `table`'s images (see `overwrite_problems`)."""
    claims = read_claims(out_dir) | dict(zip(table["id"], table["image_path"]))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, CLAIMS_FILE).write_text(json.dumps(claims, indent=1))


def read_claims(out_dir) -> dict[str, str]:
    """{output name: the image it was last written for} of `out_dir`, empty before any."""
    path = Path(out_dir, CLAIMS_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}
