"""The catalogue of bad inputs: each one is caught by ingest (or split) with a message naming the culprit and the fix.

Config typos and wrong types are refused by the schema (tested here through snakemake.utils.validate).
"""

import logging

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from snakemake.utils import validate as validate_config

from conftest import REPO, build_manifest, write_pairs
from unetflow.data.data_warnings import data_warnings, log_warnings
from unetflow.data.ingest import DataValidationError
from unetflow.data.split import split_cases

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def ingest_error(tmp_path, **options) -> str:
    """The message of the DataValidationError raised for the data set in tmp_path/images, tmp_path/masks."""
    options.setdefault("images", str(tmp_path / "images"))
    options.setdefault("masks", str(tmp_path / "masks"))
    with pytest.raises(DataValidationError) as error:
        build_manifest(**options)
    return str(error.value)


def write_volume(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)


@pytest.fixture
def pairs(tmp_path):
    """Four good grey PNG pairs with 0/255 masks; returns (images folder, masks folder)."""
    return write_pairs(tmp_path, count=4)


def test_no_files_matched(tmp_path):
    assert "no image files matched data.images" in ingest_error(tmp_path, images=str(tmp_path / "none/*.png"))


def test_image_without_mask(tmp_path, pairs):
    (pairs[1] / "c2.png").unlink()
    assert "c2.png: no mask found" in ingest_error(tmp_path)


def test_mask_without_image(tmp_path, pairs):
    cv2.imwrite(str(pairs[1] / "extra.png"), np.zeros((32, 40), np.uint8))
    assert "extra.png: mask without an image" in ingest_error(tmp_path)


def test_zero_byte_image(tmp_path, pairs):
    (pairs[0] / "c1.png").write_bytes(b"")
    assert "c1.png: the file is empty (0 bytes)" in ingest_error(tmp_path)


def test_truncated_image_found_without_decoding(tmp_path, pairs):
    path = pairs[0] / "c1.png"
    path.write_bytes(path.read_bytes()[:-200])
    assert "c1.png: the file is truncated" in ingest_error(tmp_path)


def test_complete_image_file_with_corrupt_pixel_data(tmp_path, pairs):
    path = pairs[0] / "c2.png"
    data = bytearray(path.read_bytes())
    data[100:200] = bytes(100)  # inside the compressed pixel data; the file still ends with its IEND chunk
    path.write_bytes(bytes(data))
    assert "c2.png: the PNG data cannot be decoded" in ingest_error(tmp_path)


def test_truncated_jpeg_image(tmp_path, pairs):
    image = cv2.imread(str(pairs[0] / "c1.png"))
    (pairs[0] / "c1.png").unlink()
    ok, data = cv2.imencode(".jpg", image)
    (pairs[0] / "c1.jpg").write_bytes(data.tobytes()[:-300])
    assert "c1.jpg: the file is truncated" in ingest_error(tmp_path)


def test_truncated_mask(tmp_path, pairs):
    path = pairs[1] / "c3.png"
    path.write_bytes(path.read_bytes()[:60])
    assert "c3.png: the PNG data cannot be decoded" in ingest_error(tmp_path)


def test_text_file_with_image_extension(tmp_path, pairs):
    (pairs[0] / "c0.png").write_text("<html>Not found</html>")
    assert "c0.png: not a PNG file" in ingest_error(tmp_path)


def test_image_mask_size_mismatch(tmp_path, pairs):
    cv2.imwrite(str(pairs[1] / "c1.png"), np.zeros((30, 40), np.uint8))
    message = ingest_error(tmp_path)
    assert "c1.png: image is 1 slice(s) of 32x40" in message and "30x40" in message


def test_mask_values_outside_declared_classes(tmp_path, pairs):
    cv2.imwrite(str(pairs[1] / "c3.png"), np.full((32, 40), 7, np.uint8))
    message = ingest_error(tmp_path, classes={"background": 0, "cell": 255})
    assert "c3.png: mask values [7] are not among the declared classes" in message and "data.classes" in message


