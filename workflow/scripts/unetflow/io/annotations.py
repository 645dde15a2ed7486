"""Sparse polygon annotations exported from QuPath as GeoJSON, read and rasterised into label values.

A file is a FeatureCollection, a list of Features or one Feature; each feature's geometry a Polygon or MultiPolygon
in base-level pixel coordinates of its image (x to the right, y down, a pixel covering [x, x + 1)), holes as inner
rings, its class `properties.classification.name`. Class names map to mask values through `data.classes`; a class
named `Ignore*` (QuPath's own) or `Ignore` marks a region left out of training and evaluation. Unclassified features
are refused: whether they mean background or a region to skip is not written in the file. Points and lines (QuPath's
counting points, rulers) are left out with a log line: they mark no area.

A pixel belongs to a polygon when its centre lies inside it (`skimage.draw.polygon`), outside every hole. Features are
painted in file order (a later one over an earlier one), the ignored ones last; unannotated pixels keep the fill.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon as polygon_pixels

from unetflow.io.formats import ImageReadError

IGNORE_CLASSES = ("ignore*", "ignore")  # compared in lower case
GEOMETRIES = ("Polygon", "MultiPolygon")
AREALESS = ("Point", "MultiPoint", "LineString", "MultiLineString")  # left out: no area to label

log = logging.getLogger("unetflow.io.annotations")


@dataclass(frozen=True)
class Annotation:
    """One feature: its position in the file (from 0), class name (None: unclassified) and polygons, each a list of
    rings (exterior first, then holes), each ring an (N, 2) array of x, y."""
    number: int
    name: str | None
    polygons: tuple

    @property
    def ignored(self) -> bool:
        return self.name is not None and self.name.lower() in IGNORE_CLASSES

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of its exterior rings."""
        points = np.concatenate([rings[0] for rings in self.polygons])
        return (*points.min(axis=0), *points.max(axis=0))

    def label(self) -> str:
        """How a message names it: its number and class."""
        return f"feature {self.number} ({self.name or 'unclassified'})"


def features_of(document, path) -> list:
    """The features of a parsed GeoJSON document; ImageReadError naming the file when it holds none."""
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        document = document.get("features")
    elif isinstance(document, dict) and document.get("type") == "Feature":
        document = [document]
    if not isinstance(document, list):
        raise ImageReadError(f"{path}: not a GeoJSON FeatureCollection or list of Features; export the annotations "
                             f"from QuPath as GeoJSON (File > Export objects as GeoJSON)")
    return document


def ring_of(coordinates, where: str) -> np.ndarray:
    """A ring's (N, 2) float array of x, y; ImageReadError (`where` names file and feature) when it is not one."""
    try:
        ring = np.asarray(coordinates, dtype=float)
    except (TypeError, ValueError):
        ring = np.empty((0,))
    if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 3 or not np.isfinite(ring).all():
        raise ImageReadError(f"{where}: a ring is not a list of at least 3 [x, y] number pairs; not valid GeoJSON")
    return ring


def annotation_of(feature, number: int, path) -> Annotation | None:
    """One feature read (None for points and lines, which mark no area); ImageReadError naming the file and the
    feature when it is not valid GeoJSON or of another geometry."""
    where = f"{path}: feature {number}"
    geometry = feature.get("geometry") if isinstance(feature, dict) else None
    if not isinstance(geometry, dict) or not isinstance(geometry.get("coordinates"), list):
        raise ImageReadError(f"{where}: no geometry with coordinates; not a valid GeoJSON Feature")
    if geometry.get("type") in AREALESS:
        return None
    if geometry.get("type") not in GEOMETRIES:
        raise ImageReadError(f"{where}: a {geometry.get('type')} geometry; only areas (Polygon, MultiPolygon) are "
                             f"labels")
    parts = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    if not parts or not all(isinstance(rings, list) and rings for rings in parts):
        raise ImageReadError(f"{where}: a polygon without rings; not valid GeoJSON")
    polygons = tuple(tuple(ring_of(ring, where) for ring in rings) for rings in parts)
    classification = (feature.get("properties") or {}).get("classification") or {}
    name = classification.get("name") if isinstance(classification, dict) else None
    return Annotation(number, None if name is None else str(name), polygons)


