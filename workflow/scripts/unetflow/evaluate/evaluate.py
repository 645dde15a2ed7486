"""Evaluation: per unit and class metrics of predicted masks against the ground truth, and their summary.

The ground truth is each mask read as training reads it (colour tables, JPEG snapping and ignore labels applied),
on its file's own grid, and the prediction is the written mask mapped back to class indices; both in array order
(`unetflow.io.sources`). A unit is a 2D file, a page of a stack, or a NIfTI volume, which is scored in 3D with the
voxel spacing of its header (a one-slice volume in 2D).

With data.regions (`unetflow.io.regions`) the units are scored per region instead of per class: the mask of each
region in the ground truth and in the written prediction (their labels' regions), numbered 1..R in the regions'
order, with 0 for the background (the pixels in no region), as nnU-Net scores region models.

Empty masks: see `unetflow.evaluate.metrics` for the convention (a class absent from both ground truth and prediction
scores Dice = IoU = 1; absent from one only, 0). The flags gt_empty and pred_empty are stored with every row.

ROI: a source with a `roi_path` is evaluated on the pixels where its ROI mask is > 0 only (any channel for colour
masks); a missing column or a null path means the whole image. The flag `roi` says which rows were restricted.
Pixels with the ignore label are left out of every unit.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from unetflow.evaluate.metrics import case_metrics
from unetflow.evaluate.object_metrics import object_metrics
from unetflow.instances.targets import instance_target, object_ids
from unetflow.io.labels import IGNORE_INDEX, class_values
from unetflow.io.prediction_files import prediction_path, read_class_mask, read_instance_mask
from unetflow.io.regions import Regions
from unetflow.io.sources import read_source_mask, read_source_roi, source_labels, unit_array, unit_spacing, units

SUMMARY_STATS = ("mean", "median", "std")
INSTANCE_CLASS_NAMES = {0: "background", 1: "objects"}  # pixel classes scored in the instance mode


def evaluate_source(row: dict, pred_dir: str, classes: pd.DataFrame, cfg: dict,
                    regions: Regions | None = None) -> list[dict]:
    """Metric rows (one per unit and class, or region with `regions`) of one source (cfg: spacing, tolerance)."""
    if instance_target(classes):
        return evaluate_instance_source(row, pred_dir, cfg)
    truth = source_labels(row, classes)[0]
    predicted = read_class_mask(prediction_path(pred_dir, row["id"], row), classes, row)
    roi, rows = read_source_roi(row), []
    for name, unit in units(row):
        gt, pred = unit_array(truth, unit), unit_array(predicted, unit)
        unit_roi, spacing = None if roi is None else unit_array(roi, unit), unit_spacing(row, unit, cfg["spacing"])
        rows += (scored_rows(name, gt, pred, unit_roi, len(class_values(classes)), spacing, cfg["tolerance"])
                 if regions is None else region_rows(name, gt, pred, unit_roi, regions, spacing, cfg["tolerance"]))
    return rows


def region_rows(name: str, gt: np.ndarray, pred: np.ndarray, roi: np.ndarray | None, regions: Regions, spacing,
                tolerance: float) -> list[dict]:
    """`case_metrics` rows of one unit's class indices scored per region (class 1..R; 0: in no region), pixels
    with the ignore label and outside the ROI left out."""
    valid = gt != IGNORE_INDEX
    evaluated = valid if roi is None else roi & valid
    truth, predicted = regions.masks(np.where(valid, gt, 0)), regions.masks(pred)
    rows = []
    for number, (true, found) in enumerate(zip([~truth.any(0), *truth], [~predicted.any(0), *predicted])):
        row = case_metrics(found, true, 2, spacing=spacing, tolerance=tolerance,
                           roi=None if evaluated.all() else evaluated, scored=[1])[0]
        rows.append(dict(id=name, **row, roi=roi is not None) | {"class": number})
    return rows


def evaluate_instance_source(row: dict, pred_dir: str, cfg: dict) -> list[dict]:
    """Instance mode: per unit, pixel metrics of the objects' union (classes 0 background, 1 objects) and, on the
    objects row, the object metrics (`unetflow.evaluate.object_metrics`) of the predicted ids against the true ones,
    matched slice by slice (a volume's objects are those of its slices pooled)."""
    truth = object_ids(read_source_mask(row, ids=True))
    predicted = read_instance_mask(prediction_path(pred_dir, row["id"], row, instances=True), row)
    rows = []
    for name, unit in units(row):
        gt, pred = unit_array(truth, unit), unit_array(predicted, unit)
        pixel_rows = scored_rows(name, (gt > 0).astype(np.uint8), (pred > 0).astype(np.uint8), None, 2,
                                 unit_spacing(row, unit, cfg["spacing"]), cfg["tolerance"])
        pixel_rows[1].update(object_metrics(side_by_side(truth[unit]), side_by_side(predicted[unit])))
        rows += pixel_rows
    return rows


def side_by_side(slices: np.ndarray) -> np.ndarray:
    """The id maps of a unit's slices (Z, Y, X) side by side in one 2D map, ids offset to stay unique per slice, so
    objects are matched within their slice."""
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


def evaluate_sources(sources: pd.DataFrame, pred_dir: str, classes: pd.DataFrame, cfg: dict,
                     threads: int = 1, regions: Regions | None = None) -> pd.DataFrame:
    """Per unit (a 2D file, a stack page, a volume) and class (or region) metrics of the predictions of the `sources`
    (rows of the ingest manifest), with the class (region) names."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        nested = pool.map(lambda row: evaluate_source(row, pred_dir, classes, cfg, regions),
                          sources.to_dict("records"))
    table = pd.DataFrame([row for rows in nested for row in rows])
    table.insert(2, "class_name", table["class"].map(scored_names(classes, regions)))
    return table


def scored_names(classes: pd.DataFrame, regions: Regions | None) -> dict:
    """The name of each scored class number: the classes', the instance mode's, or the background's and the
    regions'."""
    if instance_target(classes):
        return INSTANCE_CLASS_NAMES
    names = classes.set_index("index")["name"].to_dict()
    return names if regions is None else dict(enumerate([names[0], *regions.names]))


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and std over cases of every metric, per class (columns like dice_mean), empty_false_positives: the
    units whose ground truth lacks the class but whose prediction has it (each scores Dice 0, however few pixels it
    predicted), held_units: those whose ground truth has it, and missed_units: of those, the ones where no predicted
    pixel of it is a true one (none predicted, or only elsewhere)."""
    metrics = [c for c in per_case.columns if per_case[c].dtype.kind == "f"]
    by_class = per_case.groupby(["class", "class_name"])
    summary = by_class[metrics].agg(list(SUMMARY_STATS))
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "n_cases", by_class.size())
    keys = [per_case["class"], per_case["class_name"]]
    summary.insert(1, "empty_false_positives", (per_case["gt_empty"] & ~per_case["pred_empty"]).groupby(keys).sum())
    summary.insert(2, "held_units", (~per_case["gt_empty"]).groupby(keys).sum())
    summary.insert(3, "missed_units", (~per_case["gt_empty"] & (per_case["tp"] == 0)).groupby(keys).sum())
    return summary.reset_index()


def unpredicted_notes(summary: pd.DataFrame) -> list[str]:
    """One line per foreground class (or region) of a `summarize` table that the ground truth of some units holds and
    no unit's prediction finds (not one true pixel): a class the model has not learned, whose Dice is 0 there."""
    never = summary[(summary["class"] > 0) & (summary["held_units"] > 0) &
                    (summary["missed_units"] == summary["held_units"])]
    return [f"class '{row.class_name}' is found in none of the {row.held_units} test unit(s) whose ground truth holds "
            f"it (not one predicted pixel of it on a true one: Dice 0 in each, while precision counts 1 where nothing "
            f"is predicted): the model has not learned it; train longer (train.budget_minutes) or on more cases that "
            f"hold it" for row in never.itertuples()]
