"""DICOM Segmentation (SEG) files read as masks with highdicom: the form 3D Slicer, OHIF and other annotation tools
save labels drawn on a DICOM series in. A SEG is the mask of the series it references, read on that series' grid.

Segments are classes: the voxels of segment number N have the label value N (0 where no segment is), so a SEG whose
segments 1 and 2 are liver and tumour is the mask of values 0, 1, 2 (name them in data.classes). Each frame goes to
the slice it was derived from (its referenced SOP instance); slices without frames are background. The voxel
affine is the SEG's own (its frames' orientation, pixel spacing and positions), so that the mask/image grid check
compares it with its image's. As with a series, `seg_image` gives an in-memory `nibabel.Nifti1Image` whose labels
are decoded when asked for, so nothing downstream asks where a mask came from.

Refused with `ImageReadError` naming the file: a DICOM file that is not a SEG, a SEG that references another series
than its image, frames without plane positions, overlapping segments (a voxel in two segments has no one class).
"""

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

from unetflow.io.dicom import LPS_TO_RAS, RT_STRUCTURE_SET, rt_structure_set_problem, series_affine, series_image
from unetflow.io.formats import SEG_SOP_CLASSES, ImageReadError, is_series, sop_class


class SegVoxels:
    """The labels of a SEG on its series' slices (X, Y, Z) as a nibabel data object, decoded by `np.asarray`."""
    slope, inter, ndim = 1.0, 0.0, 3

    def __init__(self, path: Path, seg, slices: list[str], dtype: np.dtype):
        self.path, self.seg, self.slices, self.dtype = path, seg, slices, dtype
        self.shape = (int(seg.Columns), int(seg.Rows), len(slices))

    def __array__(self, dtype=None, copy=None):
        try:
            frames = self.seg.get_pixels_by_source_instance(self.slices, combine_segments=True,
                                                            assert_missing_frames_are_empty=True)
        except RuntimeError as error:
            if "overlap" not in str(error):
                raise
            raise ImageReadError(f"{self.path}: its segments overlap (a voxel lies in several); unetflow reads "
                                 f"segment number N as class value N, so each voxel may be in one segment: export "
                                 f"the segments without overlap") from error
        except ValueError as error:  # e.g. FRACTIONAL segments with values between 0 and 1
            raise ImageReadError(f"{self.path}: its segments cannot be read as one label per voxel of the series' "
                                 f"slices (highdicom: {error}); export a BINARY or LABELMAP SEG drawn on the "
                                 f"series") from error
        return np.transpose(frames, (2, 1, 0)).astype(dtype or self.dtype)  # (slice, row, column) -> (X, Y, Z)


def seg_image(path, image) -> nib.Nifti1Image:
    """The SEG at `path` as the label volume of the series folder `image` (the image it masks)."""
    path = Path(path)
    if not is_series(image):
        raise ImageReadError(f"{path}: a DICOM SEG is the mask of a DICOM series, but its image {image} is not a "
                             f"series folder; pair SEG masks with the series they were drawn on")
    series = series_image(image)
    seg = read_seg(path)
    series_uid, slices = slice_uids(series.dataobj.files)
    check_reference(path, Path(image), seg, series_uid)
    numbers = [int(number) for number in seg.get_segment_numbers()]
    dtype = np.dtype(np.uint8 if max(numbers, default=0) <= 255 else np.uint16)
    step = (LPS_TO_RAS @ series.affine)[:3, 2]
    return nib.Nifti1Image(SegVoxels(path, seg, slices, dtype), seg_affine(path, seg, slices, step), dtype=dtype)


def read_seg(path: Path) -> hd.seg.Segmentation:
    """The SEG at `path`; ImageReadError when the file is DICOM of another kind or unreadable."""
    uid = sop_class(path)
    if uid == RT_STRUCTURE_SET:
        raise ImageReadError(rt_structure_set_problem(path))
    if uid not in SEG_SOP_CLASSES:
        name = pydicom.uid.UID(uid).name if uid else "no SOP class"
        raise ImageReadError(f"{path}: a DICOM file of {name}, not a Segmentation (SEG); a DICOM mask is a SEG file "
                             f"(as 3D Slicer or OHIF save them) or a series folder of label values")
    try:
        return hd.seg.segread(path)
    except (OSError, ValueError, AttributeError, KeyError, EOFError) as error:
        raise ImageReadError(f"{path}: not a readable DICOM SEG ({type(error).__name__}: {error}); export it "
                             f"again") from error


def slice_uids(files: list[Path]) -> tuple[str, list[str]]:
    """The SeriesInstanceUID of a series and the SOPInstanceUIDs of its slice files (in their order)."""
    headers = [pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
               for file in files]
    return str(headers[0].SeriesInstanceUID), [str(header.SOPInstanceUID) for header in headers]


def check_reference(path: Path, image: Path, seg, series_uid: str) -> None:
    """ImageReadError when the SEG does not reference the series of its image, naming both."""
    referenced = sorted({str(series) for _, series, _ in seg.get_source_image_uids()})
    if series_uid not in referenced:
        raise ImageReadError(f"{path}: the SEG references series {', '.join(referenced) or '(none)'}, not the "
                             f"series of its image {image} ({series_uid}); pair each SEG with the series it was "
                             f"drawn on")


def frame_attribute(seg, frame, sequence: str, name: str):
    """An attribute of a frame's functional group `sequence`: the frame's own, else the one all frames share."""
    for groups in (frame, seg.SharedFunctionalGroupsSequence[0]):
        if sequence in groups and name in groups[sequence][0]:
            return groups[sequence][0][name].value
    return None


def seg_affine(path: Path, seg, slices: list[str], step: np.ndarray) -> np.ndarray:
    """The voxel-to-world affine (RAS) of the SEG on its series' slices: orientation and pixel spacing of its frames,
    the origin where its first frame's position and the slice it references put the first slice (`step`: the
    series' slice step in LPS mm)."""
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    position = frame_attribute(seg, frame, "PlanePositionSequence", "ImagePositionPatient")
    orientation = frame_attribute(seg, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = frame_attribute(seg, frame, "PixelMeasuresSequence", "PixelSpacing")
    if position is None or orientation is None or spacing is None:
        raise ImageReadError(f"{path}: its frames lack a plane position, orientation or pixel spacing; unetflow "
                             f"places a SEG on its series by them (3D Slicer, OHIF and highdicom write them)")
    derivation = frame.get("DerivationImageSequence")
    source = str(derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID) if derivation else None
    if source not in slices:
        raise ImageReadError(f"{path}: its first frame references {f'slice {source}' if source else 'no slice'}, "
                             f"which its series lacks; a SEG mask references the slices it was drawn on")
    origin = np.array(position, float) - slices.index(source) * step
    plane = SimpleNamespace(ImageOrientationPatient=orientation, PixelSpacing=spacing, ImagePositionPatient=origin)
    return series_affine(plane, step)
