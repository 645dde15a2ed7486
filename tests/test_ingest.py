"""Pairing and validation of a data set: every problem reported at once, naming its file."""

import cv2
import numpy as np
import pytest

from conftest import write_pairs
from unetflow.ingest import DataValidationError, build_manifest


def test_manifest_columns_and_label_fractions(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    manifest, classes = build_manifest(str(images), str(masks))
    assert list(manifest["id"]) == ["c0", "c1", "c2"]
    assert {"image_path", "mask_path", "height", "width", "channels", "dtype", "label_values",
            "label_fractions"} <= set(manifest.columns)
    assert (manifest["height"] == 32).all() and (manifest["width"] == 40).all()
    assert np.allclose([sum(f) for f in manifest["label_fractions"]], 1)
    assert classes["value"].tolist() == [0, 255] and classes["name"].tolist() == ["background", "foreground"]


def test_mask_suffix_is_paired_automatically(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    for mask in masks.iterdir():
        mask.rename(masks / f"{mask.stem}_mask.png")
    manifest, _ = build_manifest(str(images), str(masks))
    assert manifest["mask_path"].str.endswith("_mask.png").all()


def test_glob_patterns_select_files(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    manifest, _ = build_manifest(str(images / "c[01].png"), str(masks))
    assert list(manifest["id"]) == ["c0", "c1"]


def test_every_problem_is_listed_in_one_error(tmp_path):
    images, masks = write_pairs(tmp_path, count=5)
    (masks / "c0.png").unlink()                                           # image without mask
    cv2.imwrite(str(masks / "orphan.png"), np.zeros((32, 40), np.uint8))   # mask without image
    cv2.imwrite(str(masks / "c1.png"), np.zeros((30, 40), np.uint8))       # size mismatch
    (images / "c2.png").write_bytes(b"")                                   # empty file
    cv2.imwrite(str(masks / "c3.png"), np.full((32, 40), 7, np.uint8))     # undeclared value
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(images), str(masks), classes={"background": 0, "cell": 255})
    message = str(error.value)
    assert "5 problem(s)" in message
    for culprit in ("c0.png: no mask found", "orphan.png: mask without an image", "c1.png", "30x40",
                    "c2.png", "c3.png: mask values [7]"):
        assert culprit in message


def test_no_files_matched_names_the_setting(tmp_path):
    with pytest.raises(DataValidationError, match="no image files matched data.images"):
        build_manifest(str(tmp_path / "nothing"), str(tmp_path))


def test_single_class_data_set_is_rejected(tmp_path):
    images, masks = write_pairs(tmp_path, count=2, values=(0,))
    with pytest.raises(DataValidationError, match="single value"):
        build_manifest(str(images), str(masks))


def test_inconsistent_channels_are_reported(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    cv2.imwrite(str(images / "c1.png"), np.zeros((32, 40, 3), np.uint8) + [0, 0, 255])
    with pytest.raises(DataValidationError, match="c1.png: 3 channels where the data set has 1"):
        build_manifest(str(images), str(masks))
