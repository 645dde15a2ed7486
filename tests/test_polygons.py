"""GeoJSON polygons for QuPath: written from label maps, read back with json and rasterised at pixel centres they give
the labels back exactly (tolerance 0 pixels); a region cut by the blocks it is traced in comes out as one polygon."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.draw import polygon as fill_polygon
from skimage.measure import label

from unetflow.infer.slide_objects import write_slide_geojson
from unetflow.io.polygons import class_features, object_features, write_geojson

SCALE = 4.0  # base-level pixels per label pixel


def label_map() -> np.ndarray:
    """Smooth random blobs of classes 1 and 2 on background, and a ring of class 1 around an island of class 2
    inside a hole (an outer ring, a hole, a polygon in the hole)."""
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(90, 110)), 3) * 20
    labels = np.digitize(field, [0.5, 1.5]).astype(np.uint8)
    labels[40:70, 40:75] = 1
    labels[46:64, 46:69] = 0
    labels[52:58, 52:63] = 2
    return labels


def rasterised(geometry: dict, shape, scale: float = SCALE) -> np.ndarray:
    """The pixels (of a map `scale` times coarser than the base level) whose centres lie inside a GeoJSON
    (Multi)Polygon in base-level pixel-edge coordinates."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    mask = np.zeros(shape, bool)
    for rings in polygons:
        inside = np.zeros(shape, bool)
        for number, ring in enumerate(rings):
            x, y = np.asarray(ring).T / scale - 0.5  # pixel-edge coordinates to pixel-centre indices
            ring_mask = np.zeros(shape, bool)
            ring_mask[fill_polygon(y, x, shape)] = True
            inside = ring_mask if number == 0 else inside & ~ring_mask
        mask |= inside
    return mask


@pytest.mark.parametrize("block", [1000, 16])
def test_class_polygons_read_back_rasterise_to_the_labels_also_when_traced_block_by_block(tmp_path, block):
    labels = label_map()
    classes = {1: ("tumour", [200, 0, 0]), 2: ("stroma", None)}
    path = write_geojson(tmp_path / "s.geojson", class_features(labels, classes, SCALE, block))
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    features = {f["properties"]["classification"]["name"]: f for f in collection["features"]}
    assert set(features) == {"tumour", "stroma"}
    assert features["tumour"]["properties"]["classification"]["color"] == [200, 0, 0]
    assert {f["properties"]["objectType"] for f in features.values()} == {"annotation"}
    for index, name in ((1, "tumour"), (2, "stroma")):
        geometry = features[name]["geometry"]
        assert geometry["type"] == "MultiPolygon"
        np.testing.assert_array_equal(rasterised(geometry, labels.shape), labels == index)
        # merged across the 16-pixel blocks: one polygon per region (pixels touching by a corner only are apart)
        assert len(geometry["coordinates"]) == label(labels == index, connectivity=1).max()
    ring = next(rings for rings in features["tumour"]["geometry"]["coordinates"] if len(rings) > 1)
    assert len(ring) == 2  # the ring's outline and its hole


def test_each_object_is_a_detection_that_rasterises_to_its_pixels(tmp_path):
    ids = np.zeros((30, 40), np.uint32)
    ids[2:12, 3:15] = 7
    ids[2:12, 15:22] = 9  # touches 7
    ids[5:8, 6:10] = 0  # a hole in 7
    ids[20:24, 5:9] = ids[20:24, 30:33] = 70_000  # one object in two parts
    boxes = {value: ndimage.find_objects((ids == value).astype(np.uint8))[0] for value in (7, 9, 70_000)}
    rows = [dict(id=value, bbox_top=ys.start, bbox_left=xs.start, bbox_bottom=ys.stop, bbox_right=xs.stop)
            for value, (ys, xs) in boxes.items()]
    path = write_geojson(tmp_path / "o.geojson", object_features(ids, rows, SCALE, "object"))
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["object_id"] for f in features] == [7, 9, 70_000]
    assert [f["geometry"]["type"] for f in features] == ["Polygon", "Polygon", "MultiPolygon"]
    assert {f["properties"]["objectType"] for f in features} == {"detection"}
    for feature in features:
        np.testing.assert_array_equal(rasterised(feature["geometry"], ids.shape),
                                      ids == feature["properties"]["object_id"])


def test_a_slide_geojson_lies_beside_its_label_pyramid_without_the_background(tmp_path):
    classes = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "a", "b"], "value": [0, 1, 2],
                            "color": None, "ignore": False})
    path = write_slide_geojson(tmp_path / "s.ome.tif", label_map(), SCALE, classes, None)
    assert path == tmp_path / "s.geojson"
    names = [f["properties"]["classification"]["name"] for f in json.loads(path.read_text())["features"]]
    assert sorted(names) == ["a", "b"]
