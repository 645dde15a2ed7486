"""Regions of interest at prediction: masks are background outside a source's region of interest (the test cases'
data.rois, new images' infer.rois), and a package trained with them says so when new images come without."""

import dataclasses

import cv2
import numpy as np
import pandas as pd
import pytest
from test_infer import make_package, write_images

from unetflow.data.rois import attach_rois
from unetflow.infer.infer import InferInputError, check_images
from unetflow.infer.package import load_package, training_data_summary
from unetflow.infer.predictor import Predictor
from unetflow.infer.rois import roi_note, within_roi
from unetflow.io.prediction_files import read_probabilities


def test_pixels_outside_a_region_of_interest_become_certain_background():
    probs = np.full((3, 1, 4, 4), 1 / 3, np.float32)
    roi = np.zeros((1, 4, 4), bool)
    roi[0, 1:, 1:] = True
    classes = within_roi(probs.copy(), roi, regions=False)
    assert classes[:, 0, 0, 0].tolist() == [1, 0, 0] and np.allclose(classes[:, 0, 2, 2], 1 / 3)
    regions = within_roi(probs.copy(), roi, regions=True)
    assert regions[:, 0, 0, 0].tolist() == [0, 0, 0] and np.allclose(regions[:, 0, 2, 2], 1 / 3)
    assert within_roi(probs, None, regions=False) is probs


def test_infer_rois_pair_by_name_and_leave_the_masks_background_outside(tmp_path):
    package = load_package(make_package(tmp_path))
    images = write_images(tmp_path / "in", 2)
    rois = tmp_path / "rois"
    rois.mkdir()
    half = np.zeros((40, 48), np.uint8)
    half[:, :24] = 255
    cv2.imwrite(str(rois / f"{images[0].stem}_roi.png"), half)
    cv2.imwrite(str(rois / f"{images[1].stem}.png"), np.full((40, 48), 255, np.uint8))
    table = check_images(images, package, rois=str(rois))
    assert table["roi_path"].tolist() == [str(rois / f"{images[0].stem}_roi.png"), str(rois / f"{images[1].stem}.png")]
    Predictor(package, "cpu").predict_sources(table, tmp_path / "out", save_probabilities=True)
    probs = read_probabilities(tmp_path / "out" / f"{images[0].stem}.npz")
    assert (probs[0][:, 24:] == 1).all() and (probs[0][:, :24] < 1).any()
    assert (cv2.imread(str(tmp_path / "out" / f"{images[0].stem}.png"), cv2.IMREAD_UNCHANGED)[:, 24:] == 0).all()
    assert (read_probabilities(tmp_path / "out" / f"{images[1].stem}.npz")[0] < 1).any()

    (rois / f"{images[1].stem}.png").unlink()
    cv2.imwrite(str(rois / f"{images[0].stem}_roi.png"), half[:20])
    with pytest.raises(InferInputError, match="2 problem") as error:
        check_images(images, package, rois=str(rois))
    message = str(error.value)
    assert f"{images[1]}: no region-of-interest file(s) in infer.rois '{rois}'" in message
    assert f"region of interest of 20x48 px, but its image {images[0]} is 40x48" in message


def test_a_package_trained_with_regions_of_interest_warns_without_infer_rois(tmp_path):
    package = load_package(make_package(tmp_path))
    assert roi_note(package, None) == ""
    trained = dataclasses.replace(package, training_data=dict(package.training_data, rois=True))
    assert "was trained with regions of interest (data.rois)" in roi_note(trained, None)
    assert roi_note(trained, "rois/") == ""
    manifest = pd.DataFrame({"kind": ["image"] * 2, "slices": [1, 1], "height": [4, 4], "width": [4, 4],
                             "dtype": ["uint8"] * 2, "image_path": ["a.png", "b.png"], "roi_path": ["a_roi.png", None]})
    assert training_data_summary(manifest, pd.DataFrame({"foreground_fraction": [0.1, 0.2]}))["rois"] is True
    assert training_data_summary(manifest.drop(columns="roi_path"),
                                 pd.DataFrame({"foreground_fraction": [0.1, 0.2]}))["rois"] is False


def test_a_region_of_interest_in_another_cases_folder_is_never_taken(tmp_path):
    for path in ("images/p1/a.png", "images/p2/b.png", "rois/p1/a.png", "rois/p3/b.png", "flat/a.png", "flat/b.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / path), np.ones((4, 4), np.uint8))
    pairs = [dict(image=tmp_path / "images/p1/a.png", stem="a"), dict(image=tmp_path / "images/p2/b.png", stem="b")]
    (problem,) = attach_rois(pairs, str(tmp_path / "rois/*/*.png"))
    assert pairs[0]["roi"] == tmp_path / "rois/p1/a.png" and "roi" not in pairs[1]
    assert problem.startswith(f"{tmp_path / 'images/p2/b.png'}: no region-of-interest file(s) in data.rois")
    assert problem.endswith(f"found only outside the image's folders (e.g. {tmp_path / 'rois/p3/b.png'}): put each "
                            f"region of interest in a folder named as its image's")
    assert attach_rois(pairs, str(tmp_path / "flat")) == [] and pairs[1]["roi"] == tmp_path / "flat/b.png"
    flat_images = [dict(image=tmp_path / "images/a.png", stem="a"), dict(image=tmp_path / "images/b.png", stem="b")]
    assert attach_rois(flat_images, str(tmp_path / "rois/*/*.png")) == []  # unique names of one folder: any folder
    assert flat_images[1]["roi"] == tmp_path / "rois/p3/b.png"
