"""Masks in DICOM: a DICOM SEG (as 3D Slicer or OHIF save labels drawn on a series) or a series of label values,
paired with its image series as NIfTI masks are, read on the series' grid (segment number N = class value N), and
refused naming the file when it is not a SEG, references another series, overlaps or lies on another grid."""

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import build_manifest, write_seg_mask, write_series
from unetflow.data.pairing import DataValidationError, data_files
from unetflow.io.formats import case_stem, is_series
from unetflow.io.nifti import read_volume, volume_grid
from unetflow.io.sources import read_source_mask

SHAPE = (6, 5, 4)  # (columns, rows, slices)
POSITIONS = [2, 0, 3, 1]  # the slices' files out of order


def ct(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, SHAPE).astype(np.int16)


def labels_of(seed: int = 0) -> np.ndarray:
    """Labels 0, 1, 2 (X, Y, Z) with slice 3 left empty (a SEG leaves its frame out)."""
    labels = np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)
    labels[:, :, 3] = 0
    return labels


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_a_seg_is_the_label_volume_of_its_series_segment_number_as_value(tmp_path, kind):
    folder = write_series(tmp_path / "case01", ct(), positions=POSITIONS)
    labels = labels_of()
    seg = write_seg_mask(tmp_path / "case01.seg.dcm", folder, labels, kind)
    assert len(hd.seg.segread(seg).PerFrameFunctionalGroupsSequence) < 2 * SHAPE[2]  # empty frames left out
    data, image = read_volume(seg, folder)
    assert data.dtype == np.uint8 and np.array_equal(data, labels)
    assert np.allclose(image.affine, read_volume(folder)[1].affine)
    assert volume_grid(seg, folder)[0] == SHAPE
    assert case_stem(seg) == "case01" and not is_series(tmp_path)  # a folder of SEG files is no series


def test_seg_masks_and_label_series_pair_with_their_image_series(tmp_path):
    """images/case01/ pairs with masks/case01.seg.dcm, images/case02/ with masks/case02/ (a series of labels);
    both read back as the labels in array order, classes their values; ingest's inputs include the SEG."""
    for index, name in enumerate(("case01", "case02")):
        folder = write_series(tmp_path / "images" / name, ct(index), positions=POSITIONS)
        if name == "case01":
            write_seg_mask(tmp_path / "masks" / f"{name}.seg.dcm", folder, labels_of(index))
        else:
            write_series(tmp_path / "masks" / name, labels_of(index).astype(float), positions=POSITIONS,
                         rescale=(1.0, 0.0), description="labels")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert manifest["mask_path"].tolist() == [str(tmp_path / "masks" / "case01.seg.dcm"),
                                              str(tmp_path / "masks" / "case02")]
    assert classes["value"].tolist() == [0, 1, 2]
    for index, row in enumerate(manifest.to_dict("records")):
        assert np.array_equal(read_source_mask(row), np.moveaxis(labels_of(index), 2, 0))
    inputs = data_files(dict(images=str(tmp_path / "images"), masks=str(tmp_path / "masks")))
    assert str(tmp_path / "masks" / "case01.seg.dcm") in inputs


# ------------------------------------------------------------------------------------------------ refusals


def overlapping(tmp_path, folder):
    both = np.zeros((*SHAPE, 2), bool)
    both[1:4, 1:3, 1, 0] = both[2, 2, 1, 1] = True  # voxel (2, 2, 1) in segments 1 and 2
    write_seg_mask(tmp_path / "masks" / "case01.seg.dcm", folder, both)


def other_series(tmp_path, folder):
    other = write_series(tmp_path / "other", ct(1), description="other")
    write_seg_mask(tmp_path / "masks" / "case01.seg.dcm", other, labels_of())


def other_pixel_spacing(tmp_path, folder):
    path = write_seg_mask(tmp_path / "masks" / "case01.seg.dcm", folder, labels_of())
    seg = pydicom.dcmread(path)
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [1.4, 1.6]
    seg.save_as(path)


