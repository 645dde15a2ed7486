"""Instance-labelled masks (one id per object) with data.classes left undeclared: recognised and refused, naming
data.instances and data.foreground, whether a mask holds hundreds of touching objects or a few ids 1..n; classes
that are one region each are not taken for objects."""

import re

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from conftest import build_manifest, ingest_error, trained_labels, write_pairs
from unetflow.data.mask_checks import FEW_IDS_COUNTS, INSTANCE_MIN_VALUES, object_values

SIZE = (48, 64)


# ------------------------------------------------------------------------------------------- instance masks


def instance_mask(seed: int, objects: int = 500) -> np.ndarray:
    """A 16-bit instance mask: touching Voronoi cells (one id per connected region, ids in random order above
    255) inside a rectangle, background 0 in a frame around it."""
    rng = np.random.default_rng(seed)
    height, width = 160, 200
    seeds = rng.uniform((0, 0), (height, width), (objects, 2))
    y, x = np.mgrid[:height, :width]
    nearest = np.argmin((y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2, axis=-1)
    frame = (y < 12) | (y >= height - 12) | (x < 12) | (x >= width - 12)
    cells = np.where(frame, 0, nearest + 1)
    regions = np.zeros_like(cells)  # a cell the pixel grid cuts in two becomes two objects, as in a curated mask
    for cell in np.unique(cells[cells > 0]):
        parts, _ = ndimage.label(cells == cell, structure=np.ones((3, 3)))
        regions[parts > 0] = parts[parts > 0] + regions.max()
    ids = np.r_[0, rng.permutation(regions.max()) + 1000]
    return ids[regions].astype(np.uint16)


def write_instance_pairs(folder, count: int = 3) -> dict[str, np.ndarray]:
    """Grey images with 16-bit instance masks as PNG (and one as a compressed TIFF)."""
    (folder / "images").mkdir(), (folder / "masks").mkdir()
    truth = {}
    for index in range(count):
        labels = truth[f"n{index}"] = instance_mask(index)
        cv2.imwrite(str(folder / "images" / f"n{index}.png"), (labels % 256).astype(np.uint8))
        if index == 0:
            tifffile.imwrite(folder / "masks" / f"n{index}.tif", labels, compression="zlib")
        else:
            cv2.imwrite(str(folder / "masks" / f"n{index}.png"), labels)
    return truth


def test_instance_masks_touch_and_are_one_object_per_id():
    labels = instance_mask(0)
    values, objects = object_values(labels, set(np.unique(labels)) - {0})
    assert values > 200 and values - 10 <= objects <= values  # a few cells clipped by the frame are tiny
    horizontal = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    assert horizontal.sum() > values  # neighbouring objects touch


def test_instance_labelled_masks_are_refused_naming_the_setting(tmp_path):
    truth = write_instance_pairs(tmp_path)
    message = ingest_error(tmp_path / "images", tmp_path / "masks")
    assert message.startswith("1 problem(s)")
    assert "3 of 3 masks look instance-labelled (one id per object" in message
    values = len(np.unique(truth["n0"])) - 1
    objects = int(re.search(rf"n0.tif: {values} values, (\d+) of them one object each", message).group(1))
    assert values - 10 <= objects <= values
    total = len(set().union(*(set(np.unique(t)) for t in truth.values())))
    assert f"the data set would have {total} classes" in message
    assert "Set data.instances: true to train and predict them as objects" in message
    assert "data.instance_target: three_class" in message
    assert "data.foreground: nonzero" in message


def test_instance_labelled_masks_ingest_in_the_instance_mode(tmp_path):
    truth = write_instance_pairs(tmp_path)
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), instances=True)
    assert classes["name"].tolist() == ["background", "foreground"]  # the default target, weight_map
    assert manifest["objects"].tolist() == [len(np.unique(truth[f"n{i}"])) - 1 for i in range(3)]


def test_nonzero_and_the_instance_mode_exclude_each_other(tmp_path):
    write_instance_pairs(tmp_path)
    message = ingest_error(tmp_path / "images", tmp_path / "masks", instances=True, foreground="nonzero")
    assert "data.instances: true trains objects, data.foreground: nonzero one foreground class" in message


def test_instance_masks_train_as_one_foreground_with_nonzero(tmp_path):
    truth = write_instance_pairs(tmp_path)
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), foreground="nonzero")
    assert classes.loc[~classes["ignore"], "value"].tolist() == [0, 255]
    for case_id, labels in trained_labels(manifest, classes).items():
        np.testing.assert_array_equal(labels, (truth[case_id] > 0).astype(np.uint8))


