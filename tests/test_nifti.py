"""NIfTI volumes (unetflow.io.nifti): values, affine and header kept; labels written in the reference's grid; 4D,
NaN and unreadable volumes refused naming the file; a label volume stored in another orientation read reoriented;
volumes laid out as nnU-Net (with its dataset.json) and KiTS lay them out, paired."""

import dataclasses
import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_infer import make_package

from conftest import build_manifest
from unetflow.data.data_warnings import data_warnings, log_warnings, volume_orientation_rows
from unetflow.data.dataset_json import regions_hint
from unetflow.data.layouts import without_channel_suffix
from unetflow.data.pairing import DataValidationError, data_files
from unetflow.infer.infer import check_notes, orientation_note
from unetflow.infer.package import load_package
from unetflow.io.formats import VOLUME_SUFFIXES, ImageReadError
from unetflow.io.images import image_info
from unetflow.io.nifti import axis_codes, read_volume, write_volume
from unetflow.io.sources import read_source_mask, read_source_roi, to_array_order

AFFINE = np.array([[0.0, -0.8, 0, 90], [0.7, 0, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]])


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
def test_volume_round_trip_keeps_values_and_affine(tmp_path, suffix):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 20
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / f"ct{suffix}")
    volume, image = read_volume(tmp_path / f"ct{suffix}")
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume, data)
    np.testing.assert_allclose(image.affine, AFFINE)
    assert image_info(tmp_path / f"ct{suffix}") == dict(height=4, width=5, channels=1, dtype="int16", depth=3)

    labels = (volume > 0).astype(np.int64) * 2
    write_volume(tmp_path / f"seg{suffix}", labels, image)
    written = nib.load(tmp_path / f"seg{suffix}")
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), labels)
    np.testing.assert_allclose(written.affine, AFFINE)
    assert written.header.get_zooms() == image.header.get_zooms()


def test_labels_of_a_2d_nifti_are_written_in_its_stored_shape_without_its_display_fields(tmp_path):
    image = nib.Nifti1Image(np.zeros((6, 5), np.float32), AFFINE)
    image.header["cal_min"], image.header["cal_max"], image.header["descrip"] = -1000, 2000, b"CT scan"
    nib.save(image, tmp_path / "xray.nii.gz")
    volume, loaded = read_volume(tmp_path / "xray.nii.gz")
    assert volume.shape == (6, 5, 1)
    write_volume(tmp_path / "seg.nii.gz", np.ones((6, 5, 1), np.uint8), loaded)
    written = nib.load(tmp_path / "seg.nii.gz")
    assert written.shape == (6, 5) and np.asarray(written.dataobj).sum() == 30
    assert (written.header["cal_min"], written.header["cal_max"], written.header["descrip"]) == (0, 0, b"")


def test_scaled_volume_reads_as_float32(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), AFFINE)
    image.header.set_slope_inter(0.5, -10)
    nib.save(image, tmp_path / "scaled.nii")
    volume, _ = read_volume(tmp_path / "scaled.nii")
    assert volume.dtype == np.float32 and image_info(tmp_path / "scaled.nii")["dtype"] == "float32"
    np.testing.assert_allclose(volume, np.arange(24).reshape(2, 3, 4) * 0.5 - 10)


def test_trailing_singleton_axis_is_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3, 1), np.float32), AFFINE), tmp_path / "one.nii.gz")
    assert read_volume(tmp_path / "one.nii.gz")[0].shape == (4, 5, 3)


def test_a_4th_axis_is_channels_of_an_image_but_refused_for_labels_and_nan_volumes_are_rejected(tmp_path):
    channels = np.random.default_rng(0).random((4, 5, 3, 2)).astype(np.float32)  # two modalities, as MSD stores them
    nib.save(nib.Nifti1Image(channels, AFFINE), tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "two.nii.gz", channels=True)[0], channels)
    with pytest.raises(ImageReadError, match="two.nii.gz: a 4D volume of shape \\(4, 5, 3, 2\\) where labels are read"):
        read_volume(tmp_path / "two.nii.gz")
    nib.save(nib.Nifti1Image(channels[:, :, :, None], AFFINE), tmp_path / "vector.nii.gz")  # ITK's X, Y, Z, 1, C
    np.testing.assert_array_equal(read_volume(tmp_path / "vector.nii.gz", channels=True)[0], channels)
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3, 2, 2), np.float32), AFFINE), tmp_path / "five.nii.gz")
    with pytest.raises(ImageReadError, match="five.nii.gz: a 5D volume"):
        read_volume(tmp_path / "five.nii.gz", channels=True)
    data = np.zeros((4, 5, 3), np.float32)
    data[1, 2, 0] = np.nan
    data[0, 0, 2] = np.inf
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "nan.nii")
    with pytest.raises(ImageReadError, match="2 voxels are NaN or Inf"):
        read_volume(tmp_path / "nan.nii")


