"""Regions of interest at prediction (a retina's field of view, an ultrasound sector): a model trained with
`data.rois` is validated and scored inside them only, so what it predicts outside was never checked; its masks are
background outside a source's region of interest. `predict` takes each test case's from the manifest; `infer` pairs
`infer.rois` (`--rois`) with the images by stem, as `data.rois` is paired, and says when a model trained with them
gets none."""

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.data.rois import attach_rois
from unetflow.infer.package import Package
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.sources import read_source_roi


def within_roi(probs: np.ndarray, roi: np.ndarray | None, regions: bool) -> np.ndarray:
    """Probabilities (K or R, Z, Y, X) with every pixel outside a region of interest (Z, Y, X; None: none) made
    certain background: class 0 (of a region model: no region)."""
    if roi is None:
        return probs
    probs = np.where(roi, probs, 0).astype(probs.dtype, copy=False)
    if not regions:
        probs[0][~roi] = 1
    return probs


def with_rois(table: pd.DataFrame, spec: str | None, key: str = "infer.rois") -> tuple[pd.DataFrame, list[str]]:
    """The checked images with the region-of-interest file `spec` (the setting `key`) pairs with each in column
    roi_path (slides take none), and the problems: an image without one, or one not of the image's size."""
    if not spec or table.empty:
        return table, []
    images = table[table["kind"] != "slide"]
    pairs = [dict(image=Path(path), stem=case_stem(path)) for path in images["image_path"]]
    problems = attach_rois(pairs, spec, key)
    table = table.assign(roi_path=table["image_path"].map({str(pair["image"]): str(pair["roi"]) for pair in pairs
                                                           if "roi" in pair}))
    return table, problems + [problem for row in table.dropna(subset=["roi_path"]).to_dict("records")
                              if (problem := roi_size_problem(row))]


def roi_size_problem(row: dict) -> str | None:
    """The problem of an image's region of interest that cannot be read or is not of the image's size; else None."""
    try:
        roi = read_source_roi(row)
    except ImageReadError as error:
        return str(error)
    size = (row["slices"], row["height"], row["width"])
    if roi.shape != size:
        return (f"{row['roi_path']}: region of interest of {'x'.join(map(str, roi.shape[1:]))} px, but its image "
                f"{row['image_path']} is {row['height']}x{row['width']}; give each image a region of interest of "
                f"its size")
    return None


def roi_note(package: Package, spec: str | None) -> str:
    """For a package trained with regions of interest, segmenting images without (`spec`: infer.rois): what its masks
    hold outside them; else ''."""
    if spec or not package.training_data.get("rois"):
        return ""
    return (f"{package.path} was trained with regions of interest (data.rois), and its validation and test scores "
            f"counted only the pixels inside them, but no infer.rois (--rois) is given: its masks may label pixels "
            f"outside a field of view (burned-in text, black margins) that no score checked; give the images' regions "
            f"of interest, paired by name as data.rois is")
