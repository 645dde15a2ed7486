"""Instance masks with more than 65535 objects: read as uint32 ids from 32-bit TIFFs, stored in the case, and
predictions of that many objects written losslessly (a 32-bit TIFF in place of the 16-bit PNG; a uint32 NIfTI for a
volume whose ids, offset slice by slice, pass 65535)."""

import logging

import nibabel as nib
import numpy as np
import pytest
import tifffile

from conftest import build_manifest
from unetflow.instances.objects import source_objects
from unetflow.io.formats import ImageReadError
from unetflow.io.images import read_mask, write_mask
from unetflow.io.labels import ID_LIMIT
from unetflow.io.prediction_files import read_instance_mask, write_instance_mask
from unetflow.io.sources import read_source_mask

GRID = 260  # one-pixel objects on every other pixel of a 520x520 image: 67600 objects, more than 16 bits hold


def many_objects() -> np.ndarray:
    """A uint32 id map of GRID x GRID one-pixel objects (ids 1..GRID^2), apart by one pixel of background."""
    ids = np.zeros((2 * GRID, 2 * GRID), np.uint32)
    ids[::2, ::2] = np.arange(1, GRID * GRID + 1, dtype=np.uint32).reshape(GRID, GRID)
    return ids


def test_a_32_bit_tiff_of_more_than_65535_ids_is_read_as_ids(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    ids = many_objects()
    write_mask(tmp_path / "images" / "c0.png", (ids > 0).astype(np.uint8) * 200)
    tifffile.imwrite(tmp_path / "masks" / "c0.tif", ids)
    with pytest.raises(ImageReadError, match="c0.tif.*set data.instances: true"):
        read_mask(tmp_path / "masks" / "c0.tif")  # class values stop at 65535
    assert np.array_equal(read_mask(tmp_path / "masks" / "c0.tif", ID_LIMIT), ids)
    manifest, _ = build_manifest(tmp_path / "images", tmp_path / "masks", instances=True)
    assert manifest.loc[0, "objects"] == GRID * GRID
    stored = read_source_mask(manifest.iloc[0].to_dict(), ids=True)[0]
    assert stored.dtype == np.uint32 and np.array_equal(stored, ids)


IMAGE = dict(kind="image", image_path="c.png")


def test_a_prediction_of_more_than_65535_objects_is_written_losslessly(tmp_path, caplog):
    ids = many_objects().astype(np.int32)
    with caplog.at_level(logging.INFO):
        written = write_instance_mask(tmp_path / "c0.png", ids[None], IMAGE)
    assert written == tmp_path / "c0.tif" and not (tmp_path / "c0.png").exists()
    assert "32-bit TIFF" in caplog.text
    assert np.array_equal(read_instance_mask(tmp_path / "c0.png", IMAGE)[0], ids)  # found where the readers look
    few = np.where(ids <= 500, ids, 0)
    assert write_instance_mask(tmp_path / "c1.png", few[None], IMAGE) == tmp_path / "c1.png"
    assert read_mask(tmp_path / "c1.png").dtype == np.uint16
    assert np.array_equal(read_instance_mask(tmp_path / "c1.png", IMAGE)[0], few)
    write_instance_mask(tmp_path / "c2.png", np.where(ids <= 9, ids, 0)[None], IMAGE)
    assert read_mask(tmp_path / "c2.png").dtype == np.uint16  # 16-bit however few the objects, as every mask


def test_a_volume_whose_ids_pass_65535_across_slices_is_written_as_uint32_nifti(tmp_path, caplog):
    rng = np.random.default_rng(0)
    slices = [np.where(rng.random((120, 100)) < 0.9, np.arange(1, 12001).reshape(120, 100), 0) for _ in range(7)]
    nib.save(nib.Nifti1Image(np.zeros((120, 100, 7), np.float32), np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "v.nii.gz")
    row = dict(kind="volume", image_path=str(tmp_path / "v.nii.gz"), slice_axis=2)
    offsets = np.cumsum([0] + [int(s.max()) for s in slices[:-1]])
    expected = np.stack([np.where(s > 0, s + offset, 0) for s, offset in zip(slices, offsets)])  # array order
    with caplog.at_level(logging.INFO):
        written = write_instance_mask(tmp_path / "out.nii.gz", expected, row)
    assert "32-bit ids" in caplog.text and nib.load(written).get_data_dtype() == np.uint32
    ids = read_instance_mask(written, row)
    assert expected.max() > 65535 and ids.dtype == np.uint32
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), np.moveaxis(expected, 0, 2))
    nib.save(nib.Nifti1Image(np.zeros((120, 100, 2), np.float32), np.eye(4)), tmp_path / "v2.nii.gz")
    few = write_instance_mask(tmp_path / "few.nii.gz", expected[:2], dict(row, image_path=str(tmp_path / "v2.nii.gz")))
    assert nib.load(few).get_data_dtype() == np.uint16 and read_instance_mask(few, row).max() == 24000


