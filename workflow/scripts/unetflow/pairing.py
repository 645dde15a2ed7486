"""Pairing: which files form the cases of a data set.

Images and masks are matched by stem: a mask's stem is `mask_prefix` + the image stem + `mask_suffix`, and
`mask_suffix: auto` accepts any of AUTO_MASK_SUFFIXES. Alternatively a manifest file (CSV or Parquet) lists
image, mask[, group, split] per row. Regions of interest are matched to images by stem (+ one of ROI_SUFFIXES).
"""

import glob
import os
from pathlib import Path

import pandas as pd

from unetflow.io import IMAGE_SUFFIXES, VOLUME_SUFFIXES, ImageReadError, case_stem

AUTO_MASK_SUFFIXES = ("", "_mask", "_masks", "-mask", "_seg", "_label", "_labels", "_gt", "_segmentation")
ROI_SUFFIXES = ("", "_roi", "_mask")
SPLIT_NAMES = ("train", "val", "test")


class DataValidationError(ValueError):
    """The data set has problems; the message lists every one with its file or config key."""


def list_files(spec: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Files named by a folder (its direct children) or a glob pattern (`**` matches any depth), keeping those
    with a known suffix."""
    paths = [Path(p) for p in (glob.glob(os.path.join(spec, "*")) if os.path.isdir(spec)
                               else glob.glob(spec, recursive=True))]
    return sorted(p for p in paths if p.is_file() and p.name.lower().endswith(suffixes))


def stems_of(paths: list[Path]) -> dict[str, list[Path]]:
    """{file stem: files with that stem}."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(case_stem(path), []).append(path)
    return by_stem


def match_by_stem(stem: str, candidates: dict[str, list[Path]], prefix: str, suffixes) -> list[Path]:
    """The candidate files whose stem is prefix + stem + one of the suffixes."""
    return [p for s in suffixes for p in candidates.get(prefix + stem + s, [])]


def pair_files(images: list[Path], masks: list[Path], mask_suffix: str,
               mask_prefix: str = "") -> tuple[list[dict], list[str]]:
    """Match images to masks by stem; return source pairs {stem, image, mask} and the pairing problems. Images
    and masks may share a folder: a file that is the mask of another image is not an image itself."""
    suffixes = AUTO_MASK_SUFFIXES if mask_suffix == "auto" else (mask_suffix,)
    masks_by_stem, pairs, problems, used = stems_of(masks), [], [], set()
    candidates = {stem: [m for m in match_by_stem(stem, masks_by_stem, mask_prefix, suffixes) if m not in files]
                  for stem, files in stems_of(images).items()}
    masks_of_images = {mask for found in candidates.values() for mask in found}
    for stem, files in stems_of([image for image in images if image not in masks_of_images]).items():
        if len(files) > 1:
            problems.append(f"duplicate case id '{stem}': {', '.join(map(str, files))} have the same stem; "
                            f"rename one of them")
            continue
        found = candidates[stem]
        if not found:
            problems.append(f"{files[0]}: no mask found (looked for '{mask_prefix}{stem}' + one of "
                            f"{list(suffixes)} in data.masks); add its mask or set data.mask_suffix/mask_prefix")
        elif len(found) > 1:
            problems.append(f"{files[0]}: several masks match: {', '.join(map(str, found))}; keep one")
        else:
            pairs.append(dict(stem=stem, image=files[0], mask=found[0]))
        used.update(found)
    problems += [f"{m}: mask without an image (no image with a matching stem); remove it or add its image"
                 for m in masks if m not in used and m not in images]
    return pairs, problems


def read_manifest_file(path: str) -> pd.DataFrame:
    """A CSV or Parquet manifest with columns image, mask and optionally group, split."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"data.manifest: no such file '{path}'")
    table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    missing = {"image", "mask"} - set(table.columns)
    if missing:
        raise DataValidationError(f"data.manifest '{path}': missing column(s) {sorted(missing)}; it needs image, "
                                  f"mask and optionally group, split (found {list(table.columns)})")
    return table


def pairs_from_manifest(path: str) -> tuple[list[dict], list[str]]:
    """Source pairs listed in a manifest file (paths relative to its folder) and their problems."""
    table, folder = read_manifest_file(path), Path(path).parent
    pairs, problems = [], []
    for number, row in enumerate(table.itertuples(index=False), start=2):
        image, mask = folder / str(row.image), folder / str(row.mask)
        try:
            pair = dict(stem=case_stem(image), image=image, mask=mask)
        except ImageReadError as error:
            problems.append(f"data.manifest line {number}: {error}")
            continue
        if "group" in table and pd.notna(row.group):
            pair["group"] = str(row.group)
        if "split" in table:
            pair["split"] = row.split
            if row.split not in SPLIT_NAMES:
                problems.append(f"data.manifest line {number} ({image.name}): split '{row.split}' is not one of "
                                f"{list(SPLIT_NAMES)}")
        pairs.append(pair)
    stems = pd.Series([p["stem"] for p in pairs])
    problems += [f"data.manifest: duplicate case id '{s}' (several images with this stem); rename them"
                 for s in sorted(stems[stems.duplicated()].unique())]
    return pairs, problems


def attach_rois(pairs: list[dict], spec: str) -> list[str]:
    """Add each pair's region-of-interest file (same stem, or stem + '_roi'); return the problems."""
    rois = stems_of(list_files(spec, IMAGE_SUFFIXES + VOLUME_SUFFIXES))
    problems, used = [], set()
    for pair in pairs:
        found = match_by_stem(pair["stem"], rois, "", ROI_SUFFIXES)
        if len(found) != 1:
            problems.append(f"{pair['image']}: {len(found) or 'no'} region-of-interest file(s) in data.rois "
                            f"'{spec}' (looked for '{pair['stem']}' + one of {list(ROI_SUFFIXES)}); keep one")
        else:
            pair["roi"] = found[0]
        used.update(found)
    return problems