def fractional(tmp_path, folder):
    write_seg_mask(tmp_path / "masks" / "case01.seg.dcm", folder, np.full(SHAPE, 0.5), "FRACTIONAL")


BAD_MASKS = {
    "overlap": (overlapping, r"masks/case01.seg.dcm: its segments overlap \(a voxel lies in several\)"),
    "other series": (other_series, r"masks/case01.seg.dcm: the SEG references series [\d.]+, not the series of its "
                                   r"image .*images/case01 \([\d.]+\); pair each SEG with the series it was drawn on"),
    "geometry": (other_pixel_spacing, r"masks/case01.seg.dcm: the mask's voxel-to-world affine differs from its image "
                                      r"case01's: .*voxel sizes \[1.6, 1.4, 2.5\] vs \[0.8, 0.7, 2.5\] mm"),
    "fractional": (fractional, r"masks/case01.seg.dcm: its segments cannot be read as one label per voxel .*"
                               r"MaximumFractionalValue.*; export a BINARY or LABELMAP SEG"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MASKS))
def test_a_dicom_mask_that_does_not_fit_its_series_is_refused_naming_it(tmp_path, kind):
    write, message = BAD_MASKS[kind]
    folder = write_series(tmp_path / "images" / "case01", ct(), positions=POSITIONS)
    write(tmp_path, folder)
    with pytest.raises(DataValidationError, match=message):
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))


def test_a_seg_paired_with_a_nifti_image_is_refused_naming_both(tmp_path):
    folder = write_series(tmp_path / "series", ct())
    write_seg_mask(tmp_path / "masks" / "case01.seg.dcm", folder, labels_of())
    (tmp_path / "images").mkdir()
    nib.save(nib.Nifti1Image(ct(), np.eye(4)), tmp_path / "images" / "case01.nii.gz")
    with pytest.raises(DataValidationError, match=r"masks/case01.seg.dcm: a DICOM SEG is the mask of a DICOM "
                                                  r"series, but its image .*images/case01.nii.gz is not a series"):
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))


def test_a_dicom_mask_file_that_is_not_a_seg_is_refused_naming_its_kind(tmp_path):
    """A single DICOM file as a mask (here a CT slice, listed in a manifest) is read only as a SEG."""
    folder = write_series(tmp_path / "images" / "case01", ct())
    (folder / "slice001.dcm").rename(tmp_path / "case01.dcm")
    write_series(folder, ct())
    (tmp_path / "manifest.csv").write_text("image,mask\nimages/case01,case01.dcm\n")
    with pytest.raises(DataValidationError, match=r"case01.dcm: a DICOM file of CT Image Storage, not a "
                                                  r"Segmentation \(SEG\); a DICOM mask is a SEG file"):
        build_manifest(manifest=str(tmp_path / "manifest.csv"))


def write_rt_structure_set(path, series) -> None:
    """A minimal RT Structure Set (contours, no pixel data) referencing the series in `series`."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = pydicom.uid.RTStructureSetStorage, hd.UID()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta, dataset.Modality = meta, "RTSTRUCT"
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID = hd.UID()
    dataset.StructureSetLabel = "contours"
    dataset.ReferencedFrameOfReferenceSequence = []
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_an_rt_structure_set_as_a_mask_is_refused_as_unsupported_saying_how_to_convert_it(tmp_path, layout):
    folder = write_series(tmp_path / "images" / "case01", ct())
    mask = tmp_path / "masks" / ("case01.dcm" if layout == "file" else "case01/rtstruct.dcm")
    write_rt_structure_set(mask, folder)
    name = "masks/case01.dcm" if layout == "file" else "masks/case01"  # a folder of structure sets: one series
    (tmp_path / "manifest.csv").write_text(f"image,mask\nimages/case01,{name}\n")
    with pytest.raises(DataValidationError, match=rf"{name}: holds an RT Structure Set \(RTSTRUCT contours\), which "
                                                  r"unetflow does not read as a mask; convert it to a DICOM SEG"):
        build_manifest(manifest=str(tmp_path / "manifest.csv"))
