"""Pairing and validation of a data set: every problem reported at once, naming its file."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, build_manifest, write_pairs
from unetflow.data.data_warnings import data_warnings
from unetflow.data.ingest import DataValidationError
from unetflow.data.pairing import subfolder_note, unread_images_note
from unetflow.data.preprocess import to_channels
from unetflow.data.split import split_cases
from unetflow.io.sources import read_source_image, read_source_mask, source_spacing, units


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
    manifest, _ = build_manifest(str(images / "c[01].png"), str(masks / "c[01].png"))
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


def test_no_files_matched_names_the_setting(tmp_path, monkeypatch):
    with pytest.raises(DataValidationError, match="no image files matched data.images"):
        build_manifest(str(tmp_path / "nothing"), str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataValidationError, match=f"'nothing' \\(a relative path: read from {tmp_path}\\)"):
        build_manifest("nothing", str(tmp_path))


def test_a_folder_of_subfolders_names_the_glob_that_reads_them(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    for site, names in (("site_a", ["c0.png", "c1.png"]), ("site_b", ["c2.png"])):
        (images / site).mkdir()
        for name in names:
            (images / name).rename(images / site / name)
    (images / "site_a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataValidationError, match="no image files matched") as error:
        build_manifest(str(images), str(masks))
    assert f"3 image file(s) in subfolders of {images} are not read (a folder names its direct children only): " \
           f"site_a (2), site_b (1); if they are cases too, write '{images / '**' / '*'}'" in str(error.value)
    assert len(build_manifest(str(images / "**" / "*"), str(masks))[0]) == 3
    assert subfolder_note(str(masks)) == ""
    (masks / ".thumbnails").mkdir()
    cv2.imwrite(str(masks / ".thumbnails" / "c0.png"), np.zeros((4, 4), np.uint8))
    assert subfolder_note(str(masks)) == ""  # hidden folders are no cases


def test_single_class_data_set_is_rejected(tmp_path):
    images, masks = write_pairs(tmp_path, count=2, values=(0,))
    with pytest.raises(DataValidationError, match="single class value"):
        build_manifest(str(images), str(masks))


def test_inconsistent_channels_are_reported(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    cv2.imwrite(str(images / "c1.png"), np.zeros((32, 40, 3), np.uint8) + [0, 0, 255])
    with pytest.raises(DataValidationError, match="c1.png: 3 channel\\(s\\) where 2 of 3 of the data set's images"):
        build_manifest(str(images), str(masks))


def test_a_grey_picture_saved_as_rgb_is_read_as_grey_among_grey_images(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    grey = cv2.imread(str(images / "c1.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(images / "c1.png"), np.repeat(grey[..., None], 3, axis=2))
    manifest, classes = build_manifest(str(images), str(masks))
    assert manifest["read_as_grey"].tolist() == [False, True, False]
    assert manifest["channels"].tolist() == [1, 3, 1] and manifest["input_channels"].tolist() == [1, 1, 1]
    warning = data_warnings(manifest, classes).query("kind == 'read_as_grey'")
    assert warning["file"].map(lambda path: Path(path).name).tolist() == ["c1.png"]
    np.testing.assert_allclose(to_channels(read_source_image(manifest.iloc[1]), 1)[0, 0], grey, atol=1e-3)
    cv2.imwrite(str(images / "c0.png"), np.repeat(grey[..., None], 3, axis=2))  # most saved as RGB: grey still
    manifest, _ = build_manifest(str(images), str(masks))
    assert manifest["input_channels"].tolist() == [1, 1, 1] and manifest["read_as_grey"].sum() == 2
    for index in (0, 2):  # among colour images it stays a colour image
        cv2.imwrite(str(images / f"c{index}.png"), np.random.default_rng(index).integers(0, 256, (32, 40, 3),
                                                                                         dtype=np.uint8))
    manifest, _ = build_manifest(str(images), str(masks))
    assert manifest["input_channels"].tolist() == [3, 3, 3] and not manifest["read_as_grey"].any()


def write_volume_pair(folder, name, shape=(20, 24, 5), seed=0):
    """A random float image volume and an integer label volume (two classes in every slice)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 2, shape).astype(np.uint8)
    nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])),
             folder / "images" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2.0, 3.0, 1.0])), folder / "masks" / f"{name}.nii.gz")
    return labels


