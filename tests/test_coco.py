"""Masks given as one COCO annotation file (`data.masks: annotations.json`): polygons, plain and compressed run-length
masks drawn as objects (the instance mode) or as their categories' classes; entries that do not fit refused with the
file and the fix."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from unetflow.data.ingest import DataSpec, check_data_set
from unetflow.data.pairing import DataValidationError, data_files
from unetflow.io.images import read_mask, write_mask

SHAPE = (40, 60)


def square(top: int, left: int, side: int) -> np.ndarray:
    """A boolean square (SHAPE) of `side` px at (top, left)."""
    mask = np.zeros(SHAPE, bool)
    mask[top:top + side, left:left + side] = True
    return mask


def as_polygon(mask: np.ndarray) -> list[list[float]]:
    """A square's outline as a COCO polygon [x1, y1, x2, y2, ...] around its pixel edges."""
    rows, cols = np.nonzero(mask)
    top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    return [[float(v) for v in (left, top, right, top, right, bottom, left, bottom)]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's plain run-length encoding: alternating run lengths of 0 and 1 in column-major order."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO's compressed run-length encoding (a string), as pycocotools writes it."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def coco_data_set(tmp_path) -> tuple[dict, dict]:
    """Two images (a.png, b.png) and one COCO file for them, with each kind of segmentation; their objects."""
    objects = {"a.png": [square(2, 3, 10), square(20, 30, 12)], "b.png": [square(5, 40, 8), square(25, 5, 9)]}
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    encodings = [lambda m: as_polygon(m), uncompressed_rle, compressed_rle, lambda m: as_polygon(m)]
    for image_id, (name, masks) in enumerate(objects.items(), start=1):
        write_mask(tmp_path / "images" / name, np.any(masks, axis=0).astype(np.uint8) * 200 + 20)
        images.append({"id": image_id, "file_name": f"frames/{name}", "height": SHAPE[0], "width": SHAPE[1]})
        for mask in masks:
            encode = encodings[len(annotations)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": 1 + len(annotations) % 2, "segmentation": encode(mask)})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "mitosis"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return coco, objects


def ingest(tmp_path, **data):
    """Ingest's (manifest, classes) of tmp_path/images with the COCO file's masks drawn into tmp_path/annotated."""
    spec = DataSpec(images=str(tmp_path / "images"), masks=str(tmp_path / "annotations.json"), **data)
    return check_data_set(spec, 1, tmp_path / "annotated")


def test_each_annotation_is_an_object_of_the_instance_mode(tmp_path):
    _, objects = coco_data_set(tmp_path)
    manifest, _ = ingest(tmp_path, instances=True)
    assert manifest["objects"].tolist() == [2, 2] and manifest["id"].tolist() == ["a", "b"]
    for (_, row), masks in zip(manifest.iterrows(), objects.values()):
        ids = read_mask(row["mask_path"])
        expected = np.zeros(SHAPE, np.uint16)
        for number, mask in enumerate(masks, start=1):
            expected[mask] = number
        np.testing.assert_array_equal(ids, expected)  # polygons, plain and compressed run-lengths alike
        assert row["annotations"] == str(tmp_path / "annotations.json")


def test_without_instances_the_categories_are_the_classes(tmp_path):
    coco_data_set(tmp_path)
    manifest, classes = ingest(tmp_path)
    assert classes["name"].tolist() == ["background", "nucleus", "mitosis"] and classes["value"].tolist() == [0, 1, 2]
    labels = read_mask(manifest.loc[0, "mask_path"])
    assert labels[5, 5] == 1 and labels[25, 35] == 2


def test_the_coco_file_is_an_input_of_ingest(tmp_path):
    coco_data_set(tmp_path)
    files = data_files({"images": str(tmp_path / "images"), "masks": str(tmp_path / "annotations.json")})
    assert str(tmp_path / "annotations.json") in files and str(tmp_path / "images" / "a.png") in files


def test_entries_that_do_not_fit_are_refused_with_the_file_and_the_fix(tmp_path):
    coco, _ = coco_data_set(tmp_path)
    write_mask(tmp_path / "images" / "c.png", np.zeros(SHAPE, np.uint8))
    coco["images"][1]["height"] = 30
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataValidationError) as error:
        ingest(tmp_path, instances=True)
    assert "c.png: no image entry of this file name in the COCO file" in str(error.value)
    assert "b.png: 40x60 px but its entry in" in str(error.value) and "says 30x60" in str(error.value)
    coco["annotations"][0]["category_id"] = 9
    coco["annotations"][1]["segmentation"] = []  # a box-only annotation
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataValidationError) as error:
        ingest(tmp_path)
    assert "annotations.json: 1 annotation category id(s) are not in" in str(error.value)
    assert "1 annotation(s) have no outline (e.g. ids [2]; an empty segmentation" in str(error.value)
    assert "b.png: 40x60 px" in str(error.value)  # every problem at once
    del coco["images"][0]["height"]
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataValidationError, match=r"annotations\.json: 1 of its images lack one of \('id', "):
        ingest(tmp_path)
    (tmp_path / "annotations.json").write_text("{\"images\": []}")
    with pytest.raises(DataValidationError, match=r"annotations\.json: not a COCO annotation file: no annotations"):
        ingest(tmp_path)


def test_windows_file_names_pair_and_polygons_without_area_are_left_out_with_a_warning(tmp_path, caplog):
    coco, objects = coco_data_set(tmp_path)
    coco["images"][0]["file_name"] = "C:\\Users\\lab\\frames\\a.png"
    coco["annotations"].append({"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3, 4]]})
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    manifest, _ = ingest(tmp_path, instances=True)
    assert manifest["objects"].tolist() == [2, 2]
    assert "1 annotation(s) with only polygons of fewer than 3 points (e.g. ids [5])" in caplog.text