def read_annotations(path) -> list[Annotation]:
    """Every area feature of a GeoJSON file (points and lines, e.g. QuPath's counting points, left out with a log
    line); ImageReadError naming the file and every feature that is not valid."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImageReadError(f"{path}: not valid GeoJSON ({error})") from error
    features, read, problems = features_of(document, path), [], []
    for number, feature in enumerate(features):
        try:
            read.append(annotation_of(feature, number, path))
        except ImageReadError as error:
            problems.append(str(error))
    if problems:
        raise ImageReadError("; ".join(problems))
    if None in read:
        log.info("%s: %d point or line feature(s) left out: they mark no area to label", path, read.count(None))
    detections = sum(isinstance(feature, dict) and (feature.get("properties") or {}).get("objectType") == "detection"
                     for feature in features)
    if detections:
        log.info("%s: %d detection(s) (QuPath's cell or tile objects) drawn as labels, as annotations are", path,
                 detections)
    return [annotation for annotation in read if annotation is not None]


def annotation_problems(annotations: list[Annotation], path, classes: dict, shape: tuple[int, int]) -> list[str]:
    """Problems of a file's annotations for an image whose base level is `shape` (height, width): none at all,
    unclassified features, class names not in `classes` (data.classes), polygons wholly outside the image (one over
    its edge is labelled up to it, with a log line)."""
    if all(annotation.ignored for annotation in annotations):
        return [f"{path}: holds no {'classified ' if annotations else ''}annotation; export the annotations of its "
                f"image from QuPath"]
    problems = []
    unclassified = [a.number for a in annotations if a.name is None]
    if unclassified:
        problems.append(f"{path}: feature(s) {unclassified} are unclassified; give each annotation a class in QuPath "
                        f"(one of data.classes, or 'Ignore*' for a region to leave out)")
    unknown = sorted({a.name for a in annotations if a.name is not None and not a.ignored} - set(classes))
    if unknown:
        problems.append(f"{path}: class name(s) {unknown} are not in data.classes {sorted(classes)}; add them (name: "
                        f"mask value) or rename the classes in QuPath")
    height, width = shape
    for annotation in annotations:
        x0, y0, x1, y1 = annotation.bounds()
        where = f"{annotation.label()} (x {x0:g}..{x1:g}, y {y0:g}..{y1:g})"
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            problems.append(f"{path}: {where} lies wholly outside its image of {width}x{height} px; are these the "
                            f"annotations of another image?")
        elif x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            log.info("%s: %s reaches over the edge of its image of %dx%d px: labelled up to the edge", path, where,
                     width, height)
    return problems


def polygon_mask(rings, box: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """Pixels (bool, the box's height x width) whose centres lie inside the exterior ring and outside every hole;
    `box` (top, left, bottom, right) on a grid of `scale` base pixels per pixel."""
    top, left, bottom, right = box
    mask = np.zeros((bottom - top, right - left), bool)
    for index, ring in enumerate(rings):
        rows, columns = polygon_pixels(ring[:, 1] / scale - 0.5 - top, ring[:, 0] / scale - 0.5 - left, mask.shape)
        mask[rows, columns] = index == 0
    return mask


def rasterise(annotations: list[Annotation], values: dict, ignore_value: int, box: tuple[int, int, int, int],
              scale: float = 1.0, dtype=np.uint16, fill: int | None = None) -> np.ndarray:
    """Label values (the box's height x width) of a box (top, left, bottom, right) on a grid of `scale` base pixels
    per pixel: each polygon's class value (`values`: name to value), `fill` (default `ignore_value`) outside every
    annotation and `ignore_value` inside the ignored ones."""
    labels = np.full((box[2] - box[0], box[3] - box[1]), ignore_value if fill is None else fill, dtype)
    for annotation in sorted(annotations, key=lambda a: a.ignored):  # stable: file order, the ignored ones last
        value = ignore_value if annotation.ignored else values[annotation.name]
        for rings in annotation.polygons:
            labels[polygon_mask(rings, box, scale)] = value
    return labels


def grid_box(annotation: Annotation, scale: float) -> tuple[int, int, int, int]:
    """The pixels (top, left, bottom, right) an annotation covers on a grid of `scale` base pixels per pixel."""
    x0, y0, x1, y1 = annotation.bounds()
    return (math.floor(y0 / scale), math.floor(x0 / scale), math.ceil(y1 / scale), math.ceil(x1 / scale))
