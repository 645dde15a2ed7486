"""Label maps as polygons in GeoJSON for QuPath: a FeatureCollection, coordinates in pixels of the slide's base level.

A mask is traced by OpenCV (`cv2.findContours`, outer rings and their holes) on the mask upsampled twice (nearest),
so every ring runs a quarter pixel inside the edges of the pixels it holds: each pixel centre of the mask lies inside
the polygon and every other one outside, so rasterising the polygon at pixel centres gives the mask back exactly
(diagonal steps are cut, as QuPath's own tracing does not). Coordinates are pixel edges (0 = the top-left corner of
the first pixel, as QuPath's), scaled to the base level.

Semantic classes: one "annotation" feature per class, a MultiPolygon of all its regions. The label map is traced block
by block (bounded memory), each block with one more row and column of the next blocks, so the pieces of a region cut
by a block border overlap by half a pixel; shapely's union merges them into the one polygon tracing the whole map
would give. Instance objects: one "detection" feature per object (a Polygon, a MultiPolygon when in parts), each traced
from its own bounding box.
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

BLOCK = 2048  # side of the blocks a semantic label map is traced in (pixels of the map)
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))  # colours of classes without their own


def mask_polygons(mask: np.ndarray, top: int = 0, left: int = 0) -> list[Polygon]:
    """The polygons (with holes) of a boolean mask in pixel-edge coordinates (x, y) of the map, the mask's first pixel
    at (top, left)."""
    doubled = np.repeat(np.repeat(mask.astype(np.uint8), 2, 0), 2, 1)
    contours, hierarchy = cv2.findContours(np.pad(doubled, 1), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    rings = [(contour[:, 0].astype(np.float64) - 1 + 0.5) / 2 + (left, top) for contour in contours]
    polygons = []
    for index, (_, _, child, parent) in enumerate(hierarchy[0]):
        if parent < 0:
            holes = []
            while child >= 0:
                holes.append(rings[child])
                child = hierarchy[0][child][0]
            polygons.append(Polygon(rings[index], holes))
    return polygons


def class_geometries(labels: np.ndarray, classes: dict[int, str], block: int = BLOCK) -> dict[int, MultiPolygon]:
    """The MultiPolygon of each class (index -> name; background left out) of a label map (H, W) (an array or a
    memory map), traced block by block (see the module docstring)."""
    pieces: dict[int, list[Polygon]] = {index: [] for index in classes}
    for top in range(0, labels.shape[0], block):
        for left in range(0, labels.shape[1], block):
            part = np.asarray(labels[top:top + block + 1, left:left + block + 1])
            for index in set(np.unique(part).tolist()) & set(classes):
                pieces[index] += mask_polygons(part == index, top, left)
    return {index: as_multipolygon(shapely.union_all(found)) for index, found in pieces.items() if found}


def as_multipolygon(geometry) -> MultiPolygon:
    """A union's result as a MultiPolygon."""
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    return MultiPolygon([part for part in geometry.geoms if isinstance(part, Polygon)])


def scaled(geometry, scale: float):
    """A geometry in pixels of the map scaled to pixels of the base level."""
    return shapely.transform(geometry, lambda xy: xy * scale)


def classification(name: str, color) -> dict:
    """QuPath's classification of a feature: its name and colour [r, g, b]."""
    return {"name": name, "color": [int(value) for value in color]}


def class_color(index: int, color) -> list[int]:
    """A class's own colour, or one of PALETTE by its index."""
    return list(color) if color is not None else list(PALETTE[(index - 1) % len(PALETTE)])


def feature(geometry, object_type: str, name: str, color, properties: dict | None = None) -> dict:
    """A QuPath feature: geometry, objectType ('annotation' or 'detection'), classification and `properties`."""
    return {"type": "Feature", "geometry": mapping(geometry),
            "properties": {"objectType": object_type, "classification": classification(name, color),
                           **(properties or {})}}


def class_features(labels: np.ndarray, classes: dict[int, tuple[str, object]], scale: float,
                   block: int = BLOCK) -> Iterator[dict]:
    """One annotation feature per class present (index -> (name, colour or None)), coordinates times `scale`."""
    for index, geometry in class_geometries(labels, {i: name for i, (name, _) in classes.items()}, block).items():
        name, color = classes[index]
        yield feature(scaled(geometry, scale), "annotation", name, class_color(index, color))


def object_features(labels: np.ndarray, objects: Iterable[dict], scale: float, name: str,
                    color=PALETTE[0]) -> Iterator[dict]:
    """One detection feature per object (rows with id and bbox_top/left/bottom/right in pixels of `labels`), traced
    from its bounding box of the id map, coordinates times `scale`; properties: its id."""
    for row in objects:
        top, left = int(row["bbox_top"]), int(row["bbox_left"])
        box = np.asarray(labels[top:int(row["bbox_bottom"]), left:int(row["bbox_right"])])
        polygons = mask_polygons(box == row["id"], top, left)
        geometry = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
        yield feature(scaled(geometry, scale), "detection", name, color, {"object_id": int(row["id"])})


def write_geojson(path, features: Iterable[dict]) -> Path:
    """A FeatureCollection written feature by feature (never all in memory)."""
    path = Path(path)
    with open(path, "w") as file:
        file.write('{"type": "FeatureCollection", "features": [')
        for number, item in enumerate(features):
            file.write((",\n" if number else "\n") + json.dumps(item))
        file.write("\n]}\n")
    return path
