"""Predicted labels of a DICOM series written as a DICOM Segmentation (SEG) with highdicom: one binary segment per
foreground class (the class name its label; in the instance mode one segment of all objects), each frame referencing
its slice of the series, so that 3D Slicer, OHIF and PACS viewers show it over the scan. Written beside the NIfTI mask
as `<name>.seg.dcm`; frames without any segment are left out."""

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from unetflow.io.dicom import series_files
from unetflow.io.labels import trained_classes
from unetflow.io.sources import slice_axis, to_file_order

SERIES_NUMBER = 900  # the series number of the segmentations (scanners number their series from 1)
# patient and study attributes a SEG copies from its series: type 2 (present, may be empty), often dropped by
# anonymisation; absent ones are copied as empty
PATIENT_AND_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                     "StudyDate", "StudyTime")


def segments_of(classes, instances: bool) -> dict[int, str]:
    """The segments of a SEG of predicted labels: {class index: class name} of the foreground classes, or in the
    instance mode (labels are object ids) {1: 'objects'}."""
    if instances:
        return {1: "objects"}
    return {int(c["index"]): str(c["name"]) for c in trained_classes(classes).to_dict("records") if c["index"] > 0}


def write_seg(path, labels: np.ndarray, row, segments: dict[int, str], version: str) -> Path:
    """Write the labels (Z, Y, X in array order; class indices, or object ids when `segments` is {1: name}, for
    which every non-zero value is the segment) of the DICOM series of `row` as a SEG named `segments` ({label: name},
    label >= 1); `version` is the software version recorded in it."""
    sources = [source_dataset(file) for file in series_files(row["image_path"])]
    frames = np.transpose(to_file_order(labels, slice_axis(row)), (2, 1, 0))  # (X, Y, Z) -> (slice, row, column)
    if list(segments) == [1]:
        frames = frames > 0
    algorithm = hd.AlgorithmIdentificationSequence(name="unetflow", family=codes.cid7162.ArtificialIntelligence,
                                                   version=version)
    descriptions = [hd.seg.SegmentDescription(segment_number=label, segment_label=name,
                                              segmented_property_category=codes.SCT.Tissue,
                                              segmented_property_type=codes.SCT.Tissue,
                                              algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                              algorithm_identification=algorithm)
                    for label, name in segments.items()]
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=frames.astype(np.uint8),
                              segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                              segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                              series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
                              manufacturer="unetflow", manufacturer_model_name="unetflow U-Net",
                              software_versions=version, device_serial_number="none",
                              series_description="unetflow segmentation")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def source_dataset(path: Path) -> pydicom.Dataset:
    """A slice of the series as the SEG references it: its header, with empty PATIENT_AND_STUDY attributes where
    it lacks them."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    for name in PATIENT_AND_STUDY:
        if name not in dataset:
            setattr(dataset, name, "")
    return dataset
