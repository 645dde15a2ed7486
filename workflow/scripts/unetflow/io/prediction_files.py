"""Prediction files: where the predicted masks of a case or volume go, how they are written in the encoding of the
training masks, and how they (and the saved probabilities) are read back."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from unetflow.instances.objects import instances_from_probabilities, object_rows
from unetflow.io.formats import is_volume, volume_suffix
from unetflow.io.images import mask_palette, read_mask, write_mask
from unetflow.io.labels import (
    ID_LIMIT,
    LABEL_LIMIT,
    class_colors,
    class_values,
    colors_to_indices,
    integer_labels,
    map_labels,
)
from unetflow.io.nifti import read_volume
from unetflow.io.volumes import is_volume_unit, write_volume_labels

log = logging.getLogger("unetflow.io.prediction_files")
PROBABILITIES_KEY = "probabilities"


def prediction_path(out_dir, name: str, rows: pd.DataFrame) -> Path:
    """Where the prediction of a unit goes: <volume>.nii[.gz] for a volume, <id>.png otherwise."""
    suffix = volume_suffix(rows.iloc[0]["image_path"]) if is_volume_unit(rows) else ".png"
    return Path(out_dir, name + suffix)


def write_labels(path, labels: list[np.ndarray], classes: pd.DataFrame, palette: list[int] | None = None,
                 reference=None, axis: int = 2) -> Path:
    """Write the class indices of one unit in the encoding of the training masks: a 2D PNG as the stored class
    values (0/255 stays 0/255; with `palette` as a palette PNG) or in the class colours of colour-coded masks; the
    slices of a volume (.nii/.nii.gz `path`) stacked along `axis` with the affine and header of `reference`."""
    path = Path(path)
    colors = class_colors(classes)
    if is_volume(path):
        values = np.asarray(class_values(classes))
        write_volume_labels(path, [values[slice_labels] for slice_labels in labels], reference, axis)
    elif colors is not None:
        write_mask(path, colors.astype(np.uint8)[labels[0]])
    else:
        write_mask(path, np.asarray(class_values(classes))[labels[0]], palette=palette)
    return path


def write_prediction(labels: list[np.ndarray], classes: pd.DataFrame, out_dir: str, name: str,
                     rows: pd.DataFrame) -> Path:
    """Write a prediction unit of the manifest (see `write_labels`) to out_dir/<id>.png or <volume>.nii.gz, with
    the palette of its mask file when it has one."""
    first = rows.iloc[0]
    volume = is_volume_unit(rows)
    return write_labels(prediction_path(out_dir, name, rows), labels, classes, mask_palette(first["mask_path"]),
                        first["image_path"] if volume else None, int(first["slice_axis"]) if volume else 2)


def read_prediction(path, classes: pd.DataFrame) -> np.ndarray:
    """A written prediction (PNG or NIfTI) as class indices, from class values or, for colour-coded masks, from
    the class colours."""
    stored = integer_labels(path, read_volume(path)[0]) if is_volume(path) else read_mask(path)
    colors = class_colors(classes)
    if colors is None:
        return map_labels(stored, class_values(classes))
    rgb = stored if stored.ndim == 3 else np.repeat(stored[..., None], 3, axis=-1)  # grey colours read as (H, W)
    return colors_to_indices(rgb, colors, snap=False)[0]


def instance_prediction_path(out_dir, name: str, rows: pd.DataFrame) -> Path:
    """Where the object ids of a unit go: <volume>.nii[.gz] for a volume, <id>.tif when its mask is a TIFF, else
    <id>.png (16-bit when there are more than 255 objects; a 32-bit <id>.tif instead above 65535, see
    `write_instances`)."""
    if is_volume_unit(rows):
        return prediction_path(out_dir, name, rows)
    tiff = str(rows.iloc[0].get("mask_path", "")).lower().endswith((".tif", ".tiff"))  # no mask: new images
    return Path(out_dir, name + (".tif" if tiff else ".png"))


OBJECTS_FILE = "objects.parquet"  # the per-object table of the instance mode, beside the instance masks


def write_unit_objects(probabilities, rows: pd.DataFrame, target: str, min_size: int, out_dir: str,
                       name: str) -> tuple[Path, list[dict]]:
    """Instance mode: the objects of a unit's softmax maps written as its instance mask; its path, their rows."""
    ids = [instances_from_probabilities(probs, target, min_size) for probs in probabilities]
    path = write_instances(instance_prediction_path(out_dir, name, rows), ids, rows)
    return path, [row for case_id, slice_ids, probs in zip(rows["id"], ids, probabilities)
            for row in object_rows(case_id, slice_ids, probs)]


def write_instances(path, ids: list[np.ndarray], rows: pd.DataFrame) -> Path:
    """Write the object ids of a unit (one id map per slice) as an instance mask: 2D PNG/TIFF, or for a volume
    its slices stacked (ids of later slices offset to stay unique) with the input's affine and header. A 2D
    image of more than 65535 objects is written losslessly as a 32-bit TIFF (a PNG holds 16 bits: <id>.tif
    instead of <id>.png, logged), a volume of more than 65535 as a uint32 NIfTI (logged); the path written."""
    path = Path(path)
    if not is_volume(path):
        count = int(ids[0].max(initial=0))
        if count <= LABEL_LIMIT:
            write_mask(path, ids[0].astype(np.uint16))
            return path
        if path.suffix.lower() == ".png":
            path = path.with_suffix(".tif")
            log.info("%s: %d objects, more than a 16-bit PNG holds; written as a 32-bit TIFF", path, count)
        tifffile.imwrite(path, ids[0].astype(np.uint32), photometric="minisblack", compression="zlib")
        return path
    offset, unique = 0, []
    for slice_ids in ids:
        unique.append(np.where(slice_ids > 0, slice_ids + offset, 0))
        offset += int(slice_ids.max(initial=0))
    first = rows.iloc[0]
    write_volume_labels(path, unique, first["image_path"], int(first["slice_axis"]))
    if offset > LABEL_LIMIT:
        log.info("%s: %d objects, more than 16 bits hold; written as a 32-bit (uint32) NIfTI", path, offset)
    return path


def read_instances(path) -> np.ndarray:
    """A written instance mask (PNG, TIFF or NIfTI) as its id array; for a PNG path, the 32-bit TIFF written in
    its place when it had more than 65535 objects."""
    path = Path(path)
    if not path.exists() and path.suffix.lower() == ".png" and path.with_suffix(".tif").exists():
        path = path.with_suffix(".tif")
    return integer_labels(path, read_volume(path)[0], ID_LIMIT) if is_volume(path) else read_mask(path, ID_LIMIT)


def write_probabilities(probs, out_dir: str, case_id: str) -> Path:
    """Write the class probabilities (K, H, W; an array or a CPU tensor) as float16 to the compressed
    out_dir/<id>.npz (key 'probabilities')."""
    path = Path(out_dir, f"{case_id}.npz")
    np.savez_compressed(path, **{PROBABILITIES_KEY: np.asarray(probs).astype(np.float16)})
    return path


def read_probabilities(path) -> np.ndarray:
    """The (K, H, W) class probabilities written by `write_probabilities`, as float32 (the reader users of
    predict.save_probabilities are pointed to in the README)."""
    with np.load(path) as arrays:
        return arrays[PROBABILITIES_KEY].astype(np.float32)