def test_volume_errors_name_the_file(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.nii.gz"):
        read_volume(tmp_path / "empty.nii.gz")
    (tmp_path / "cut.nii.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00")
    with pytest.raises(ImageReadError, match="cut.nii.gz"):
        read_volume(tmp_path / "cut.nii.gz")
    with pytest.raises(ImageReadError, match="unsupported suffix"):
        read_volume(tmp_path / "slice.png")


def test_a_label_volume_stored_in_another_orientation_is_read_reoriented_and_said(tmp_path, caplog):
    for folder in ("images", "masks", "rois"):
        (tmp_path / folder).mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 3), np.float32), AFFINE), tmp_path / "images" / "v.nii.gz")
    labels = np.zeros((8, 6, 3), np.uint8)
    labels[1:3, 2:5, 1] = 1  # on the image's grid, whose axes run (-y, x, z)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(labels, AFFINE))  # axes swapped and reversed into RAS
    assert canonical.shape == (6, 8, 3)
    nib.save(canonical, tmp_path / "masks" / "v.nii.gz")
    roi = np.zeros((8, 6, 3), np.uint8)
    roi[:5, 1:] = 1
    nib.save(nib.as_closest_canonical(nib.Nifti1Image(roi, AFFINE)), tmp_path / "rois" / "v_roi.nii.gz")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), rois=str(tmp_path / "rois"))
    row = manifest.iloc[0].to_dict()
    np.testing.assert_array_equal(read_source_mask(row), to_array_order(labels, row["slice_axis"]))
    np.testing.assert_array_equal(read_source_roi(row), to_array_order(roi > 0, row["slice_axis"]))
    assert row["reoriented"]
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "1 label volume(s) stored in another orientation than their images (e.g. masks/v.nii.gz)" in caplog.text
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "masks" / "v.nii.gz")  # as the image is stored
    assert not build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))[0]["reoriented"].iloc[0]