def test_jpeg_mask_without_opt_in(tmp_path, pairs):
    (pairs[1] / "c0.png").unlink()
    cv2.imwrite(str(pairs[1] / "c0.jpg"), np.zeros((32, 40), np.uint8))
    message = ingest_error(tmp_path)
    assert "c0.jpg: JPEG masks are lossy" in message and "data.lossy_masks: snap" in message and "e.g. {" in message


def test_jpeg_snap_without_declared_classes(tmp_path, pairs):
    (pairs[1] / "c0.png").unlink()
    cv2.imwrite(str(pairs[1] / "c0.jpg"), np.zeros((32, 40), np.uint8))
    assert "c0.jpg: data.lossy_masks: snap needs declared classes" in ingest_error(tmp_path, lossy_masks="snap")


def test_inconsistent_channel_counts(tmp_path, pairs):
    cv2.imwrite(str(pairs[0] / "c2.png"), np.zeros((32, 40, 3), np.uint8) + [0, 0, 255])  # red: a colour image
    assert ("c2.png: 3 channel(s) where 3 of 4 of the data set's images have 1; convert it, or set data.channels to 1"
            in ingest_error(tmp_path))


def test_nan_in_a_volume(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    data = np.zeros((8, 8, 3), np.float32)
    data[1, 2, 0] = np.nan
    write_volume(tmp_path / "images" / "v.nii.gz", data)
    write_volume(tmp_path / "masks" / "v.nii.gz", np.eye(8, dtype=np.uint8)[..., None].repeat(3, 2))
    assert "v.nii.gz: 1 voxels are NaN or Inf" in ingest_error(tmp_path)


def test_nan_in_a_2d_float_image(tmp_path, pairs):
    image = np.ones((32, 40), np.float32)
    image[5:7, 5:8] = np.nan
    (pairs[0] / "c1.png").unlink()
    tifffile.imwrite(pairs[0] / "c1.tif", image)
    assert "c1.tif: 6 pixels are NaN or Inf; replace them" in ingest_error(tmp_path)


def test_a_photo_turned_by_its_exif_tag_names_the_tag(tmp_path, pairs):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: its mask, drawn on that view, is 40 x 32
    (pairs[0] / "c1.png").unlink()
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(pairs[0] / "c1.jpg", exif=exif.tobytes())
    assert "its EXIF orientation tag (6) turns it by 90 degrees where viewers show it" in ingest_error(tmp_path)


def test_4d_label_volume_and_volumes_of_other_channel_counts(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    labels = np.zeros((8, 8, 3), np.uint8)
    labels[2:5, 2:5] = 1
    for name, channels in (("v", 2), ("u", 2), ("w", 2), ("x", 1)):
        write_volume(tmp_path / "images" / f"{name}.nii", np.zeros((8, 8, 3, channels), np.float32))
        write_volume(tmp_path / "masks" / f"{name}.nii", np.stack([labels] * 2, -1) if name == "w" else labels)
    message = ingest_error(tmp_path)
    assert "w.nii: a 4D volume of shape (8, 8, 3, 2) where labels are read" in message
    assert ("x.nii: 1 channel(s) where 2 of 3 of the data set's images have 2; every volume needs the same channels "
            "(modalities along the 4th axis)") in message
    assert "u.nii: a volume of 2 channels (modalities); data.channels converts" in ingest_error(tmp_path, channels=1)


def test_fractional_label_volume(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    write_volume(tmp_path / "images" / "v.nii", np.zeros((8, 8, 3), np.float32))
    write_volume(tmp_path / "masks" / "v.nii", np.full((8, 8, 3), 0.5, np.float32))
    assert "v.nii: labels must be whole numbers in 0..65535 (float32 values from 0.5 to 0.5 found, values off" in \
        ingest_error(tmp_path)
    write_volume(tmp_path / "masks" / "v.nii", np.full((8, 8, 3), -1, np.int16))
    assert "found, negative values, e.g. -1); save the labels as integers from 0" in ingest_error(tmp_path)
    write_volume(tmp_path / "masks" / "v.nii", np.arange(192).reshape(8, 8, 3) % 2 * np.float32(0.99999994))
    assert list(build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))[1]["value"]) == [0, 1]  # rounded


def test_volume_image_with_2d_mask(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    write_volume(tmp_path / "images" / "v.nii", np.zeros((8, 8, 3), np.float32))
    cv2.imwrite(str(tmp_path / "masks" / "v.png"), np.zeros((8, 8), np.uint8))
    assert "v.png: the image v.nii is a volume but its mask is not" in ingest_error(tmp_path)


def test_volume_mask_on_another_voxel_grid(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    labels = np.eye(8, dtype=np.uint8)[..., None].repeat(3, 2)
    nearly = np.eye(4) + np.r_[np.full((3, 4), 1e-5), [[0, 0, 0, 0]]]  # float noise between two headers
    for name, mask_affine in (("same", nearly), ("shifted", np.diag([1.0, 1.0, 3.0, 1.0]))):
        write_volume(tmp_path / "images" / f"{name}.nii.gz", np.zeros((8, 8, 3), np.float32))
        write_volume(tmp_path / "masks" / f"{name}.nii.gz", labels, mask_affine)
    message = ingest_error(tmp_path)
    assert "1 problem(s)" in message
    assert "shifted.nii.gz: the mask's voxel-to-world affine differs from its image shifted.nii.gz's: it puts " \
           "voxels up to 4 voxels away" in message
    assert "voxel sizes [1.0, 1.0, 3.0] vs [1.0, 1.0, 1.0] mm" in message


def test_volume_roi_of_another_shape(tmp_path):
    for folder in ("images", "masks", "rois"):
        (tmp_path / folder).mkdir()
    write_volume(tmp_path / "images" / "v.nii.gz", np.zeros((8, 6, 3), np.float32))
    write_volume(tmp_path / "masks" / "v.nii.gz", np.eye(8, 6, dtype=np.uint8)[..., None].repeat(3, 2))
    write_volume(tmp_path / "rois" / "v_roi.nii.gz", np.ones((6, 8, 3), np.uint8))
    assert ("v_roi.nii.gz: the region of interest has shape (6, 8, 3) but its image v.nii.gz has (8, 6, 3)"
            in ingest_error(tmp_path, rois=str(tmp_path / "rois")))


def test_stack_slice_count_mismatch(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "s.tif", np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "masks" / "s.tif", np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
    assert "s.tif: image is 3 slice(s) of 16x16 but its mask" in ingest_error(tmp_path)


def test_duplicate_case_ids(tmp_path, pairs):
    cv2.imwrite(str(pairs[0] / "c1.bmp"), np.zeros((32, 40), np.uint8))
    message = ingest_error(tmp_path)
    assert "duplicate case id 'c1'" in message and "c1.bmp" in message
    assert "mask without an image" not in message  # c1's mask has two images, not none


def test_a_mask_named_in_another_letter_case_is_pointed_out(tmp_path, pairs):
    (pairs[1] / "c1.png").rename(pairs[1] / "C1_Mask.png")
    assert "C1_Mask.png differ(s) in letter case only: rename to match" in ingest_error(tmp_path)


def test_duplicate_case_ids_after_slicing(tmp_path, pairs):
    tifffile.imwrite(pairs[0] / "c.tif", np.zeros((2, 32, 40), np.uint8), photometric="minisblack")
    tifffile.imwrite(pairs[1] / "c.tif", np.tile([[0, 255]], (2, 32, 20)).astype(np.uint8), photometric="minisblack")
    cv2.imwrite(str(pairs[0] / "c_s0.png"), np.zeros((32, 40), np.uint8))
    cv2.imwrite(str(pairs[1] / "c_s0.png"), np.zeros((32, 40), np.uint8))
    assert "duplicate case id 'c_s0'" in ingest_error(tmp_path)


def test_no_foreground_at_all(tmp_path):
    write_pairs(tmp_path, count=3, values=(0,))
    message = ingest_error(tmp_path, classes={"background": 0, "cell": 255})
    assert "no mask of the 3 cases holds any foreground" in message


def test_single_value_masks_without_declared_classes(tmp_path):
    write_pairs(tmp_path, count=3, values=(0,))
    assert "all masks hold the single class value [0]" in ingest_error(tmp_path)


def test_class_count_does_not_match_the_masks(tmp_path, pairs):
    assert "data.num_classes is 3 but the masks define 2 classes" in ingest_error(tmp_path, num_classes=3)


def test_declared_class_in_no_mask(tmp_path, pairs):
    message = ingest_error(tmp_path, classes={"background": 0, "cell": 255, "nucleus": 128})
    assert "class 'nucleus' (value 128) is declared in data.classes/colors but occurs in no mask" in message


def test_colour_mask_without_colour_table(tmp_path, pairs):
    cv2.imwrite(str(pairs[1] / "c0.png"), np.dstack([np.zeros((32, 40), np.uint8)] * 2 + [np.full((32, 40), 200,
                                                                                                  np.uint8)]))
    assert "c0.png: colour mask (H, W, 3) of 1 colour(s) (e.g. [[200, 0, 0]]); declare its class colours in " \
           "data.colors ({name: [r, g, b]}), set data.instances: true if each colour" in ingest_error(tmp_path)


def test_colour_outside_the_colour_table(tmp_path, pairs):
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    cv2.imwrite(str(pairs[1] / "c0.png"), rgb[..., ::-1])
    message = ingest_error(tmp_path, colors={"bg": [0, 0, 0], "cell": [255, 255, 255]})
    assert "c0.png: 1 pixels have colours [[10, 20, 30]] that are not in data.colors" in message
    assert "(a resized or anti-aliased mask), set data.lossy_masks: snap" in message


def test_manifest_file_missing_column(tmp_path):
    pd.DataFrame({"image": ["a.png"]}).to_csv(tmp_path / "list.csv", index=False)
    assert "missing column(s) ['mask']" in ingest_error(tmp_path, manifest=str(tmp_path / "list.csv"))


def test_manifest_file_bad_split_and_missing_file(tmp_path, pairs):
    pd.DataFrame({"image": ["images/c0.png", "images/gone.png"], "mask": ["masks/c0.png", "masks/c1.png"],
                  "split": ["training", "val"]}).to_csv(tmp_path / "list.csv", index=False)
    message = ingest_error(tmp_path, manifest=str(tmp_path / "list.csv"))
    assert "line 2 (c0.png): split 'training' is not one of" in message and "gone.png: no such file" in message


def test_roi_size_mismatch(tmp_path, pairs):
    rois = tmp_path / "rois"
    rois.mkdir()
    for index in range(4):
        cv2.imwrite(str(rois / f"c{index}.png"), np.ones((32, 40 if index else 41), np.uint8))
    assert "c0.png: region of interest is 32x41" in ingest_error(tmp_path, rois=str(rois))


def test_every_problem_in_one_message(tmp_path, pairs):
    (pairs[1] / "c0.png").unlink()
    (pairs[0] / "c1.png").write_bytes(b"")
    cv2.imwrite(str(pairs[1] / "c2.png"), np.zeros((30, 40), np.uint8))
    message = ingest_error(tmp_path)
    assert message.startswith("3 problem(s)") and all(f"c{i}.png" in message for i in range(3))


# ------------------------------------------------------------------------------------------------- split


def manifest_of(n_groups, per_group=2):
    return pd.DataFrame({"id": [f"v{g}_z{s}" for g in range(n_groups) for s in range(per_group)],
                         "group": [f"v{g}" for g in range(n_groups) for _ in range(per_group)]})


def test_split_fractions_not_summing_to_one():
    with pytest.raises(ValueError, match=r"split.train \+ split.val \+ split.test must be 1.*fix split.train/val/test"):
        split_cases(manifest_of(10), 0.6, 0.3, 0.3)


def test_split_leaving_an_empty_split():
    with pytest.raises(ValueError, match=r"3 case\(s\) in 1 group\(s\) left to draw from cannot be split further "
                                         r"and leave a split empty"):
        split_cases(manifest_of(1, 3), 0.5, 0.25, 0.25)


def test_more_folds_than_groups():
    with pytest.raises(ValueError, match="split.folds: 5 folds need at least 5 groups but .* has 4"):
        split_cases(manifest_of(5), 0.8, 0.0, 0.2, folds=5)


def test_fixed_split_without_split_column():
    with pytest.raises(ValueError, match="split.fixed: the manifest has no 'split' column"):
        split_cases(manifest_of(4), 0.7, 0.15, 0.15, fixed=True)


# -------------------------------------------------------------------------------------------- config level


def config_error(config) -> str:
    with pytest.raises(Exception) as error:
        validate_config(config, SCHEMA)
    return str(error.value)


def test_learning_rate_as_string_is_refused():
    assert "lr" in config_error({"train": {"lr": "1e-3"}})


def test_unknown_key_typo_is_refused():
    assert "mask_sufix" in config_error({"data": {"mask_sufix": "_m"}})


# ----------------------------------------------------------------------------------------- warnings only


def test_unbalanced_and_tiny_images_warn_and_go_on(tmp_path, caplog):
    images, masks = write_pairs(tmp_path, count=2, size=(16, 2000), values=(0,))
    cv2.imwrite(str(masks / "c0.png"), np.pad(np.full((1, 1), 255, np.uint8), ((0, 15), (0, 1999))))
    manifest, classes = build_manifest(str(images), str(masks))
    assert len(manifest) == 2
    table = data_warnings(manifest, classes)
    assert table["kind"].tolist() == ["unbalanced", "tiny_image", "tiny_image", "empty_mask"]  # c1: all 0
    with caplog.at_level(logging.WARNING, logger="unetflow"):
        log_warnings(table)
    assert "very unbalanced classes" in caplog.text and "2 tiny image(s) smaller than 32 px" in caplog.text


def test_a_class_in_one_mask_of_ten_is_named(tmp_path):
    images, masks = write_pairs(tmp_path, count=10)
    mask = cv2.imread(str(masks / "c4.png"), cv2.IMREAD_UNCHANGED)
    mask[:8, :8] = 128  # 5 % of the pixels of one mask: a class by the rules, but a rare one
    cv2.imwrite(str(masks / "c4.png"), mask)
    manifest, classes = build_manifest(str(images), str(masks))
    table = data_warnings(manifest, classes)
    assert table["kind"].tolist() == ["rare_class"] and table["file"].iloc[0].endswith("c4.png")
    assert table["detail"].iloc[0] == "'class_128' (value 128) in 1 of 10"


def test_images_with_an_exif_orientation_warn_that_it_is_not_applied(tmp_path, pairs, caplog):
    exif = Image.Exif()
    exif[0x0112] = 3  # shown turned by 180 degrees: same size, so nothing else can tell
    for index in (1, 2):
        (pairs[0] / f"c{index}.png").unlink()
        Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(pairs[0] / f"c{index}.jpg", exif=exif.tobytes())
    manifest, classes = build_manifest(pairs[0], pairs[1], channels=1)
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "2 image(s) with an EXIF orientation tag (e.g. images/c1.jpg: 3, images/c2.jpg: 3)" in caplog.text


def test_many_warnings_of_a_kind_are_one_summary_line_and_every_row_in_the_table(tmp_path, caplog):
    images, masks = write_pairs(tmp_path, count=12, size=(20, 24))
    for mask in list(masks.iterdir()):
        cv2.imwrite(str(mask.with_suffix(".jpg")), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED),
                    [cv2.IMWRITE_JPEG_QUALITY, 60])
        mask.unlink()
    manifest, classes = build_manifest(str(images), str(masks), classes={"bg": 0, "fg": 255}, lossy_masks="snap")
    table = data_warnings(manifest, classes)
    assert list(table.columns) == ["kind", "file", "value", "detail"]
    assert (table["kind"] == "tiny_image").sum() == 12 and (table["kind"] == "snapped_pixels").sum() == 12
    assert sorted(table.loc[table["kind"] == "snapped_pixels", "file"]) == sorted(manifest["mask_path"])
    assert table.loc[table["kind"] == "snapped_pixels", "value"].sum() == manifest["snapped_pixels"].sum()
    with caplog.at_level(logging.WARNING, logger="unetflow"):
        log_warnings(table, "results/data/warnings.parquet")
    assert len(caplog.records) == 2
    assert "12 tiny image(s)" in caplog.text and "of 12 lossy mask(s) snapped" in caplog.text
    assert caplog.text.count("(all 12 in results/data/warnings.parquet)") == 2
