"""DICOM series (a folder of the slices of one series) as volumes: voxels through the modality LUT, spacing and
orientation from the headers, pairing by folder name with NIfTI masks, inputs to segment, every series that is not
one volume refused naming its folder, and predicted labels written as a DICOM SEG referencing the series."""

import logging
from pathlib import Path

import highdicom as hd
import imagecodecs
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder

from conftest import build_manifest, write_series
from unetflow.data.infer_images import listed_images, output_name
from unetflow.data.pairing import DataValidationError, buried_series, data_files, input_root
from unetflow.infer.summary import unit_summary
from unetflow.io.dicom_seg import segments_of, write_seg
from unetflow.io.nifti import read_volume, volume_spacing
from unetflow.io.sources import read_source_image, source_spacing

SHAPE = (6, 5, 4)  # (columns, rows, slices)
CLASSES = pd.DataFrame({"index": [0, 1], "name": ["background", "organ"], "value": [0, 1], "ignore": False})


def ct(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Random whole-number Hounsfield units."""
    return np.random.default_rng(seed).integers(-1000, 2000, shape).astype(np.int16)


def test_a_series_is_its_volume_with_the_headers_spacing_and_orientation(tmp_path):
    """Voxel (i, j, k) is column i, row j of the k-th slice along the normal, whatever order the files are in, at
    DICOM's patient position of that pixel (LPS), in RAS as a NIfTI affine."""
    volume, angle = ct(), np.deg2rad(30)
    row, column = np.array([np.cos(angle), np.sin(angle), 0.0]), np.array([-np.sin(angle), np.cos(angle), 0.0])
    origin = np.array([-10.0, 5.0, 2.0])
    folder = write_series(tmp_path / "case01", volume, orientation=(*row, *column), origin=origin,
                          positions=[2, 0, 3, 1])
    data, image = read_volume(folder)
    assert data.dtype == np.int16 and np.array_equal(data, volume)  # stored 0..4095, RescaleIntercept -1024
    assert volume_spacing(folder) == pytest.approx((0.8, 0.7, 2.5))  # [column, row, slice] spacing: x, y, z
    for i, j, k in np.ndindex(2, 2, 2):
        i, j, k = 5 * i, 4 * j, 3 * k
        lps = origin + i * 0.8 * row + j * 0.7 * column + k * 2.5 * np.cross(row, column)
        assert image.affine @ [i, j, k, 1] == pytest.approx([-lps[0], -lps[1], lps[2], 1])


def test_a_gantry_tilted_series_keeps_its_sheared_grid_with_a_warning_and_its_true_voxel_volume(tmp_path, caplog):
    folder = write_series(tmp_path / "tilted", ct(), spacing=(1.0, 1.0, 1.0))
    for path in sorted(folder.iterdir()):  # each slice 1 mm further along the normal and tan(15 deg) mm down
        header = pydicom.dcmread(path)
        header.ImagePositionPatient[1] += np.tan(np.deg2rad(15)) * (header.InstanceNumber - 1)
        header.save_as(path)
    with caplog.at_level(logging.WARNING):
        _, image = read_volume(folder)
    assert "tilted: slices stacked 15.0 degrees off their normal (a gantry tilt)" in caplog.text
    assert np.linalg.norm(image.affine[:3, 2]) == pytest.approx(1 / np.cos(np.deg2rad(15)))  # the sheared step
    summary = unit_summary("t", dict(image_path=str(folder), kind="volume", slice_axis=2), slice(0, 4),
                           "t.nii.gz", np.ones((4, 1, 1), np.uint8), np.ones((4, 1, 1)), CLASSES)
    assert summary[-1]["physical_size"] == pytest.approx(4.0)  # 4 voxels of 1 mm^3, not 4.14


def test_a_series_compressed_as_jpeg_lossless_reads_as_its_uncompressed_voxels(tmp_path):
    plain = write_series(tmp_path / "plain", ct())
    lossless = tmp_path / "lossless"  # as a PACS exports it: JPEG Lossless, first-order prediction
    lossless.mkdir()
    for path in plain.iterdir():
        header = pydicom.dcmread(path)
        header.PixelData = encapsulate([imagecodecs.jpeg8_encode(header.pixel_array, lossless=True, bitspersample=16)])
        header["PixelData"].VR, header.file_meta.TransferSyntaxUID = "OB", pydicom.uid.JPEGLosslessSV1
        header.save_as(lossless / path.name, enforce_file_format=True)
    assert np.array_equal(read_volume(lossless)[0], read_volume(plain)[0])


def test_fractional_rescaling_gives_float_voxels(tmp_path):
    volume = np.arange(np.prod(SHAPE)).reshape(SHAPE) * 0.5 - 10
    data, _ = read_volume(write_series(tmp_path / "mr", volume, rescale=(0.5, -10.0), modality="MR"))
    assert data.dtype == np.float32 and np.array_equal(data, volume)


def test_a_series_folder_pairs_with_the_nifti_mask_of_its_name(tmp_path):
    """images/case01/ (a series) pairs with masks/case01.nii.gz, a series beside its mask with case02_mask.nii.gz;
    the masks must lie on the series' grid; ingest's inputs are the slices."""
    volume = ct()
    for folder, mask in ((tmp_path / "images" / "case01", tmp_path / "masks" / "case01.nii.gz"),
                         (tmp_path / "both" / "case02", tmp_path / "both" / "case02_mask.nii.gz")):
        _, image = read_volume(write_series(folder, volume))
        mask.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image((volume > 500).astype(np.uint8), image.affine), mask)
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    row = manifest.iloc[0].to_dict()
    assert (row["id"], row["kind"], row["slices"], row["height"], row["width"]) == ("case01", "volume", 4, 6, 5)
    assert classes["value"].tolist() == [0, 1] and source_spacing(row) == pytest.approx([2.5, 0.8, 0.7])
    assert np.array_equal(read_source_image(row)[0], np.moveaxis(volume, 2, 0))
    assert build_manifest(str(tmp_path / "both"), str(tmp_path / "both"))[0]["id"].tolist() == ["case02"]
    _, image = read_volume(write_series(tmp_path / "pacs" / "case03" / "SE0001", volume))  # a PACS export's layout
    with pytest.raises(DataValidationError, match=r"case03: not a DICOM series, but it holds one deeper \(.*SE0001\)"
                                                  r", which a folder does not name; write '.*pacs/\*\*' to"):
        build_manifest(str(tmp_path / "pacs"), str(tmp_path / "masks"))
    inputs = data_files(dict(images=str(tmp_path / "images"), masks=str(tmp_path / "masks")))
    assert str(tmp_path / "images" / "case01" / "slice003.dcm") in inputs
    assert str(tmp_path / "images" / "case01") not in inputs

    nib.save(nib.Nifti1Image((volume > 500).astype(np.uint8), np.eye(4)), tmp_path / "masks" / "case01.nii.gz")
    with pytest.raises(DataValidationError, match=r"case01.nii.gz: the mask's voxel-to-world affine differs from its "
                                                  r"image case01's"):
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))


