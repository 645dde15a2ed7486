"""Instance objects of whole-slide images found region by region without seams, and the polygons of a slide's labels.

An instance package post-processes each region's whole read box (its core plus the margin) into objects, as
`Predictor` does an image (`unetflow.instances.objects`), and keeps those it owns: the objects whose bounding box
starts (top-left) in its core. Each is written whole (also where it reaches into the next cores) with an id of its
own, so an object cut by a core border gets one id, never two halves. Ownership is decided by each region alone, so the
regions of a slide may be split among jobs; ids follow the regions in raster order (parts merged by
`unetflow.infer.slide_parts`: ids after the earlier parts'). For an object to be whole and as one prediction of the
whole level finds it, the read box reaches past the core by the tile margin plus `infer.slide_object_size` (pixels
of the predicted level, rounded up to the tile step): the largest object. An owned object reaching further than
that past its core is logged as a warning naming the key.

Outputs beside the label pyramid <name>.ome.tif: the object table <name>.objects.parquet (SLIDE_OBJECT_COLUMNS:
id, class, area in pixels and µm², centroid in pixels of the slide's base level, bounding box in pixels of the label
pyramid) and with `infer.slide_geojson` the polygons <name>.geojson for QuPath (`unetflow.io.polygons`): a detection
per object, or of a semantic package an annotation per class.
"""

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.measure import regionprops
from skimage.segmentation import relabel_sequential

from unetflow.instances.objects import OBJECT_PROBABILITY, instances_from_probabilities
from unetflow.io.labels import trained_classes
from unetflow.io.polygons import class_features, object_features, write_geojson

log = logging.getLogger("unetflow.infer.slide_objects")
OBJECT_SIZE = 64  # default of infer.slide_object_size: the largest object, pixels of the predicted level
OBJECT_SIZE_KEY = "infer.slide_object_size (--slide-object-size on the command line)"
OBJECT_CLASS = "object"  # the class name of instance objects in the table and the GeoJSON
OBJECT_DTYPE = np.uint32  # the label pyramid of objects: ids up to 4.29e9
SLIDE_OBJECT_COLUMNS = ("id", "class", "area_pixels", "area_um2", "centroid_x", "centroid_y", "bbox_top",
                        "bbox_left", "bbox_bottom", "bbox_right")
FOUND_COLUMNS = ("id", "area_pixels", "centroid_y", "centroid_x", "bbox_top", "bbox_left", "bbox_bottom", "bbox_right")


def object_margin(step: int, object_size: int) -> int:
    """What the read box of an instance package adds to the tile margin: `object_size` rounded up to the tile step."""
    return step * math.ceil(object_size / step)


def owned_objects(ids: np.ndarray, core: tuple, read: tuple, reach: int) -> tuple[np.ndarray, list]:
    """The objects of a read box's id map (H, W) owned by its core (bounding box top-left in the core), renumbered
    1..n in the order of their ids, 0 elsewhere; and their `regionprops` (coordinates in the read box). An owned object
    reaching more than `reach` pixels past the core is logged (the read box may have cut it)."""
    boxes = ndimage.find_objects(ids)
    owned = np.zeros(len(boxes) + 1, bool)
    for label, box in enumerate(boxes, start=1):
        if box is not None:
            top, left = box[0].start + read[0], box[1].start + read[1]
            owned[label] = core[0] <= top < core[2] and core[1] <= left < core[3]
    kept = relabel_sequential(np.where(owned[ids], ids, 0))[0].astype(OBJECT_DTYPE)
    props = regionprops(kept)
    for region in props:
        bottom, right = region.bbox[2] + read[0], region.bbox[3] + read[1]
        if bottom > core[2] + reach or right > core[3] + reach:
            log.warning("an object ending at pixel (%d, %d) of the predicted level reaches %d pixels past its region: "
                        "it may be cut; raise %s above its size", bottom, right,
                        max(bottom - core[2], right - core[3]), OBJECT_SIZE_KEY)
    return kept, props