def test_many_classes_that_are_not_objects_are_classes(tmp_path):
    values = tuple(range(0, 12 * 20, 20))  # 12 values scattered as noise over every mask
    assert len(values) - 1 >= INSTANCE_MIN_VALUES
    images, masks = write_pairs(tmp_path, count=3, size=SIZE, values=values)
    _, classes = build_manifest(str(images), str(masks))
    assert classes["value"].tolist() == list(values)


# ----------------------------------------------------------------------------------------- a few objects each


def write_discs(folder, discs: list[list[int]], size: int = 96) -> tuple:
    """Image/mask pairs c<i>: mask i holds a disc of each value of discs[i], apart from each other, on 0."""
    (folder / "images").mkdir(), (folder / "masks").mkdir()
    for index, values in enumerate(discs):
        mask = np.zeros((size, size), np.uint8)
        for place, value in enumerate(values):
            centre = (16 + 30 * (place % 3), 16 + 30 * (place // 3))
            cv2.circle(mask, centre, 9 + index % 4, int(value), -1)
        cv2.imwrite(str(folder / "images" / f"c{index}.png"), np.where(mask > 0, 180, 40).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"c{index}.png"), mask)
    return folder / "images", folder / "masks"


def test_masks_of_a_few_numbered_objects_are_refused_as_instance_labelled(tmp_path):
    counts = [1, 4, 2, 7, 3, 5, 0, 6]
    assert len(set(counts) - {0}) >= FEW_IDS_COUNTS and max(counts) < INSTANCE_MIN_VALUES
    images, masks = write_discs(tmp_path, [list(range(1, n + 1)) for n in counts])
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)")
    assert "7 of 8 masks look instance-labelled (one id per object" in message  # the empty mask is not named
    assert "c3.png: 7 values, 7 of them one object each" in message  # the fullest named first
    assert "the data set would have 8 classes (the masks hold ids 1..n, n from 1 to 7)" in message
    assert "Set data.instances: true" in message and "data.foreground: nonzero" in message
    manifest, _ = build_manifest(str(images), str(masks), instances=True)
    assert manifest["objects"].tolist() == counts


def test_an_edited_mask_with_a_gap_in_its_ids_is_still_taken_for_objects(tmp_path):
    discs = [list(range(1, n + 1)) for n in [1, 4, 2, 7, 3, 5, 6]] + [[1, 2, 5]]  # an object deleted by hand
    images, masks = write_discs(tmp_path, discs)
    assert "8 of 8 masks look instance-labelled" in ingest_error(images, masks)


def write_ball_stacks(folder, counts: list[int]) -> tuple:
    """TIFF stack pairs s<i> (12 pages of 48 x 64): mask i holds n = counts[i] balls of ids 1..n, apart from each
    other, each spanning several pages (a confocal stack's nuclei)."""
    (folder / "images").mkdir(), (folder / "masks").mkdir()
    z, y, x = np.mgrid[:12, :48, :64]
    for index, count in enumerate(counts):
        mask = np.zeros(z.shape, np.uint16)
        for place in range(count):
            centre = (4 + 4 * (place % 2), 10 + 14 * (place // 4 % 3), 8 + 16 * (place % 4))
            mask[(z - centre[0]) ** 2 * 4 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < 36] = place + 1
        tifffile.imwrite(folder / "images" / f"s{index}.tif", np.where(mask > 0, 900, 100).astype(np.uint16))
        tifffile.imwrite(folder / "masks" / f"s{index}.tif", mask)
    return folder / "images", folder / "masks"


def test_stacks_of_a_few_numbered_objects_are_refused_as_instance_labelled(tmp_path):
    images, masks = write_ball_stacks(tmp_path, [6, 8, 9, 6, 7, 9])  # nuclei in 3D, one ball each
    message = ingest_error(images, masks)
    assert "6 of 6 masks look instance-labelled" in message and "s2.tif: 9 values, 9 of them one object" in message
    assert "n from 6 to 9" in message and "Set data.instances: true" in message


@pytest.mark.parametrize("discs", [
    [[1, 2, 3]] * 4 + [[1, 2]],  # three structures, one region each, in (nearly) every image
    [[1, 3], [2], [1, 2, 3], [2, 3], [1], [3]],  # three structures, each in some images
], ids=["constant", "varying"])
def test_classes_of_one_region_each_stay_classes(tmp_path, discs):
    images, masks = write_discs(tmp_path, discs)
    _, classes = build_manifest(str(images), str(masks))
    assert classes["value"].tolist() == [0, 1, 2, 3]