@pytest.mark.parametrize("axis", [0, 2])
def test_a_volume_is_one_source_read_with_its_slice_axis_first(tmp_path, axis):
    labels = write_volume_pair(tmp_path, "ct1")
    manifest, _ = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), slice_axis=axis)
    shape = [(20, 24, 5)[a] for a in (axis, *(a for a in range(3) if a != axis))]
    row = manifest.iloc[0].to_dict()
    assert len(manifest) == 1 and row["id"] == "ct1" and row["group"] == "ct1" and row["kind"] == "volume"
    assert [row["slices"], row["height"], row["width"]] == shape and row["slice_axis"] == axis
    assert np.array_equal(read_source_mask(row), np.moveaxis(labels, axis, 0))
    assert read_source_image(row).shape == (1, *shape)
    assert source_spacing(row) == {0: [2.0, 2.0, 3.0], 2: [3.0, 2.0, 2.0]}[axis]  # array order: slice axis first
    assert units(row) == [("ct1", slice(0, shape[0]))]


def test_a_tiff_stack_is_one_source_of_pages(tmp_path):
    import tifffile
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "st.tif", np.zeros((3, 32, 40), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "masks" / "st.tif", np.tile([[0, 1]], (3, 32, 20)).astype(np.uint8),
                     photometric="minisblack")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    row = manifest.iloc[0].to_dict()
    assert len(manifest) == 1 and row["kind"] == "stack" and row["slices"] == 3 and row["group"] == "st"
    assert [name for name, _ in units(row)] == ["st_s0", "st_s1", "st_s2"]  # each page scored on its own
    assert read_source_image(row).shape == (1, 3, 32, 40) and source_spacing(row) is None
    assert classes["value"].tolist() == [0, 1]


