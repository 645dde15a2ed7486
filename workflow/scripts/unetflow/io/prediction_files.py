"""Prediction files: where the predicted mask of a source goes, how it is written in the encoding of the training
masks and in the source's own file layout, and how it (and the saved probabilities) is read back in array order.

One file per source: `<name>.png` for a 2D file, `<name>.tif` (one page per page) for a TIFF stack, `<name>.nii.gz`
(the input's suffix) for a NIfTI volume, written with the input's affine and header. Instance masks hold object ids:
16-bit PNG, or a 32-bit TIFF `<name>.tif` above 65535 objects (logged); `<name>.tif` too when the training masks
were TIFFs.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.io.calibration import calibration
from unetflow.io.formats import is_volume, volume_suffix
from unetflow.io.images import read_mask, read_mask_stack, write_mask, write_mask_stack
from unetflow.io.labels import (
    ID_LIMIT,
    LABEL_LIMIT,
    class_colors,
    class_values,
    colors_to_indices,
    integer_labels,
    map_labels,
)
from unetflow.io.nifti import read_volume, write_label_volume
from unetflow.io.sources import slice_axis, to_array_order, to_file_order

log = logging.getLogger("unetflow.io.prediction_files")
PROBABILITIES_KEY = "probabilities"


def prediction_path(out_dir, name: str, row, instances: bool = False) -> Path:
    """Where the prediction of a source (`row`: its manifest row) goes, named `name` (may hold sub-folders)."""
    if row["kind"] == "volume":
        suffix = volume_suffix(row["image_path"])
    elif row["kind"] == "stack":
        suffix = ".tif"
    else:
        tiff = instances and str(row.get("mask_path") or "").lower().endswith((".tif", ".tiff"))
        suffix = ".tif" if tiff else ".png"
    return Path(out_dir, name + suffix)


def existing_prediction(path) -> Path:
    """The file written for `path`: itself, or the 32-bit TIFF written instead of a PNG of too many objects."""
    path = Path(path)
    if not path.exists() and path.suffix.lower() == ".png" and path.with_suffix(".tif").exists():
        return path.with_suffix(".tif")
    return path


def write_source_labels(path, values: np.ndarray, row, palette: list[int] | None = None,
                        limit: int = LABEL_LIMIT, smallest=np.uint8) -> Path:
    """Write a source's mask values (Z, Y, X), or colours (Z, Y, X, 3), in its own layout: a 2D file's only slice,
    a stack's pages (each at least of type `smallest`), a volume in its stored axis order with the affine and header
    of its image; a TIFF with its TIFF image's pixel size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if row["kind"] == "volume":
        write_label_volume(path, to_file_order(values, slice_axis(row)), row["image_path"])
    elif row["kind"] == "stack":
        write_mask_stack(path, values, limit, smallest, calibration(row.get("image_path")))
    else:
        write_mask(path, values[0], palette=palette, limit=limit, smallest=smallest,
                   pixel_size=calibration(row.get("image_path")))
    return path


def write_class_mask(path, labels: np.ndarray, classes: pd.DataFrame, row, palette: list[int] | None = None) -> Path:
    """Write a source's class indices (Z, Y, X) in the encoding of the training masks: the stored class values (0/255
    stays 0/255; with `palette` as a palette PNG) or the class colours of colour-coded masks."""
    colors = class_colors(classes)
    values = colors.astype(np.uint8)[labels] if colors is not None else np.asarray(class_values(classes))[labels]
    return write_source_labels(path, values, row, palette)


def write_instance_mask(path, ids: np.ndarray, row) -> Path:
    """Write a source's object ids (Z, Y, X) as an instance mask, 16-bit however few the objects; a 2D PNG of more
    than 65535 objects as a 32-bit TIFF instead (logged). The path written."""
    path, count = Path(path), int(ids.max(initial=0))
    if count > LABEL_LIMIT and path.suffix.lower() == ".png":
        path = path.with_suffix(".tif")
        log.info("%s: %d objects, more than a 16-bit PNG holds; written as a 32-bit TIFF", path, count)
    elif count > LABEL_LIMIT:
        log.info("%s: %d objects, more than 16 bits hold; written with 32-bit ids", path, count)
    return write_source_labels(path, ids, row, limit=ID_LIMIT, smallest=np.uint16)


def read_source_prediction(path, row, limit: int = LABEL_LIMIT) -> np.ndarray:
    """A written prediction of a source as stored values (Z, Y, X) (or colours (Z, Y, X, 3)), in array order."""
    path = existing_prediction(path)
    if is_volume(path):
        return to_array_order(integer_labels(path, read_volume(path)[0], limit), slice_axis(row))
    return read_mask_stack(path, limit) if row["kind"] == "stack" else read_mask(path, limit)[None]


def read_class_mask(path, classes: pd.DataFrame, row) -> np.ndarray:
    """A written prediction as class indices (Z, Y, X), from class values or, for colour-coded masks, the colours."""
    stored = read_source_prediction(path, row)
    colors = class_colors(classes)
    if colors is None:
        return map_labels(stored, class_values(classes))
    rgb = stored if stored.ndim == 4 else np.repeat(stored[..., None], 3, axis=-1)  # grey colours read as (Z, Y, X)
    return colors_to_indices(rgb, colors, snap=False)[0]


def read_instance_mask(path, row) -> np.ndarray:
    """A written instance mask as object ids (Z, Y, X)."""
    return read_source_prediction(path, row, ID_LIMIT)


def write_probabilities(probs, out_dir, name: str) -> Path:
    """Write class probabilities (K, ...; an array or a CPU tensor) as float16 to the compressed out_dir/<name>.npz
    (key 'probabilities')."""
    path = Path(out_dir, f"{name}.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{PROBABILITIES_KEY: np.asarray(probs).astype(np.float16)})
    return path


def read_probabilities(path) -> np.ndarray:
    """The class probabilities written by `write_probabilities`, as float32."""
    with np.load(path) as arrays:
        return arrays[PROBABILITIES_KEY].astype(np.float32)
