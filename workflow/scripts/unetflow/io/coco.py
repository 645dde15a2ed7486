"""COCO object annotations: one JSON file for a folder of images, each object a polygon or a run-length mask with a
category, as CVAT, Labelbox and Roboflow export them and LIVECell is published. Drawn by pycocotools, COCO's own
code, as masks: object ids in annotation order (the instance mode) or category ids."""

import json
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from unetflow.io.formats import ImageReadError

SECTIONS = ("images", "annotations", "categories")


def read_coco(path) -> dict:
    """A COCO annotation file: {images, annotations, categories}; ImageReadError naming the file when it is not one.
    Parsed once while the file is unchanged (ingest reads its categories and its images)."""
    try:
        return parsed_coco(str(path), Path(path).stat().st_mtime_ns)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot be read as a COCO annotation file: {error}") from error


@lru_cache(maxsize=1)
def parsed_coco(path: str, modified: int) -> dict:
    """The COCO file at `path` as last `modified` (see `read_coco`)."""
    try:
        coco = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot be read as a COCO annotation file (JSON): {error}") from error
    missing = [key for key in SECTIONS if not isinstance(coco, dict) or key not in coco]
    if missing:
        raise ImageReadError(f"{path}: not a COCO annotation file: no {', '.join(missing)} (a COCO file has "
                             f"images, annotations and categories)")
    return coco


def polygons(segmentation) -> list[list[float]]:
    """The polygons of a polygon segmentation that enclose an area: at least three points (six numbers); fewer, a
    slip of the annotation tool, draw nothing."""
    return [polygon for polygon in segmentation if len(polygon) >= 6]


def is_empty(segmentation) -> bool:
    """Whether a segmentation is empty (`[]`: a box-only annotation) or no segmentation at all."""
    return not segmentation or not isinstance(segmentation, (list, dict)) or \
        isinstance(segmentation, dict) and "counts" not in segmentation


def is_outline(segmentation) -> bool:
    """Whether a segmentation has an area to draw: a run-length mask, or a polygon of three points or more; not
    `[]` (a box-only annotation) or only polygons of fewer points."""
    return not isinstance(segmentation, list) or bool(polygons(segmentation))


def annotation_pixels(segmentation, height: int, width: int) -> np.ndarray:
    """Where one annotation's segmentation (polygons, or a run-length mask, plain or compressed) lies (H, W) bool."""
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons(segmentation), height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():  # its decoder's NumPy 2 deprecation notice: it still decodes, as tested
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def drawn_mask(image: dict, annotations: list[dict], instances: bool) -> np.ndarray:
    """The mask (H, W) of one COCO image entry: each annotation drawn in order, a later one over an earlier, with
    its number (1, 2, ...; `instances`) or its category id; uint16 (uint32 past 65535 objects). Annotations
    without an area (`is_outline`) are left out."""
    annotations = [annotation for annotation in annotations if is_outline(annotation["segmentation"])]
    dtype = np.uint32 if len(annotations) > 65535 else np.uint16
    mask = np.zeros((int(image["height"]), int(image["width"])), dtype)
    for number, annotation in enumerate(annotations, start=1):
        pixels = annotation_pixels(annotation["segmentation"], *mask.shape)
        mask[pixels] = number if instances else int(annotation["category_id"])
    return mask
