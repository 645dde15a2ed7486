"""Ingest and validate a data set: pair images with masks, read every pair, report every problem at once.

Pairing: the case id is the image's file stem. Its mask is the file in the masks folder whose stem is the id plus
`mask_suffix`; with `mask_suffix: auto` the stems may also differ by one of AUTO_MASK_SUFFIXES (`case1.png` pairs
with `case1_mask.png`).
"""

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.io import IMAGE_SUFFIXES, MASK_SUFFIXES, ImageReadError, case_stem, read_image, read_mask

AUTO_MASK_SUFFIXES = ("", "_mask", "_masks", "-mask", "_seg", "_label", "_labels", "_gt", "_segmentation")


class DataValidationError(ValueError):
    """The data set has problems; the message lists every one with its file."""


def list_files(spec: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Files named by a folder (its direct children) or a glob pattern, keeping those with a known suffix."""
    paths = [Path(p) for p in (glob.glob(os.path.join(spec, "*")) if os.path.isdir(spec) else glob.glob(spec))]
    return sorted(p for p in paths if p.is_file() and p.name.lower().endswith(suffixes))


def pair_files(images: list[Path], masks: list[Path], mask_suffix: str) -> tuple[list[tuple], list[str]]:
    """Match images to masks by stem; return (id, image, mask) triples and the pairing problems."""
    suffixes = AUTO_MASK_SUFFIXES if mask_suffix == "auto" else (mask_suffix,)
    masks_by_stem = {case_stem(m): m for m in masks}
    pairs, problems, used = [], [], set()
    for image in images:
        case_id = case_stem(image)
        found = [masks_by_stem[case_id + s] for s in suffixes if case_id + s in masks_by_stem]
        if not found:
            problems.append(f"{image}: no mask found (looked for '{case_id}' + one of {list(suffixes)} in the masks)")
        elif len(found) > 1:
            problems.append(f"{image}: several masks match: {', '.join(map(str, found))}")
        else:
            pairs.append((case_id, image, found[0]))
            used.add(found[0])
    problems += [f"{m}: mask without an image" for m in masks if m not in used]
    ids = [p[0] for p in pairs]
    problems += [f"case id '{i}' occurs more than once" for i in sorted({i for i in ids if ids.count(i) > 1})]
    return pairs, problems


def inspect_pair(case_id: str, image_path: Path, mask_path: Path) -> tuple[dict | None, list[str]]:
    """Read one pair; return its manifest row and its problems."""
    try:
        image, mask = read_image(image_path), read_mask(mask_path)
    except ImageReadError as error:
        return None, [str(error)]
    if mask.ndim != 2:
        return None, [f"{mask_path}: colour mask (H, W, 3) needs a declared colour table; store class values instead"]
    if image.shape[:2] != mask.shape:
        return None, [f"{image_path}: image is {image.shape[0]}x{image.shape[1]} but its mask {mask_path} is "
                      f"{mask.shape[0]}x{mask.shape[1]} (height x width)"]
    values, counts = np.unique(mask, return_counts=True)
    row = dict(id=case_id, image_path=str(image_path), mask_path=str(mask_path), height=image.shape[0],
               width=image.shape[1], channels=image.shape[2], dtype=str(image.dtype),
               label_values=values.tolist(), label_fractions=(counts / mask.size).tolist())
    return row, []


def resolve_classes(declared: dict | None, rows: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """Class table (index, name, value): the declared {name: value} mapping, or the values found in the masks."""
    found = sorted({v for row in rows for v in row["label_values"]})
    if declared:
        names, values = list(declared), [int(v) for v in declared.values()]
    else:
        values = found
        names = ["background", "foreground"] if len(found) == 2 else [f"class_{v}" for v in found]
    problems = [f"{row['mask_path']}: mask values {sorted(set(row['label_values']) - set(values))} are not among "
                f"the declared classes {dict(zip(names, values))} (set data.classes)"
                for row in rows if set(row["label_values"]) - set(values)]
    if len(values) < 2 and not problems:
        problems.append(f"all masks hold the single value {values}: at least two classes are needed")
    return pd.DataFrame({"index": range(len(values)), "name": names, "value": values}), problems


def channel_problems(rows: list[dict]) -> list[str]:
    """Every image must have the channel count of the majority."""
    counts = pd.Series([r["channels"] for r in rows])
    expected = int(counts.mode()[0]) if len(counts) else 0
    return [f"{r['image_path']}: {r['channels']} channels where the data set has {expected}"
            for r in rows if r["channels"] != expected]


def build_manifest(images: str, masks: str, mask_suffix: str = "auto", classes: dict | None = None,
                   threads: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate the data set; return (manifest, class table) or raise DataValidationError listing every problem."""
    image_files, mask_files = list_files(images, IMAGE_SUFFIXES), list_files(masks, MASK_SUFFIXES)
    if not image_files:
        raise DataValidationError(f"no image files matched data.images = '{images}' (suffixes {IMAGE_SUFFIXES})")
    pairs, problems = pair_files(image_files, mask_files, mask_suffix)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda pair: inspect_pair(*pair), pairs))
    rows = [row for row, _ in results if row is not None]
    problems += [p for _, case_problems in results for p in case_problems]
    class_table, class_problems = resolve_classes(classes, rows)
    problems += class_problems + channel_problems(rows)
    if problems:
        raise DataValidationError(f"{len(problems)} problem(s) in the data set:\n  - " + "\n  - ".join(problems))
    return pd.DataFrame(rows), class_table
