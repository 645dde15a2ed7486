"""Summaries of predicted masks without ground truth: per unit (a 2D image, a page of a stack, a volume) and class (of a
region model: region, as evaluate scores them, 1..R in order and 0 for the pixels in no region), the pixel count, the
size in physical units where the spacing is known (NIfTI headers), the number of connected components, and the mean
maximum softmax inside the predicted pixels (a confidence to sort by, to find the cases to check by hand; of a region
model, the mean of each pixel's least certain region decision, see `unetflow.infer.predictor.pixel_confidence`)."""

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from unetflow.io.labels import trained_classes
from unetflow.io.nifti import volume_unit, voxel_volume
from unetflow.io.regions import Regions
from unetflow.io.sources import unit_spacing

SUMMARY_COLUMNS = ("id", "image_path", "mask_path", "kind", "class", "class_name", "pixels", "physical_size",
                   "physical_unit", "components", "confidence")  # and objects, small_objects, of an instance package
SMALL_SHARE = 0.25  # the share of the objects found under predict.min_object_size that `small_objects_note` names
SMALL_COUNT = 10  # ... and the fewest it names


def physical_pixel(row, unit: slice) -> tuple[float, str | None]:
    """The size of one pixel (voxel) of a unit and its unit: from the header of a NIfTI volume (e.g. mm^3, the
    affine's `voxel_volume`, or mm^2 for a one-slice volume); NaN and None for other files, whose pixel spacing is
    unknown."""
    spacing = unit_spacing(row, unit)
    if spacing is None:
        return float("nan"), None
    size = voxel_volume(row["image_path"]) if len(spacing) == 3 else math.prod(spacing)
    return float(size), f"{volume_unit(row['image_path'])}^{len(spacing)}"


def counted_masks(labels: np.ndarray, classes: pd.DataFrame, regions: Regions | None):
    """(index, name, mask) of each class a summary counts in class indices `labels`: the trained classes, or of a
    region model its regions (1..R) after the pixels in no region (0, the background's name)."""
    trained = trained_classes(classes)
    if regions is None:
        return [(int(entry["index"]), entry["name"], labels == entry["index"]) for entry in trained.to_dict("records")]
    masks = regions.masks(labels)
    return [(0, trained["name"].iloc[0], ~masks.any(0)),
            *[(number, name, mask) for number, (name, mask) in enumerate(zip(regions.names, masks), start=1)]]


def unit_summary(name: str, row, unit: slice, mask_path, labels: np.ndarray, confidence: np.ndarray,
                 classes: pd.DataFrame, regions: Regions | None = None) -> list[dict]:
    """One row per trained class (or region of a region model) of a unit of a source: `labels` and `confidence` (the
    maximum softmax, or a region model's confidence) are its parts of the source's arrays (2D or 3D, see
    `unetflow.io.sources.unit_array`)."""
    size, physical_unit = physical_pixel(row, unit)
    rows = []
    for index, class_name, chosen in counted_masks(labels, classes, regions):
        pixels = int(chosen.sum())
        rows.append(dict(id=name, image_path=row["image_path"], mask_path=str(mask_path), kind=row["kind"],
                         **{"class": index}, class_name=class_name, pixels=pixels,
                         physical_size=pixels * size, physical_unit=physical_unit,
                         components=int(ndimage.label(chosen)[1]) if pixels else 0,
                         confidence=float(confidence[chosen].mean()) if pixels else float("nan")))
    return rows


def small_objects_note(summary: pd.DataFrame, min_size: int | None = None, table: str = "summary.parquet") -> str:
    """For an instance package's summary whose units lost over SMALL_SHARE of the objects found (at least
    SMALL_COUNT) as smaller than predict.min_object_size: how many, the units that lost most, and what it may mean
    (objects shown smaller than in training); else ''. `min_size`: the package's predict.min_object_size, if known;
    `table`: where the counts per image are written, if anywhere."""
    if "small_objects" not in summary or summary.empty:
        return ""
    per_unit = summary.groupby("id")[["objects", "small_objects"]].first()
    small, found = int(per_unit["small_objects"].sum()), int(per_unit.to_numpy().sum())
    if small < SMALL_COUNT or small <= SMALL_SHARE * found:
        return ""
    most = per_unit["small_objects"].sort_values(ascending=False, kind="stable").head(3)
    most = most[most > 0]
    size = "" if min_size is None else f" ({min_size} px)"
    return (f"{small} of the {found} objects found ({100 * small / found:.0f} %) were under the package's "
            f"predict.min_object_size{size} and dropped{f' (column small_objects of {table})' if table else ''}, "
            f"most in "
            f"{', '.join(f'{name} ({count})' for name, count in most.items())}: if these images show their objects "
            f"smaller than the training images did (another magnification or pixel size), resample them to the "
            f"training images' scale; if such small objects are real, set predict.min_object_size lower and rerun "
            f"the package rule (--min-object-size of the command line)")


def check_first(summary: pd.DataFrame, count: int = 10) -> list[str]:
    """The `count` images of a summary table to check first, one line each: those without predicted foreground (of an
    instance package: without objects, which may have been too small to keep), then those of the lowest mean
    foreground confidence."""
    confidence = summary[summary["class"] > 0].groupby("id")["confidence"].mean()
    small = summary.groupby("id")["small_objects"].first() if "small_objects" in summary else {}
    return [f"{name}  {empty_note(summary, small.get(name, 0)) if np.isnan(value) else f'{value:.4f}'}"
            for name, value in confidence.sort_values(na_position="first").head(count).items()]


def empty_note(summary: pd.DataFrame, small: int) -> str:
    """What an image without predicted foreground is said to be: of an instance package, how many objects were found
    under predict.min_object_size where the summary counts them."""
    if "objects" not in summary:
        return "no foreground predicted"
    if "small_objects" not in summary:  # a summary of an earlier unetflow
        return "no object kept (none found, or all under predict.min_object_size)"
    return f"no object kept ({small} found, all under predict.min_object_size)" if small else \
        "no object kept (none found)"