def test_images_to_segment_are_a_folder_of_series_or_one_series_named_by_their_folders(tmp_path):
    scans = tmp_path / "scans"
    for name in ("a", "b"):
        write_series(scans / name, ct())
    (scans / "notes").mkdir()
    (scans / "notes" / "readme.txt").write_text("not a series")
    assert listed_images(str(scans)) == [scans / "a", scans / "b"]
    assert [output_name(path, input_root(str(scans))) for path in listed_images(str(scans))] == ["a", "b"]
    assert listed_images(str(scans / "a")) == [scans / "a"]
    assert output_name(scans / "a", input_root(str(scans / "a"))) == "a"
    cd = tmp_path / "cd"  # a DICOM CD: a DICOMDIR at its root, the series deeper
    for patient in ("PAT1", "PAT2"):
        write_series(cd / "DICOM" / patient / "SER1", ct())
    index = pydicom.dcmread(next((cd / "DICOM" / "PAT1" / "SER1").iterdir()))
    index.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    index.save_as(cd / "DICOMDIR")
    assert listed_images(str(cd)) == [] and "holds one deeper" in buried_series(str(cd), "infer.images")[0]
    assert [output_name(path, input_root(f"{cd}/**")) for path in listed_images(f"{cd}/**")] == [
        "DICOM/PAT1/SER1", "DICOM/PAT2/SER1"]  # the root, with its DICOMDIR, is no series


