"""Evaluation: per case and class metrics of predicted masks against the ground truth, and their summary.

The ground truth is the class-index map preprocessing made of each mask (colour tables, JPEG snapping and
ignore labels applied; read again from the mask file for a volume that preprocessing resampled, so every case is
scored on its file's own grid); the prediction is the written mask mapped back to class indices. A NIfTI volume is
one case: its slices are stacked and scored in 3D with the voxel spacing of its header.

Empty masks: see `unetflow.evaluate.metrics` for the convention (a class absent from both ground truth and prediction
scores Dice = IoU = 1; absent from one only, 0). The flags gt_empty and pred_empty are stored with every row.

ROI: when the manifest has a `roi_path` column, a case with a path there is evaluated on the pixels where its ROI
mask is > 0 only (any channel for colour masks); a missing column or a null path means the whole image. The flag
`roi` says which rows were restricted. Pixels with the ignore label are left out of every case.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from unetflow.evaluate.metrics import case_metrics
from unetflow.evaluate.object_metrics import object_metrics
from unetflow.instances.targets import instance_target
from unetflow.io.formats import is_volume
from unetflow.io.images import is_lossy_mask, read_mask
from unetflow.io.labels import IGNORE_INDEX, class_values
from unetflow.io.nifti import read_volume, volume_spacing
from unetflow.io.prediction_files import instance_prediction_path, prediction_path, read_instances, read_prediction
from unetflow.io.sources import case_instance_ids, case_labels
from unetflow.io.store import load_case, load_instances, off_file_grid
from unetflow.io.volumes import is_volume_unit, prediction_units, stack_slices

SUMMARY_STATS = ("mean", "median", "std")
INSTANCE_CLASS_NAMES = {0: "background", 1: "objects"}  # pixel classes scored in the instance mode


def read_roi(path) -> np.ndarray:
    """Boolean region of interest: the pixels (voxels for NIfTI) of a mask file that are > 0 (in any channel); in a
    lossy file (JPEG), those above half its largest value."""
    if is_volume(path):
        return read_volume(path)[0] > 0
    mask = read_mask(path)
    mask = mask > (mask.max() / 2 if is_lossy_mask(path) else 0)
    return mask.any(axis=-1) if mask.ndim == 3 else mask


def case_roi(case: pd.Series) -> np.ndarray | None:
    """The case's ROI from its `roi_path`, or None when the manifest has no such column or the path is null."""
    path = case.get("roi_path")
    return None if path is None or pd.isna(path) else read_roi(path)


def resampled(rows: pd.DataFrame, arrays: pd.DataFrame) -> bool:
    """Whether preprocessing stored a unit's cases on another grid than its files' (resampled or scaled)."""
    return bool(off_file_grid(arrays.loc[rows["id"]]).any())


def unit_ground_truth(rows: pd.DataFrame, arrays: pd.DataFrame, classes: pd.DataFrame) -> np.ndarray:
    """Class indices of a case, or of a volume's slices stacked back into the volume, on the grid of its file: as
    preprocessing stored them, or read again from the mask file when the volume was resampled."""
    if resampled(rows, arrays):
        labels = case_labels(rows, classes)
    else:
        labels = [load_case(arrays.loc[case_id, "array_path"])[1] for case_id in rows["id"]]
    if is_volume_unit(rows):
        return stack_slices(labels, int(rows.iloc[0]["slice_axis"]))
    return labels[0]


def unit_spacing(rows: pd.DataFrame, cfg: dict):
    """Pixel spacing: a volume's voxel size from its NIfTI header (1 for axes a 2D NIfTI file lacks), else
    evaluate.spacing (None = 1 per pixel)."""
    if is_volume_unit(rows):
        return volume_spacing(rows.iloc[0]["image_path"])
    return cfg["spacing"]


def scored_axes(shape: tuple[int, ...]) -> list[int]:
    """The axes a volume is scored along: those longer than 1 voxel, at least two (a one-slice volume is scored
    in 2D, where its surfaces are its outlines, not every voxel of the slice)."""
    longer = [axis for axis, length in enumerate(shape) if length > 1]
    return sorted(longer + [axis for axis in range(len(shape)) if axis not in longer][:max(0, 2 - len(longer))])


