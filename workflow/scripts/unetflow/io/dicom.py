"""DICOM series read as volumes with pydicom: a folder holding the slices of one series (one file per slice) is a 3D
volume, as a NIfTI file is, with its voxel grid from the headers.

The voxel axes are those ITK, SimpleITK and 3D Slicer give a series (and so the NIfTI masks they export): i along a
row (the columns), j down the columns (the rows), k through the slices in order along the slice normal (the cross
product of ImageOrientationPatient's row and column directions, slices sorted by ImagePositionPatient along it). The
spacing is [x, y, z] = [PixelSpacing[1], PixelSpacing[0], slice step] and the voxel-to-world affine is in RAS, as a
NIfTI header's (DICOM's LPS with x and y negated). Voxels are the stored values through the modality LUT
(RescaleSlope and RescaleIntercept): Hounsfield units for CT.

`series_image` gives the series as an in-memory `nibabel.Nifti1Image` whose voxels are decoded only when asked for,
so `unetflow.io.nifti` reads, checks and writes labels for it as for a NIfTI file. A series that is not one complete,
evenly spaced volume (several series in a folder, slices missing, duplicated or unevenly spaced), and pixel data that
no installed decoder reads, raise `ImageReadError` naming the folder.
"""

import functools
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from unetflow.io.formats import ImageReadError, is_dicom_file

SLICE_TOLERANCE = 0.01  # slice steps may differ by 1 % of the median step (rounded positions in the headers)
TILT_DEGREES = 0.5  # slices stacked further than this off their normal (gantry tilt) are logged
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
INTEGER_TYPES = (np.uint8, np.int16, np.uint16, np.int32)
RT_STRUCTURE_SET = pydicom.uid.RTStructureSetStorage


class SeriesVoxels:
    """The voxels of a series (X, Y, Z) as a nibabel data object: its shape and dtype known from the headers, its
    pixel data decoded by `np.asarray`. Unscaled, as nibabel's proxies say (`slope`, `inter`): the modality LUT is
    applied while decoding."""
    slope, inter, ndim = 1.0, 0.0, 3

    def __init__(self, files: list[Path], shape: tuple[int, int, int], dtype: np.dtype):
        self.files, self.shape, self.dtype = files, shape, dtype

    def __array__(self, dtype=None, copy=None):
        voxels = np.empty(self.shape, dtype or self.dtype)
        for index, path in enumerate(self.files):
            voxels[:, :, index] = slice_pixels(path, self.shape[:2]).T  # (rows, columns) -> (X, Y)
        return voxels


def series_image(folder) -> nib.Nifti1Image:
    """The series in `folder` as a NIfTI image (affine and zooms from its headers, voxels decoded on demand)."""
    folder = Path(folder)
    files = sorted(path for path in folder.iterdir() if path.is_file() and is_dicom_file(path))
    return _series_image(folder, tuple((path, path.stat().st_mtime_ns) for path in files))


@functools.lru_cache(maxsize=32)  # every header of a series is read once per change of its files
def _series_image(folder: Path, listing: tuple[tuple[Path, int], ...]) -> nib.Nifti1Image:
    """`series_image` of the files in `listing` (path, modification time): checked, sorted, its grid computed."""
    every = [read_header(path) for path, _ in listing]
    headers = [header for header in every if "PixelData" in header]
    if any(header.get("SOPClassUID") == RT_STRUCTURE_SET for header in every) and not headers:
        raise ImageReadError(rt_structure_set_problem(folder))
    if not headers:
        raise ImageReadError(f"{folder}: holds DICOM files but no images (no pixel data); point at a series folder")
    headers = one_series(folder, headers)
    check_geometry(folder, headers)
    check_decoders(folder, headers)
    headers, step = sorted_slices(folder, headers)
    log_tilt(folder, headers[0], step)
    dtype = voxel_dtype(headers)
    voxels = SeriesVoxels([Path(h.filename) for h in headers],
                          (int(headers[0].Columns), int(headers[0].Rows), len(headers)), dtype)
    return nib.Nifti1Image(voxels, series_affine(headers[0], step), dtype=dtype)


def rt_structure_set_problem(path) -> str:
    """What to do with an RT Structure Set (contours), which unetflow does not read as a mask."""
    return (f"{path}: holds an RT Structure Set (RTSTRUCT contours), which unetflow does not read as a mask; convert "
            f"it to a DICOM SEG or a label NIfTI on its series' grid (3D Slicer, or the rt-utils or dcmrtstruct2nii "
            f"packages) and give that as the mask")