def test_a_seg_holds_each_slices_labels_referencing_that_slice(tmp_path):
    """Labels in array order (slices along the normal, columns, rows) go to the frames of the slices they belong to,
    whatever order the files are in; one segment per foreground class, named after it."""
    folder = write_series(tmp_path / "case01", ct(), positions=[2, 0, 3, 1])
    labels = np.random.default_rng(0).integers(0, 3, (4, 6, 5)).astype(np.uint8)  # (slices, columns, rows)
    classes = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "liver", "tumour"], "value": [0, 1, 2],
                            "ignore": False})
    path = write_seg(tmp_path / "out" / "case01.seg.dcm", labels, dict(image_path=str(folder), kind="volume",
                                                                          slice_axis=2),
                     segments_of(classes, False), "test")
    seg = hd.seg.segread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]
    slices = [pydicom.dcmread(file) for file in sorted(folder.iterdir())]
    assert seg.StudyInstanceUID == slices[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    for file, offset in zip(slices, [2, 0, 3, 1]):
        frame = seg.get_pixels_by_source_instance([file.SOPInstanceUID], combine_segments=True)[0]
        assert np.array_equal(frame, labels[offset].T)  # (rows, columns)
    assert segments_of(classes, True) == {1: "objects"}


# ------------------------------------------------------------------------------------------------ bad series


def several_series(folder: Path) -> None:
    write_series(folder, ct(), description="arterial", prefix="a")
    write_series(folder, ct(), description="venous", prefix="v")


def truncated_slice(folder: Path) -> None:
    write_series(folder, ct())
    path = folder / "slice002.dcm"
    path.write_bytes(path.read_bytes()[:-20])


def slice_without_position(folder: Path) -> None:
    write_series(folder, ct())
    dataset = pydicom.dcmread(folder / "slice001.dcm")
    del dataset.ImagePositionPatient
    dataset.save_as(folder / "slice001.dcm")


UNDECODABLE = pydicom.uid.HTJ2KLossless  # needs pylibjpeg-openjpeg, which unetflow does not install
BAD_SERIES = {
    "several": (several_series, r"case01: holds 2 DICOM series: [\d.]+ \('arterial', 4 files, e.g. a\w+.dcm\); "
                                r"[\d.]+ \('venous', 4 files, e.g. v\w+.dcm\); a series folder must hold one"),
    "missing": (lambda f: write_series(f, ct((6, 5, 5)), positions=[0, 1, 3, 4]),
                r"case01: 1 slice\(s\) missing between slice001.dcm and slice002.dcm \(5 mm apart, the series' slice "
                r"step is 2.5 mm\)"),
    "duplicate": (lambda f: write_series(f, ct(), positions=[0, 1, 1, 2, 3]),
                  r"case01: duplicated slices: slice001.dcm and slice002.dcm lie at the same position"),
    "uneven": (lambda f: write_series(f, ct(), positions=[0, 1, 2, 3.4]),
               r"case01: uneven slice spacing: slice002.dcm and slice003.dcm are 3.5 mm apart, the series' slice step "
               r"is 2.5 mm"),
    "no decoder": (lambda f: write_series(f, ct(), syntax=UNDECODABLE),
                   r"case01: its pixel data is compressed as High-Throughput JPEG 2000 .*, which no installed decoder "
                   r"reads \(the files need not be damaged\); install one of: pylibjpeg - requires .*openjpeg"),
    "truncated": (truncated_slice, r"case01/slice002.dcm: the DICOM pixel data cannot be decoded .*: the file is "
                                   r"truncated or damaged"),
    "no position": (slice_without_position, r"slice001.dcm: lacks ImagePositionPatient, which place a slice"),
}


@pytest.mark.parametrize("kind", sorted(BAD_SERIES))
def test_a_series_that_is_not_one_volume_is_refused_naming_its_folder(tmp_path, kind):
    assert not get_decoder(UNDECODABLE).is_available  # else pick a syntax no installed decoder reads
    write, message = BAD_SERIES[kind]
    write(tmp_path / "images" / "case01")
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), tmp_path / "masks" / "case01.nii.gz")
    with pytest.raises(DataValidationError, match=message):
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