def evaluate_unit(name: str, rows: pd.DataFrame, pred_dir: str, classes: pd.DataFrame, arrays: pd.DataFrame,
                  cfg: dict) -> list[dict]:
    """Metric rows (one per class) of one case or volume (cfg: spacing, tolerance; `arrays`: the preprocess
    manifest indexed by id)."""
    if instance_target(classes):
        return evaluate_instance_unit(name, rows, pred_dir, arrays, cfg)
    gt = unit_ground_truth(rows, arrays, classes)
    pred = read_prediction(prediction_path(pred_dir, name, rows), classes)
    roi = case_roi(rows.iloc[0])
    spacing = unit_spacing(rows, cfg)
    if is_volume_unit(rows):
        axes = scored_axes(gt.shape)
        gt, pred, roi = (None if a is None else a.reshape([a.shape[i] for i in axes]) for a in (gt, pred, roi))
        spacing = [spacing[i] for i in axes]
    return scored_rows(name, gt, pred, roi, len(class_values(classes)), spacing, cfg["tolerance"])


def evaluate_instance_unit(name: str, rows: pd.DataFrame, pred_dir: str, arrays: pd.DataFrame,
                           cfg: dict) -> list[dict]:
    """Instance mode: pixel metrics of the objects' union (classes 0 background, 1 objects) and, on the objects
    row, the object metrics (`unetflow.evaluate.object_metrics`) of the predicted ids against the true ones; a volume's
    objects are those of its slices pooled (pixel metrics of a volume in voxel units, slices stacked)."""
    gt_slices = case_instance_ids(rows) if resampled(rows, arrays) else \
        [load_instances(arrays.loc[case_id, "array_path"]) for case_id in rows["id"]]
    pred = read_instances(instance_prediction_path(pred_dir, name, rows))
    pred_slices = [pred] if not is_volume_unit(rows) else list(np.moveaxis(pred, int(rows.iloc[0]["slice_axis"]), 0))
    gt, predicted = (np.stack(slices) if len(slices) > 1 else slices[0] for slices in (gt_slices, pred_slices))
    spacing = None if is_volume_unit(rows) else cfg["spacing"]  # a volume's slices, stacked along axis 0
    pixel_rows = scored_rows(name, (gt > 0).astype(np.uint8), (predicted > 0).astype(np.uint8), None, 2, spacing,
                             cfg["tolerance"])
    if len(gt_slices) == 1:
        pixel_rows[1].update(object_metrics(gt_slices[0], pred_slices[0]))
    else:
        pixel_rows[1].update(object_metrics(offset_ids(gt_slices), offset_ids(pred_slices)))
    return pixel_rows


def offset_ids(slices: list[np.ndarray]) -> np.ndarray:
    """Id maps of several slices side by side in one 2D map, ids offset to stay unique (objects never span slices
    here, so a volume is scored as the pooled objects of its slices)."""
    offset, shifted = 0, []
    for ids in slices:
        shifted.append(np.where(ids > 0, ids.astype(np.int64) + offset, 0))
        offset += int(ids.max(initial=0))
    return np.concatenate(shifted, axis=1)


def scored_rows(name: str, gt: np.ndarray, pred: np.ndarray, roi: np.ndarray | None, num_classes: int, spacing,
                tolerance: float) -> list[dict]:
    """`case_metrics` rows of one unit, pixels with the ignore label and outside the ROI left out."""
    valid = gt != IGNORE_INDEX
    evaluated = valid if roi is None else roi & valid
    metrics = case_metrics(pred, np.where(valid, gt, 0), num_classes, spacing=spacing, tolerance=tolerance,
                           roi=None if evaluated.all() else evaluated)
    return [dict(id=name, **row, roi=roi is not None) for row in metrics]


def evaluate_cases(cases: pd.DataFrame, pred_dir: str, classes: pd.DataFrame, arrays: pd.DataFrame, cfg: dict,
                   threads: int = 1) -> pd.DataFrame:
    """Per case (per volume for NIfTI) and class metrics, with the class names."""
    stored = arrays.set_index("id")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        nested = pool.map(lambda unit: evaluate_unit(*unit, pred_dir, classes, stored, cfg),
                          prediction_units(cases))
    table = pd.DataFrame([row for rows in nested for row in rows])
    names = INSTANCE_CLASS_NAMES if instance_target(classes) else classes.set_index("index")["name"]
    table.insert(2, "class_name", table["class"].map(names))
    return table


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and std over cases of every metric, per class (columns like dice_mean)."""
    metrics = [c for c in per_case.columns if per_case[c].dtype.kind == "f"]
    summary = per_case.groupby(["class", "class_name"])[metrics].agg(list(SUMMARY_STATS))
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "n_cases", per_case.groupby(["class", "class_name"]).size())
    return summary.reset_index()