def read_header(path: Path) -> pydicom.Dataset:
    """A slice's header, without its pixel data (the tag is kept, its value not read)."""
    try:
        return pydicom.dcmread(path, defer_size=256)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise ImageReadError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error}); copy or export "
                             f"it again, or remove it from the series folder") from error


def one_series(folder: Path, headers: list) -> list:
    """The headers, or ImageReadError naming every series (in the order of their first files) when the folder holds
    slices of several."""
    series = {}
    for header in headers:
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(header)
    if len(series) == 1:
        return headers
    found = "; ".join(f"{uid or '(no SeriesInstanceUID)'} ({series_label(members[0])}{len(members)} files, e.g. "
                      f"{Path(members[0].filename).name})" for uid, members in series.items())
    raise ImageReadError(f"{folder}: holds {len(series)} DICOM series: {found}; a series folder must hold one, so "
                         f"move each series into a folder of its own")


def series_label(header) -> str:
    """'number 3, 'arterial', ' from a slice's SeriesNumber and SeriesDescription, each only where it is given."""
    number, description = header.get("SeriesNumber"), header.get("SeriesDescription")
    return (f"number {number}, " if number not in (None, "") else "") + (f"'{description}', " if description else "")


def check_geometry(folder: Path, headers: list) -> None:
    """ImageReadError when a slice lacks what places it in space, is not one grey plane, or differs from the first
    slice in orientation, size or pixel spacing."""
    for header in headers:
        missing = [name for name in GEOMETRY if name not in header]
        if missing:
            raise ImageReadError(f"{header.filename}: lacks {', '.join(missing)}, which place a slice in a volume; "
                                 f"only series of slices with a patient position (CT, MR, PET, ...) are volumes")
        if int(header.get("NumberOfFrames", 1) or 1) > 1 or int(header.get("SamplesPerPixel", 1)) != 1:
            raise ImageReadError(f"{header.filename}: a multi-frame or colour DICOM image; unetflow reads series of "
                                 f"one grey slice per file (convert it, e.g. with dcm2niix to NIfTI)")
    first = headers[0]
    for name in ("ImageOrientationPatient", "Rows", "Columns", "PixelSpacing"):
        odd = next((h for h in headers if not np.allclose(np.array(h[name].value, float),
                                                          np.array(first[name].value, float), atol=1e-4)), None)
        if odd is not None:
            raise ImageReadError(f"{folder}: its slices differ in {name} ({Path(first.filename).name}: "
                                 f"{first[name].value}, {Path(odd.filename).name}: {odd[name].value}); a volume's "
                                 f"slices share one grid")


def check_decoders(folder: Path, headers: list) -> None:
    """ImageReadError when the slices' transfer syntax (their pixel data compression) has no installed decoder,
    naming the packages that would decode it."""
    for syntax in sorted({str(h.file_meta.TransferSyntaxUID) for h in headers}):
        uid = pydicom.uid.UID(syntax)
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise ImageReadError(f"{folder}: its pixel data is encoded as {uid.name} ({uid}), for which pydicom has "
                                 f"no decoder; convert the series to an uncompressed transfer syntax (e.g. with "
                                 f"dcmdjpeg or gdcmconv --raw)") from None
        if not decoder.is_available:
            raise ImageReadError(f"{folder}: its pixel data is compressed as {uid.name} ({uid}), which no installed "
                                 f"decoder reads (the files need not be damaged); install one of: "
                                 f"{'; '.join(decoder.missing_dependencies)}")


def sorted_slices(folder: Path, headers: list) -> tuple[list, np.ndarray]:
    """The slices in order along the slice normal and the step from one to the next (a vector in LPS mm); or
    ImageReadError for duplicated positions, missing slices and uneven spacing."""
    normal = slice_normal(headers[0])
    positions = np.array([h.ImagePositionPatient for h in headers], float)
    order = np.argsort(positions @ normal, kind="stable")
    headers, positions = [headers[i] for i in order], positions[order]
    if len(headers) == 1:
        return headers, normal * float(headers[0].get("SpacingBetweenSlices") or headers[0].get("SliceThickness")
                                       or 1.0)
    steps = np.diff(positions @ normal)
    check_slice_steps(folder, headers, steps)
    return headers, (positions[-1] - positions[0]) / (len(headers) - 1)


def slice_normal(header) -> np.ndarray:
    """The unit normal of a slice's plane (LPS): the cross product of its row and column directions."""
    orientation = np.array(header.ImageOrientationPatient, float)
    return np.cross(orientation[:3], orientation[3:])