class SlideObjects:
    """The objects of one slide, collected region by region into an id map `labels` (an array or a memory map of
    OBJECT_DTYPE, zeros: the rows of the slide's label grid from `top`) and per region an array of their
    FOUND_COLUMNS (coordinates in pixels of the label grid)."""

    def __init__(self, labels: np.ndarray, target: str, min_size: int, reach: int, top: int = 0,
                 object_probability: float = OBJECT_PROBABILITY):
        self.labels, self.target, self.min_size, self.reach, self.top = labels, target, min_size, reach, top
        self.object_probability = object_probability
        self.found: list[np.ndarray] = []
        self.count = 0

    def add(self, core: tuple, read: tuple, probs: np.ndarray) -> int:
        """The objects a region owns, from its read box's softmax (K, H, W), written whole into `labels` with ids
        following those found so far; how many."""
        ids = instances_from_probabilities(probs, self.target, self.min_size, self.object_probability)
        kept, props = owned_objects(ids, core, read, self.reach)
        start = max(read[0], self.top)  # owned objects start in the core: at or below the top of `labels`
        kept = kept[start - read[0]:]
        box = self.labels[start - self.top:read[2] - self.top, read[1]:read[3]]
        np.copyto(box, kept + OBJECT_DTYPE(self.count), where=kept > 0)
        shift = np.array([self.count, 0, *read[:2], *read[:2], *read[:2]], np.float64)
        self.found.append(np.array([(region.label, region.area, *region.centroid, *region.bbox) for region in props],
                                   np.float64).reshape(-1, len(FOUND_COLUMNS)) + shift)
        self.count += len(props)
        return len(props)

    def found_rows(self) -> np.ndarray:
        """Every object found so far, one row of FOUND_COLUMNS each."""
        return np.concatenate(self.found) if self.found else no_objects()


def no_objects() -> np.ndarray:
    """The rows (FOUND_COLUMNS) of no objects."""
    return np.zeros((0, len(FOUND_COLUMNS)))


def object_table(found: np.ndarray, scale: float, pixel_size: float) -> pd.DataFrame:
    """The object table (SLIDE_OBJECT_COLUMNS) of rows of FOUND_COLUMNS: `scale` base-level pixels per pixel of the
    label grid, `pixel_size` µm."""
    table = pd.DataFrame(found, columns=list(FOUND_COLUMNS))
    integral = [name for name in FOUND_COLUMNS if not name.startswith("centroid")]
    table[integral] = table[integral].astype(np.int64)
    table["class"] = OBJECT_CLASS
    table["area_um2"] = table["area_pixels"] * pixel_size ** 2
    for axis in ("x", "y"):  # pixel centres in pixel-edge coordinates of the base level, as QuPath's
        table[f"centroid_{axis}"] = (table[f"centroid_{axis}"] + 0.5) * scale
    return table[list(SLIDE_OBJECT_COLUMNS)]


def object_summary(table: pd.DataFrame, tissue_mm2: float) -> dict:
    """A slide's object count, their area (mm²) and density (objects per mm² of tissue)."""
    return dict(objects=len(table), area_mm2_objects=float(table["area_um2"].sum()) / 1e6,
                objects_per_mm2=len(table) / tissue_mm2 if tissue_mm2 else 0.0)


def objects_path(out_path) -> Path:
    """The object table beside a label pyramid <name>.ome.tif: <name>.objects.parquet."""
    return Path(str(out_path).removesuffix(".ome.tif") + ".objects.parquet")


def geojson_path(out_path) -> Path:
    """The polygons beside a label pyramid <name>.ome.tif: <name>.geojson."""
    return Path(str(out_path).removesuffix(".ome.tif") + ".geojson")


def class_styles(classes: pd.DataFrame) -> dict[int, tuple[str, object]]:
    """index -> (name, colour or None) of the trained classes but a background (index 0 named `background`; a class
    of annotations at index 0, `{Stroma: 0, Tumor: 1}`, is one of the polygons)."""
    return {int(row["index"]): (str(row["name"]), row["color"] if isinstance(row.get("color"), list | tuple)
                                else None)
            for row in trained_classes(classes).to_dict("records")
            if row["index"] != 0 or str(row["name"]).lower() != "background"}


def write_slide_geojson(out_path, labels: np.ndarray, scale: float, classes: pd.DataFrame,
                        objects: pd.DataFrame | None) -> Path:
    """<name>.geojson beside the label pyramid: a detection per object (with an object table `objects`), else an
    annotation per class of `labels`; `scale` base-level pixels per label pixel."""
    if objects is not None:
        features = object_features(labels, objects.to_dict("records"), scale, OBJECT_CLASS)
    else:
        features = class_features(labels, class_styles(classes), scale)
    return write_geojson(geojson_path(out_path), features)


def slide_outputs(out_path, labels: np.ndarray, scale: float, pixel_size: float, classes: pd.DataFrame,
                  objects: np.ndarray | None, tissue_mm2: float, geojson: bool) -> dict:
    """What a slide writes beside its label pyramid besides it (of an instance package the object table of its
    `objects`, rows of FOUND_COLUMNS; with `geojson`, the polygons) and the fields these add to its summary row
    (paths; object count and density)."""
    row, table = {}, None
    if objects is not None:
        table = object_table(objects, scale, pixel_size)
        table.to_parquet(objects_path(out_path))
        row.update(object_summary(table, tissue_mm2), objects_path=str(objects_path(out_path)))
    if geojson:
        row["geojson_path"] = str(write_slide_geojson(out_path, labels, scale, classes, table))
    return row