def test_colour_masks_are_mapped_through_the_colour_table(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[:, 20:] = (255, 0, 0)
    rgb[:5] = (0, 0, 255)
    for mask in masks.iterdir():
        cv2.imwrite(str(mask), rgb[..., ::-1])
    manifest, classes = build_manifest(str(images), str(masks),
                                       colors={"bg": [0, 0, 0], "red": [255, 0, 0], "blue": [0, 0, 255]})
    assert classes["name"].tolist() == ["bg", "red", "blue"] and classes["value"].tolist() == [0, 1, 2]
    assert manifest["label_values"].iloc[0] == [0, 1, 2]


def test_jpeg_mask_with_snap_counts_changed_pixels(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    for mask in list(masks.iterdir()):
        cv2.imwrite(str(mask.with_suffix(".jpg")), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED),
                    [cv2.IMWRITE_JPEG_QUALITY, 60])
        mask.unlink()
    manifest, _ = build_manifest(str(images), str(masks), classes={"bg": 0, "fg": 255}, lossy_masks="snap")
    assert (manifest["snapped_pixels"] > 0).all()
    assert all(set(v) <= {0, 255} for v in manifest["label_values"])


def test_ignore_label_is_a_flagged_row_of_the_class_table(tmp_path):
    images, masks = write_pairs(tmp_path, count=2, values=(0, 1, 9))
    _, classes = build_manifest(str(images), str(masks), ignore_label=9)
    assert classes.loc[classes["ignore"], ["index", "value"]].values.tolist() == [[255, 9]]
    assert classes.loc[~classes["ignore"], "value"].tolist() == [0, 1]


def test_prefix_and_manifest_file_pairing(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    for mask in masks.iterdir():
        mask.rename(masks / f"lab_{mask.name}")
    manifest, _ = build_manifest(str(images), str(masks), mask_prefix="lab_")
    assert manifest["mask_path"].str.contains("lab_c").all()
    pd.DataFrame({"image": ["images/c0.png", "images/c1.png"], "mask": ["masks/lab_c0.png", "masks/lab_c1.png"],
                  "group": ["p1", "p1"], "split": ["train", "val"]}).to_csv(tmp_path / "list.csv", index=False)
    manifest, _ = build_manifest(manifest=str(tmp_path / "list.csv"))
    assert manifest["id"].tolist() == ["c0", "c1"] and manifest["split"].tolist() == ["train", "val"]
    assert (manifest["group"] == "p1").all()
    pd.DataFrame({"image": ["images/c0.png", "images/c1.png"], "mask": ["masks/lab_c0.png"] * 2}).to_csv(
        tmp_path / "twice.csv", index=False)
    with pytest.raises(DataValidationError, match=r"lab_c0.png is listed for 2 images \(c0.png, c1.png\)"):
        build_manifest(manifest=str(tmp_path / "twice.csv"))


def test_a_manifest_s_own_columns_are_kept_to_split_by(tmp_path):
    write_pairs(tmp_path, count=8)
    pd.DataFrame({"image": [f"images/c{i}.png" for i in range(8)], "mask": [f"masks/c{i}.png" for i in range(8)],
                  "patient": [f"p{i // 2}" for i in range(8)], "site": ["a", "b"] * 4, "id": range(8),
                  "note": ["", "x"] * 4}).to_csv(tmp_path / "cases.csv", index=False)
    manifest, _ = build_manifest(manifest=str(tmp_path / "cases.csv"))
    assert manifest["patient"].tolist() == [f"p{i // 2}" for i in range(8)]
    assert manifest["note"].isna().tolist()[:2] == [True, False]  # an empty cell is missing
    assert manifest["id"].tolist() == [f"c{i}" for i in range(8)]  # ingest's own columns stay ingest's
    table = split_cases(manifest, 0.5, 0.25, 0.25, group_by="patient").set_index("id")
    assert (table.groupby("patient")["split"].nunique() == 1).all()
    folds = split_cases(manifest, 0.75, 0.0, 0.25, group_by="patient", folds=3, stratify_by="site")
    assert sorted(folds.loc[folds["split"] != "test", "fold"].unique()) == [0, 1, 2]


def test_rois_are_paired_by_stem(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    rois = tmp_path / "rois"
    rois.mkdir()
    for index in range(2):
        cv2.imwrite(str(rois / f"c{index}_roi.png"), np.ones((32, 40), np.uint8))
    manifest, _ = build_manifest(str(images), str(masks), rois=str(rois))
    assert manifest["roi_path"].str.endswith("_roi.png").all()


def test_images_and_masks_in_one_folder_and_recursive_globs(tmp_path):
    images, masks = write_pairs(tmp_path / "flat", count=3)
    shared = tmp_path / "nested" / "site_a" / "scans"
    shared.mkdir(parents=True)
    for image in images.iterdir():
        image.rename(shared / image.name)
        (masks / image.name).rename(shared / f"{image.stem}_mask.png")
    manifest, _ = build_manifest(str(shared), str(shared))
    assert manifest["id"].tolist() == ["c0", "c1", "c2"] and manifest["mask_path"].str.endswith("_mask.png").all()
    nested = tmp_path / "nested" / "**"
    manifest, _ = build_manifest(str(nested / "c?.png"), str(nested / "*_mask.png"))
    assert manifest["id"].tolist() == ["c0", "c1", "c2"]
    manifest, _ = build_manifest(str(nested / "c?.png"), str(nested / "*"))  # the folders too: no object folders
    assert manifest["id"].tolist() == ["c0", "c1", "c2"]
    (shared / "c3.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBP")  # a format unetflow does not read
    assert unread_images_note(str(nested / "*"), "data.images") == (
        "1 file(s) that data.images names are in formats unetflow does not read, so left out (c3.webp): convert "
        "them to PNG or TIFF (volumes to NIfTI)")



def test_sites_repeating_file_names_pair_by_their_folders(tmp_path):
    write_pairs(tmp_path / "siteA", count=3)
    write_pairs(tmp_path / "siteB", count=2, seed=1)  # c0, c1 again
    manifest, _ = build_manifest(str(tmp_path / "site*/images/*.png"), str(tmp_path / "site*/masks/*.png"))
    assert sorted(manifest["id"]) == ["c2", "siteA_c0", "siteA_c1", "siteB_c0", "siteB_c1"]
    site = manifest.set_index("id")["mask_path"].map(lambda path: Path(path).parts[-3])
    assert site.to_dict() == {"siteA_c0": "siteA", "siteA_c1": "siteA", "siteB_c0": "siteB", "siteB_c1": "siteB",
                              "c2": "siteA"}
    assert (manifest["image_path"].map(lambda path: Path(path).parts[-3]) == site.values).all()

    with pytest.raises(DataValidationError) as error:  # the masks of site A only
        build_manifest(str(tmp_path / "site*/images/*.png"), str(tmp_path / "siteA/masks/*.png"))
    assert str(error.value).startswith("2 problem(s)") and \
        f"{tmp_path / 'siteB/images/c1.png'}: no mask c1 + a mask suffix in a folder of siteB (case siteB_c1)" in \
        str(error.value)
    for folder in ("siteA", "siteB"):  # fields of view, named as the images
        (tmp_path / folder / "fov").mkdir()
        for image in (tmp_path / folder / "images").iterdir():
            cv2.imwrite(str(tmp_path / folder / "fov" / image.name), np.ones((32, 40), np.uint8))
    manifest, _ = build_manifest(str(tmp_path / "site*/images/*.png"), str(tmp_path / "site*/masks/*.png"),
                                 rois=str(tmp_path / "site*/fov/*.png"))
    assert (manifest["roi_path"].map(lambda path: Path(path).parts[-3]) == site.values).all()
    (tmp_path / "siteB/fov/c1.png").unlink()  # its own field of view missing: never site A's
    with pytest.raises(DataValidationError, match=r"siteB/images/c1.png: no region-of-interest file\(s\) in data.rois "
                                                  r"'.*' in a folder of siteB \(looked for 'c1' .*\); found only "
                                                  r"outside the image's folders \(e.g. .*siteA/fov/c1.png\)"):
        build_manifest(str(tmp_path / "site*/images/*.png"), str(tmp_path / "site*/masks/*.png"),
                       rois=str(tmp_path / "site*/fov/*.png"))
    manifest, _ = build_manifest(str(tmp_path / "site*/images/*.png"), str(tmp_path / "siteA/masks/*.png"),
                                 unpaired="skip")
    assert sorted(manifest["id"]) == ["c2", "siteA_c0", "siteA_c1"]
    cv2.imwrite(str(tmp_path / "siteA/images/c0.tif"), np.zeros((32, 40), np.uint8))  # one stem twice in a folder
    with pytest.raises(DataValidationError, match=r"duplicate case id 'c0': .*siteA/images/c0.png, .*siteA/images/"
                                                  r"c0.tif, .*siteB/images/c0.png have the same stem and no folders"):
        build_manifest(str(tmp_path / "site*/images/*"), str(tmp_path / "site*/masks/*.png"))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_one_voxel_thick_is_one_slice_whatever_the_slice_axis(tmp_path, axis):
    import nibabel as nib
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    nib.save(nib.Nifti1Image(np.zeros((12, 10), np.float32), np.eye(4)), tmp_path / "images" / "xray.nii.gz")
    nib.save(nib.Nifti1Image(np.eye(12, 10, dtype=np.uint8), np.eye(4)), tmp_path / "masks" / "xray.nii.gz")
    manifest, _ = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), slice_axis=axis)
    assert manifest[["id", "slices", "height", "width", "slice_axis"]].values.tolist() == [["xray", 1, 12, 10, 2]]


def test_a_mask_saved_inverted_and_a_blank_image_are_named(tmp_path):
    images, masks = write_pairs(tmp_path, count=5, size=(40, 40), values=(0,))
    for index in range(5):
        mask = np.zeros((40, 40), np.uint8)
        mask[10:18, 10:18] = 255  # 4 % foreground
        cv2.imwrite(str(masks / f"c{index}.png"), 255 - mask if index == 3 else mask)
    manifest, classes = build_manifest(str(images), str(masks))
    table = data_warnings(manifest, classes)
    assert table["kind"].tolist() == ["inverted"] and table["file"].iloc[0].endswith("c3.png")
    assert table["detail"].iloc[0] == "96% foreground against a median of 4%"
    cv2.imwrite(str(images / "c1.png"), np.full((40, 40), 17, np.uint8))  # a blank export
    table = data_warnings(*build_manifest(str(images), str(masks)))
    assert table["kind"].tolist() == ["inverted", "constant_image"] and table["file"].iloc[1].endswith("c1.png")


@pytest.mark.parametrize("error,traced", [("DataValidationError('1 problem(s) in the data set')", False),
                                          ("RuntimeError('a bug')", True)])
def test_a_failed_stage_logs_a_named_problem_by_its_message_and_a_bug_with_its_traceback(tmp_path, error, traced):
    script = (f"from unetflow.data.pairing import DataValidationError\nfrom unetflow.logs import stage_logger\n"
              f"stage_logger({str(tmp_path / 'stage.log')!r})\nraise {error}\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(REPO / "workflow" / "scripts")})
    logged = (tmp_path / "stage.log").read_text()
    assert result.returncode == 1 and error.split("(")[0] + ": " + error.split("'")[1] in logged
    assert ("Traceback" in logged) == traced and ("Traceback" in result.stderr) == traced


def test_a_manifest_names_sites_repeating_file_names_and_refuses_one_stem_twice_in_a_folder(tmp_path):
    for site in ("siteA", "siteB"):
        write_pairs(tmp_path / site, count=2)
    rows = [f"{site}/images/c{i}.png,{site}/masks/c{i}.png" for site in ("siteA", "siteB") for i in range(2)]
    (tmp_path / "cases.csv").write_text("\n".join(["image,mask", *rows]) + "\n")
    manifest, _ = build_manifest(manifest=str(tmp_path / "cases.csv"))
    assert manifest["id"].tolist() == ["siteA_c0", "siteA_c1", "siteB_c0", "siteB_c1"]

    for folder, name in (("images", "c0.tif"), ("masks", "c0_b.png")):
        cv2.imwrite(str(tmp_path / "siteA" / folder / name), cv2.imread(str(tmp_path / "siteA" / folder / "c0.png"),
                                                                        cv2.IMREAD_UNCHANGED))
    (tmp_path / "cases.csv").write_text("\n".join(["image,mask", *rows, "siteA/images/c0.tif,siteA/masks/c0_b.png"]))
    with pytest.raises(DataValidationError) as error:
        build_manifest(manifest=str(tmp_path / "cases.csv"))
    assert str(error.value).startswith("1 problem(s)") and "duplicate case id 'c0' (" + ", ".join(
        str(tmp_path / name) for name in ("siteA/images/c0.png", "siteA/images/c0.tif", "siteB/images/c0.png")
    ) + ")" in str(error.value)


def test_a_mask_turned_by_90_degrees_is_said_to_be(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    cv2.imwrite(str(masks / "c1.png"), cv2.imread(str(masks / "c1.png"), cv2.IMREAD_UNCHANGED).T.copy())
    with pytest.raises(DataValidationError, match=r"c1.png is 1 slice\(s\) of 40x32 \(height x width\); the mask is "
                                                  r"the image's size turned by 90 degrees"):
        build_manifest(str(images), str(masks))


def test_many_files_with_the_same_problem_are_one_line_naming_a_few(tmp_path):
    images, masks = write_pairs(tmp_path, count=6)
    for mask in sorted(masks.iterdir()):  # every mask saved as JPEG
        cv2.imwrite(str(mask.with_suffix(".jpg")), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED))
        mask.unlink()
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(images), str(masks))
    lines = str(error.value).splitlines()
    assert lines[0] == "6 problem(s) in the data set (the files of one problem on one line):" and len(lines) == 2
    assert lines[1].startswith(f"  - 6 files ({masks / 'c0.jpg'}, masks/c1.jpg, masks/c2.jpg, masks/c3.jpg, "
                               f"masks/c4.jpg, masks/c5.jpg): JPEG masks are lossy")