def log_tilt(folder: Path, first, step: np.ndarray) -> None:
    """A warning for slices stacked at an angle to their normal (a gantry-tilted CT): the grid is kept sheared, as
    the headers give it, the mask written on it; the slices are |step . normal| apart, not |step|."""
    normal = slice_normal(first)
    cosine = abs(float(step @ normal)) / float(np.linalg.norm(step))
    if cosine < np.cos(np.radians(TILT_DEGREES)):
        logging.getLogger(__name__).warning(
            f"{folder}: slices stacked {np.degrees(np.arccos(min(cosine, 1.0))):.1f} degrees off their normal (a "
            f"gantry tilt): read on its sheared grid, with masks written on it; slices {abs(float(step @ normal)):.4g}"
            f" mm apart")


def check_slice_steps(folder: Path, headers: list, steps: np.ndarray) -> None:
    """ImageReadError for the first irregular step between neighbouring slices: a duplicated position, a gap of
    whole steps (missing slices) or an uneven step."""
    typical = float(np.median(steps))
    tolerance = max(SLICE_TOLERANCE * typical, 1e-3)
    for index, step in enumerate(steps):
        names = f"{Path(headers[index].filename).name} and {Path(headers[index + 1].filename).name}"
        if step <= tolerance:
            raise ImageReadError(f"{folder}: duplicated slices: {names} lie at the same position along the slice "
                                 f"normal; remove the copies (or separate series that share the folder)")
        if abs(step - typical) <= tolerance:
            continue
        missing = round(step / typical) - 1
        if missing >= 1 and abs(step - (missing + 1) * typical) <= tolerance:
            raise ImageReadError(f"{folder}: {missing} slice(s) missing between {names} ({step:.4g} mm apart, the "
                                 f"series' slice step is {typical:.4g} mm); copy the complete series")
        raise ImageReadError(f"{folder}: uneven slice spacing: {names} are {step:.4g} mm apart, the series' slice "
                             f"step is {typical:.4g} mm; a volume needs evenly spaced slices (resample it, or split "
                             f"it into evenly spaced series)")


def voxel_dtype(headers: list) -> np.dtype:
    """The dtype of the voxels after the modality LUT: the smallest integer type that holds every value the slices'
    bits, RescaleSlope and RescaleIntercept allow, float32 for fractional rescaling or a lookup table."""
    bounds = []
    for header in headers:
        slope, intercept = float(header.get("RescaleSlope", 1)), float(header.get("RescaleIntercept", 0))
        if "ModalityLUTSequence" in header or not (slope.is_integer() and intercept.is_integer()):
            return np.dtype(np.float32)
        bits = int(header.get("BitsStored", header.get("BitsAllocated", 16)))
        stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if header.get("PixelRepresentation") else (0, 2 ** bits - 1)
        bounds += [value * slope + intercept for value in stored]
    low, high = min(bounds), max(bounds)
    return next((np.dtype(t) for t in INTEGER_TYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max),
                np.dtype(np.float32))


def series_affine(first, step: np.ndarray) -> np.ndarray:
    """The voxel (column, row, slice) to RAS world affine of a series from its first slice and the slice step."""
    orientation = np.array(first.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(s) for s in first.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing  # along a row: the next column
    affine[:3, 1] = orientation[3:] * row_spacing  # down a column: the next row
    affine[:3, 2] = step
    affine[:3, 3] = np.array(first.ImagePositionPatient, float)
    return LPS_TO_RAS @ affine


def slice_pixels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A slice's pixels (rows, columns) through its modality LUT; ImageReadError naming the file when its pixel data
    cannot be decoded."""
    try:
        dataset = pydicom.dcmread(path)
        pixels = apply_modality_lut(dataset.pixel_array, dataset)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError) as error:
        raise ImageReadError(f"{path}: the DICOM pixel data cannot be decoded ({type(error).__name__}: {error}): "
                             f"the file is truncated or damaged; copy or export it again") from error
    if pixels.shape != (shape[1], shape[0]):
        raise ImageReadError(f"{path}: holds pixels of shape {pixels.shape}, not the {shape[1]}x{shape[0]} its "
                             f"header gives; copy or export it again")
    return pixels


def series_files(folder) -> list[Path]:
    """The slice files of the series in `folder` in the order of the volume's slices (along the slice normal)."""
    return series_image(folder).dataobj.files