def test_nnunet_s_raw_layout_pairs_channel_files_with_their_case_and_refuses_several_channels(tmp_path):
    volume = np.zeros((8, 8, 4), np.int16)
    volume[2:6, 2:6] = 1
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    for case in ("la_003", "la_004"):
        nib.save(nib.Nifti1Image(volume * 100, AFFINE), tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(volume.astype(np.uint8), AFFINE), tmp_path / "labelsTr" / f"{case}.nii.gz")
    manifest, classes = build_manifest(str(tmp_path / "imagesTr"), str(tmp_path / "labelsTr"))
    assert manifest["id"].tolist() == ["la_003", "la_004"]
    assert manifest["mask_path"].str.endswith(("la_003.nii.gz", "la_004.nii.gz")).all()
    assert classes["name"].tolist() == ["background", "foreground"]
    for labels in ({"background": 0, "left atrium": 1}, {"0": "background", "1": "left atrium"}):  # v2, Decathlon
        (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
        _, classes = build_manifest(str(tmp_path / "imagesTr"), str(tmp_path / "labelsTr"))
        assert classes["name"].tolist() == ["background", "left atrium"] and classes["value"].tolist() == [0, 1]
    regions = {"background": 0, "whole": [1], "left atrium": 1}  # nnU-Net's region labels: no classes, a hint
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": regions, "file_ending": ".nii.gz"}))
    assert regions_hint(regions) == "; its labels are nnU-Net regions: to train them so, set data.regions: {whole: " \
        "[1], left atrium: [1]}"
    assert build_manifest(str(tmp_path / "imagesTr"), str(tmp_path / "labelsTr"))[1]["name"].tolist() == [
        "background", "foreground"]
    assert str(tmp_path / "dataset.json") in data_files({"images": str(tmp_path / "imagesTr"),
                                                         "masks": str(tmp_path / "labelsTr")})  # an input of ingest

    nib.save(nib.Nifti1Image(volume * 50, AFFINE), tmp_path / "imagesTr" / "la_004_0001.nii.gz")  # a second channel
    with pytest.raises(DataValidationError, match=r"case 'la_004' has 2 channel files .*la_004_0001.nii.gz: one "
                                                  r"file per channel .* stack them into one 4D NIfTI") as error:
        build_manifest(str(tmp_path / "imagesTr"), str(tmp_path / "labelsTr"))
    assert "la_003" not in str(error.value)


def test_a_folder_per_case_pairs_by_folder_and_names_the_case_by_it(tmp_path):
    volume = np.zeros((8, 8, 4), np.uint8)
    volume[2:6, 2:6] = 1
    for case in ("case_00000", "case_00001", "case_00002"):
        (tmp_path / "kits" / case).mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume.astype(np.int16) * 90, AFFINE), tmp_path / "kits" / case / "imaging.nii.gz")
        if case != "case_00002":
            nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "kits" / case / "segmentation.nii.gz")
    images, masks = str(tmp_path / "kits/*/imaging.nii.gz"), str(tmp_path / "kits/*/segmentation.nii.gz")
    with pytest.raises(DataValidationError, match=r"case_00002/imaging.nii.gz: no mask named segmentation.nii.gz in a "
                                                  r"folder of its case \(case_00002\)") as error:
        build_manifest(images, masks)
    assert "case_00001" not in str(error.value)
    assert build_manifest(images, masks, unpaired="skip")[0]["id"].tolist() == ["case_00000", "case_00001"]

    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "kits/case_00002/segmentation.nii.gz")
    manifest, _ = build_manifest(images, masks)
    assert manifest["id"].tolist() == ["case_00000", "case_00001", "case_00002"]
    assert [path.split("/")[-2] for path in manifest["mask_path"]] == manifest["id"].tolist()


def test_images_to_segment_named_as_nnunet_s_test_images_are_named_by_their_cases():
    assert without_channel_suffix(["la_005_0000", "site/la_006_0000"]) == ["la_005", "site/la_006"]
    for names in (["la_005_0000", "la_006"], ["la_005_0000", "la_005_0001"], ["scan_0001"]):
        assert without_channel_suffix(names) == names  # not every name that of a first channel


def test_images_named_with_a_suffix_beside_their_masks_in_one_folder_pair_as_their_cases(tmp_path):
    volume = np.zeros((8, 8, 4), np.uint8)
    volume[2:6, 2:6] = 1
    (tmp_path / "all").mkdir()
    for case in ("ct01", "ct02"):
        nib.save(nib.Nifti1Image(volume.astype(np.int16) * 90, AFFINE), tmp_path / "all" / f"{case}_image.nii.gz")
        nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "all" / f"{case}_label.nii.gz")
    manifest, _ = build_manifest(str(tmp_path / "all"), str(tmp_path / "all"))
    assert manifest["id"].tolist() == ["ct01", "ct02"] and manifest["mask_path"].str.endswith("_label.nii.gz").all()
    (tmp_path / "all" / "ct02_label.nii.gz").rename(tmp_path / "all" / "ct02_Label.nii.gz")
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(tmp_path / "all"), str(tmp_path / "all"))
    assert f"{tmp_path / 'all' / 'ct02_image.nii.gz'}: no mask found" in str(error.value)
    assert "differ(s) in letter case only" not in str(error.value)  # a file is no near miss of itself


