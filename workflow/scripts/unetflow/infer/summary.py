"""Summaries of predicted masks without ground truth: per image (or volume) and class, the pixel count, the size
in physical units where the spacing is known (NIfTI headers), the number of connected components, and the mean
maximum softmax inside the predicted pixels (a confidence to sort by, to find the cases to check by hand)."""

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from unetflow.io.labels import trained_classes
from unetflow.io.nifti import volume_spacing, volume_unit


def physical_pixel(source: dict) -> tuple[float, str | None]:
    """The size of one pixel (voxel) of a source and its unit: from the header of a NIfTI volume (e.g. mm^3, or
    mm^2 for a one-slice volume); NaN and None for other files, whose pixel spacing is unknown."""
    if source["kind"] != "volume":
        return float("nan"), None
    spacing = volume_spacing(source["image_path"])
    unit = volume_unit(source["image_path"])
    if source["slices"] == 1:
        in_plane = [s for axis, s in enumerate(spacing) if axis != int(source["slice_axis"])]
        return float(np.prod(in_plane)), f"{unit}^2"
    return float(np.prod(spacing)), f"{unit}^3"


def unit_summary(name: str, source: dict, mask_path, labels: list[np.ndarray], probabilities: list[torch.Tensor],
                 classes: pd.DataFrame) -> list[dict]:
    """One row per trained class of a prediction unit (a 2D image or page, or a volume's slices)."""
    stacked = np.stack(labels)
    confidence = np.stack([p.max(0).values.numpy() for p in probabilities])
    size, unit = physical_pixel(source)
    rows = []
    for row in trained_classes(classes).to_dict("records"):
        chosen = stacked == row["index"]
        pixels = int(chosen.sum())
        components = ndimage.label(chosen if source["kind"] == "volume" else chosen[0])[1] if pixels else 0
        rows.append(dict(id=name, image_path=source["image_path"], mask_path=str(mask_path), kind=source["kind"],
                         **{"class": int(row["index"])}, class_name=row["name"], pixels=pixels,
                         physical_size=pixels * size, physical_unit=unit, components=int(components),
                         confidence=float(confidence[chosen].mean()) if pixels else float("nan")))
    return rows
