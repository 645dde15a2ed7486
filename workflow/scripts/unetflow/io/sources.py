"""A manifest row's sources read as 2D slices: its image file, stack or volume, and its mask as class indices.

A row's `kind` says what its source is: 'image' (a 2D file), 'stack' (a page of a multi-page TIFF) or 'volume' (a
slice of a NIfTI volume along `slice_axis`); its `slice` is the index in the source.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.instances.targets import instance_ids, instance_target, training_target
from unetflow.io.formats import is_volume
from unetflow.io.images import is_lossy_mask, read_image, read_mask, read_mask_stack, read_stack
from unetflow.io.labels import ID_LIMIT, LABEL_LIMIT, LabelCoding, map_labels, mask_values
from unetflow.io.volumes import volume_image_slices, volume_mask_slices


def source_kind(image: Path, info: dict) -> str:
    """'volume' for NIfTI files, 'stack' for multi-page TIFFs (`info`: `io.image_info` of the file), else 'image'."""
    if is_volume(image):
        return "volume"
    return "stack" if info["depth"] > 1 else "image"


def slice_id(stem: str, kind: str, index: int) -> str:
    """Case id of one slice: the stem for 2D files, `<stem>_s<i>` for stack pages, `<stem>_z<i>` for volume slices."""
    return {"image": stem, "stack": f"{stem}_s{index}", "volume": f"{stem}_z{index}"}[kind]


def row_kind(row) -> str:
    """The row's source kind ('image', 'stack' or 'volume'); manifests without the column hold 2D images."""
    return row["kind"] if "kind" in row and isinstance(row["kind"], str) else "image"


def source_images(row) -> np.ndarray:
    """Every slice of the row's image source as (S, H, W, C): one slice for 2D files."""
    kind = row_kind(row)
    if kind == "volume":
        return volume_image_slices(row["image_path"], int(row["slice_axis"]))
    if kind == "stack":
        return read_stack(row["image_path"])
    return read_image(row["image_path"])[None]


def source_masks(row, colour: bool, ids: bool = False) -> np.ndarray:
    """Every slice of the row's mask source as (S, H, W) values, or (S, H, W, 3) colours when `colour`; with `ids`
    (instance masks of 2D files and TIFF stacks) values above 65535 are read as uint32."""
    path, kind = row["mask_path"], row_kind(row)
    limit = ID_LIMIT if ids else LABEL_LIMIT
    if kind == "volume":
        return volume_mask_slices(path, int(row["slice_axis"]))
    if kind == "stack":
        return read_stack(path) if colour else read_mask_stack(path, limit)
    if colour:
        image = read_image(path)
        return np.repeat(image, 3, axis=2)[None] if image.shape[2] == 1 else image[None]
    return read_mask(path, limit)[None]


def case_labels(rows: pd.DataFrame, classes: pd.DataFrame) -> list[np.ndarray]:
    """Class indices (H, W) uint8 (ignored pixels IGNORE_INDEX) of every row, all rows from one mask source read
    once: the ground truth as training and evaluation see it."""
    first = rows.iloc[0]
    coding = LabelCoding.of(classes)
    slices = source_masks(first, coding.colors is not None)
    lossy = is_lossy_mask(first["mask_path"])
    labels = []
    for _, row in rows.iterrows():
        raw = slices[int(row["slice"]) if row_kind(first) != "image" else 0]
        mapped, _ = mask_values(raw, coding, lossy, first["mask_path"])
        labels.append(mapped if coding.colors is not None else map_labels(mapped, coding.values, coding.ignored))
    return labels


def case_instance_ids(rows: pd.DataFrame) -> list[np.ndarray]:
    """Object ids (H, W) of every row of one instance-mask source, the source read once (instance mode)."""
    first = rows.iloc[0]
    slices = source_masks(first, colour=False, ids=True)
    return [instance_ids(slices[int(row["slice"]) if row_kind(first) != "image" else 0]) for _, row in rows.iterrows()]


def case_targets(rows: pd.DataFrame, classes: pd.DataFrame,
                 weight_map: dict | None = None) -> tuple[list[np.ndarray], list | None, list | None]:
    """The training target (H, W) of every row of one source (class indices, or in the instance mode the target
    of its objects, see `unetflow.instances.training_target`, with the `weight_map` settings) and, in the instance
    mode, the object ids and the loss weights (None each, or per row for `weight_map`; else None)."""
    target = instance_target(classes)
    if not target:
        return case_labels(rows, classes), None, None
    ids = case_instance_ids(rows)
    labels, weights = zip(*(training_target(slice_ids, target, weight_map) for slice_ids in ids))
    return list(labels), ids, list(weights)