def test_objects_that_continue_from_slice_to_slice_keep_one_id():
    foreground = np.zeros((4, 24, 24), np.float32)
    foreground[:3, 2:8, 2:8] = 1  # one object through slices 0..2 ...
    foreground[3, 2:5, 2:5] = 1  # ... ending in a small cap (IoU 0.25, but all of it over the object before)
    foreground[1:, 12:18, 12:18] = 1  # one from slice 1 on ...
    foreground[3, 12:18, 13:19] = 1  # ... shifted a pixel in the last
    foreground[2, 20:23, 20:23] = 1  # an object of one slice
    units = [(f"s_s{page}", slice(page, page + 1)) for page in range(4)]  # the pages of a stack
    ids, rows, _ = source_objects(units, np.stack([1 - foreground, foreground]), "weight_map", min_size=1)
    assert [sorted(set(np.unique(plane)) - {0}) for plane in ids] == [[1], [1, 2], [1, 2, 3], [1, 2]]
    assert ids[3, 3, 3] == 1 and ids[3, 15, 18] == 2
    assert [(row["case"], row["slice"], row["id"]) for row in rows] == [
        ("s_s0", 0, 1), ("s_s1", 0, 1), ("s_s1", 0, 2), ("s_s2", 0, 1), ("s_s2", 0, 2), ("s_s2", 0, 3),
        ("s_s3", 0, 1), ("s_s3", 0, 2)]
    _, volume_rows, _ = source_objects([("v", slice(0, 4))], np.stack([1 - foreground, foreground]), "weight_map", 1)
    assert [(row["slice"], row["id"]) for row in volume_rows] == [(int(row["case"][-1]), row["id"]) for row in rows]


def test_an_object_that_splits_keeps_its_id_in_its_larger_part():
    foreground = np.zeros((2, 20, 30), np.float32)
    foreground[0, 4:16, 2:28] = 1  # one object ...
    foreground[1, 4:16, 2:16] = foreground[1, 4:16, 19:26] = 1  # ... in two parts on the next slice
    ids, _, _ = source_objects([("v", slice(0, 2))], np.stack([1 - foreground, foreground]), "weight_map", min_size=1)
    assert ids[1, 10, 5] == ids[0, 10, 5] == 1 and ids[1, 10, 22] == 2


def test_objects_that_only_touch_from_slice_to_slice_stay_apart():
    foreground = np.zeros((2, 20, 30), np.float32)
    foreground[0, 4:16, 2:14] = foreground[1, 4:16, 8:20] = 1  # half over each other: IoU 1/3
    ids, _, _ = source_objects([("v", slice(0, 2))], np.stack([1 - foreground, foreground]), "weight_map", min_size=1)
    assert sorted(np.unique(ids[0])) == [0, 1] and sorted(np.unique(ids[1])) == [0, 2]


def test_objects_under_the_smallest_size_are_dropped_and_counted_per_unit():
    foreground = np.zeros((2, 40, 40), np.float32)
    foreground[0, 2:10, 2:10] = foreground[0, 2:10, 20:28] = 1  # two objects of 64 px on page 0 ...
    foreground[0, 20:24, 2:6] = foreground[0, 30:34, 30:34] = 1  # ... and two specks of 16 px
    foreground[1, 12:20, 12:20] = 1  # one object on page 1
    units = [("p0", slice(0, 1)), ("p1", slice(1, 2))]
    ids, rows, dropped = source_objects(units, np.stack([1 - foreground, foreground]), "weight_map", min_size=30)
    assert dropped == {"p0": 2, "p1": 0}
    assert ids[0, 21, 3] == ids[0, 31, 31] == 0 and len(np.unique(ids[0])) == 3
    assert [row["area"] for row in rows] == [64, 64, 64]
    assert source_objects(units, np.stack([1 - foreground, foreground]), "weight_map", min_size=10)[2] == \
        {"p0": 0, "p1": 0}