def test_a_volume_whose_pixdim_disagrees_with_its_affine_is_named_in_a_warning(tmp_path, caplog):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    affine = np.diag([0.8, 0.8, 1.25, 1.0])
    for case in ("ok", "odd"):
        image = nib.Nifti1Image(np.arange(256, dtype=np.int16).reshape(8, 8, 4), affine)
        if case == "odd":
            image.header.set_zooms((1.0, 1.0, 1.0))  # pixdim written apart from the sform
        nib.save(image, tmp_path / "images" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image((np.arange(256).reshape(8, 8, 4) % 2).astype(np.uint8), affine),
                 tmp_path / "masks" / f"{case}.nii.gz")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert manifest.set_index("id")["spacing_mismatch"].to_dict() == {"odd": True, "ok": False}
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "1 volume(s) whose header's pixdim" in caplog.text and "odd.nii.gz" in caplog.text


def test_a_missing_modality_and_an_empty_mask_are_named_in_warnings_and_at_inference(tmp_path, caplog):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    rng = np.random.default_rng(0)
    for case in ("a", "b", "c"):
        modalities = rng.normal(100, 10, (8, 8, 4, 2)).astype(np.float32)
        modalities[..., 1] *= case != "b"  # case b: its second modality missing, all zeros
        nib.save(nib.Nifti1Image(modalities, AFFINE), tmp_path / "images" / f"{case}.nii.gz")
        labels = (np.arange(256).reshape(8, 8, 4) % 2 * (case != "c")).astype(np.uint8)  # case c: no foreground
        nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "masks" / f"{case}.nii.gz")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "1 image(s) with a channel of a single value (e.g. images/b.nii.gz: channel(s) [1])" in caplog.text
    assert "1 mask(s) with no foreground, background only (e.g. masks/c.nii.gz)" in caplog.text
    table = pd.DataFrame({"image_path": ["a.nii.gz", "b.nii.gz"], "exif_orientation": 1, "constant": False,
                          "constant_channels": [[], [1]]})
    assert check_notes(table) == ["1 image(s) (b.nii.gz: [1]) have a channel of a single value (a modality missing, "
                                  "all zeros?): the model uses every channel, so their masks may be wrong"]


def test_brats_2020_files_per_modality_are_refused_with_how_to_stack_them(tmp_path):
    volume = np.zeros((8, 8, 4), np.int16)
    volume[2:6, 2:6] = 1
    (tmp_path / "BraTS20_001").mkdir()
    for modality in ("t1", "t1ce", "t2", "flair"):
        nib.save(nib.Nifti1Image(volume * 100, AFFINE), tmp_path / "BraTS20_001" / f"BraTS20_001_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(volume.astype(np.uint8), AFFINE), tmp_path / "BraTS20_001" / "BraTS20_001_seg.nii.gz")
    files = str(tmp_path / "*" / "*.nii.gz")
    with pytest.raises(DataValidationError, match=r"(?s)1 problem\(s\).*case 'BraTS20_001' has 4 channel files .* "
                                                  r"BraTS store them\); .* stack them into one 4D NIfTI per case"):
        build_manifest(files, files)


def test_volumes_stored_in_another_orientation_than_most_are_named_at_ingest_and_at_inference(tmp_path):
    ras, paths = np.diag([1.0, 1.0, 3.0, 1.0]), {}
    for name, affine in {"a": ras, "b": ras, "c": np.diag([-1.0, 1.0, 3.0, 1.0]),  # c: LAS, mirrored
                         "d": ras[:, [2, 0, 1, 3]]}.items():  # d: the slices stored first
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine), paths[name])
    assert [axis_codes(path) for path in paths.values()] == ["RAS", "RAS", "LAS", "SRA"]
    manifest = pd.DataFrame({"id": list(paths), "kind": "volume", "image_path": [str(p) for p in paths.values()]})
    rows = pd.DataFrame(volume_orientation_rows(manifest))
    assert rows["file"].tolist() == [str(paths["c"]), str(paths["d"])]
    assert rows["detail"].tolist() == ["LAS where most are RAS", "SRA where most are RAS"]
    package = load_package(make_package(tmp_path))
    trained = dataclasses.replace(package, training_data=dict(package.training_data, axis_codes="RAS"))
    table = manifest.assign(axis_codes=["RAS", "RAS", "LAS", "SRA"])
    assert orientation_note(table, trained).startswith("2 image(s) (c.nii.gz: LAS, d.nii.gz: SRA) are stored in "
                                                       "another orientation than most training volumes (RAS)")
    assert orientation_note(table, package) == ""  # a package that does not record it
