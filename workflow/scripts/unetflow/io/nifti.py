"""Reading and writing NIfTI volumes (.nii, .nii.gz) with nibabel: voxels, voxel grid, spacing, label volumes.
A DICOM series folder is read here as a NIfTI file is, through the in-memory NIfTI image `unetflow.io.dicom` makes
of it; labels of it are written as NIfTI. A DICOM SEG mask is read so too (`unetflow.io.seg_masks`), given the
series it belongs to (`image`).

Volumes come back as 3D (X, Y, Z) arrays as stored (float32 when the header scales the values). Every problem with
a file raises `ImageReadError` naming the file.
"""

import struct
import zlib
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

from unetflow.io.dicom import series_image
from unetflow.io.formats import (
    DICOM_SUFFIX,
    VOLUME_SUFFIXES,
    ImageReadError,
    checked,
    decode_failed,
    format_of,
    is_series,
)
from unetflow.io.labels import ID_LIMIT, label_dtype
from unetflow.io.seg_masks import seg_image

GRID_TOLERANCE_VOXELS = 0.1  # how far (in voxels) a mask's voxel may lie from the image's and still match it
UNCHANGED = [[0, 1], [1, 1], [2, 1]]  # the orientation transform that keeps every voxel axis as it is


def grid_check(image, other, what: str) -> tuple[str | None, bool]:
    """Whether the NIfTI `other` (the mask or region of interest of the volume `image`) is on the image's voxel grid
    once reoriented to the image's orientation (`reorientation`): a problem (another shape, or an affine that puts a
    corner voxel more than GRID_TOLERANCE_VOXELS image voxels away from the image's voxel of the same index; small
    float differences between headers pass) or None, and whether it is stored in another orientation."""
    try:
        (shape, affine), (other_shape, other_affine) = volume_grid(image), volume_grid(other, image)
    except ImageReadError as error:
        return str(error), False
    transform = reorientation(other_affine, affine)
    reoriented = not np.array_equal(transform, UNCHANGED)
    other_affine = other_affine @ nib.orientations.inv_ornt_aff(transform, other_shape)
    other_shape = tuple(int(n) for n in np.array(other_shape)[np.argsort(transform[:, 0])])
    if other_shape != shape:
        return f"{other}: the {what} has shape {other_shape} but its image {Path(image).name} has {shape}", reoriented
    corners = np.array([[*corner, 1] for corner in np.ndindex(2, 2, 2)]) * [*(np.array(shape) - 1), 1]
    moved = (np.linalg.inv(affine) @ other_affine @ corners.T).T[:, :3] - corners[:, :3]
    offset = float(np.abs(moved).max())
    if offset > GRID_TOLERANCE_VOXELS:
        return (f"{other}: the {what}'s voxel-to-world affine differs from its image {Path(image).name}'s: it puts "
                f"voxels up to {offset:.3g} voxels away (voxel sizes {voxel_sizes(other_affine)} vs "
                f"{voxel_sizes(affine)} mm); resample it onto the image's grid or fix its header"), reoriented
    return None, reoriented


def reorientation(affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform that swaps and reverses the voxel axes of a volume with `affine` into the
    orientation of `target_affine` (identity where they agree): lossless, as 3D Slicer or MONAI's Orientationd
    reorient."""
    orientations = nib.orientations
    return orientations.ornt_transform(orientations.io_orientation(affine), orientations.io_orientation(target_affine))


def read_on_grid(path, image) -> np.ndarray:
    """A mask or region of interest (X, Y, Z) of the volume `image`, its voxel axes in the image's orientation."""
    data, volume = read_volume(path, image)
    return nib.orientations.apply_orientation(data, reorientation(volume.affine, volume_grid(image)[1]))


def voxel_sizes(affine: np.ndarray) -> list[float]:
    """The voxel size along each array axis of a voxel-to-world affine, rounded to 4 significant digits."""
    return [float(f"{size:.4g}") for size in np.linalg.norm(affine[:3, :3], axis=0)]

_DECODE_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, struct.error, zlib.error,
                  nib.filebasedimages.ImageFileError)


def _open(path, image=None) -> tuple[Path, str, "nib.Nifti1Image"]:
    """The path, format name and image (header read, data left on disk) of a NIfTI file, a DICOM series folder, or
    a DICOM SEG file (*.dcm), the mask of the series folder `image`."""
    if is_series(path):
        return Path(path), "DICOM", series_image(path)
    if str(path).lower().endswith(DICOM_SUFFIX):
        if image is None:
            raise ImageReadError(f"{path}: a single DICOM file is read as a DICOM SEG mask only, paired with the "
                                 f"series it was drawn on; an image is a series folder")
        return Path(path), "DICOM SEG", seg_image(path, image)
    path, fmt = checked(path, VOLUME_SUFFIXES, "a volume")
    try:
        return path, fmt, nib.load(path)
    except _DECODE_ERRORS as error:
        raise decode_failed(path, fmt, error) from error


def volume_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of a volume: trailing length-1 axes dropped, a 2D image given depth 1, a 4th axis (channels:
    `volume_channels`) left out; 5D+ refused."""
    shape = vector_as_channels(tuple(shape))
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise ImageReadError(f"{path}: a {len(shape)}D volume of shape {shape}; volumes are 3D, or 4D with the "
                             f"channels (modalities) along the 4th axis")
    return (shape[:3] + (1, 1))[:3]


def vector_as_channels(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A stored shape with ITK's vector-image layout (X, Y, Z, 1, C: a time axis of one, then the components) as
    (X, Y, Z, C); other shapes as they are."""
    return shape[:3] + shape[4:] if len(shape) == 5 and shape[3] == 1 else shape


def volume_channels(shape: tuple[int, ...]) -> int:
    """The channels of a volume of stored `shape`: the length of its 4th axis, as the Medical Segmentation Decathlon
    stores the modalities of a case, or of ITK's vector components (`vector_as_channels`); 1 without one."""
    shape = vector_as_channels(tuple(shape))
    return int(shape[3]) if len(shape) > 3 else 1


def _volume_dtype(image) -> np.dtype:
    """The dtype `read_volume` returns: the stored one, or float32 when the header scales the values."""
    scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
    return np.dtype(np.float32) if scaled else np.dtype(image.get_data_dtype())


def volume_info(path) -> dict:
    """Height, width (the first two axes), depth (the third) and dtype of a volume, from its header only."""
    path, _, image = _open(path)
    shape = volume_shape(path, image.shape)
    return dict(height=shape[0], width=shape[1], channels=volume_channels(image.shape), dtype=_volume_dtype(image).name,
                depth=shape[2])


def volume_grid(path, image=None) -> tuple[tuple[int, int, int], np.ndarray]:
    """The 3D shape (see `volume_shape`) and the voxel-to-world affine of a NIfTI file, from its header (of a DICOM
    SEG: as the mask of the series `image`)."""
    path, _, volume = _open(path, image)
    return volume_shape(path, volume.shape), volume.affine


def volume_spacing(path) -> tuple[float, float, float]:
    """The voxel size along each of the three axes, from the header's zooms (1 for axes a 2D file lacks)."""
    zooms = tuple(float(z) for z in _open(path)[2].header.get_zooms()[:3])
    return (zooms + (1.0, 1.0))[:3]


def spacing_mismatch(path) -> bool:
    """Whether a volume's header zooms (pixdim: the spacing it is measured and resampled with) differ by over 1 % from
    the voxel sizes of its affine (the sform or qform that places it): a header written inconsistently."""
    volume = _open(path)[2]
    zooms = np.array(volume.header.get_zooms()[:3], float)
    return not np.allclose(zooms, np.linalg.norm(volume.affine[:3, :3], axis=0)[:len(zooms)], rtol=0.01)


def axis_codes(path) -> str:
    """Where each voxel axis of a volume points, from its affine (nibabel's axcodes: 'RAS', 'LPS', 'SRA' for a volume
    stored slices first); '' where the affine tells none (a 2D file's)."""
    try:
        codes = nib.aff2axcodes(volume_grid(path)[1])
    except ValueError:  # a degenerate affine
        return ""
    return "".join(codes) if all(codes) else ""


def usual_axis_codes(codes) -> str:
    """The `axis_codes` most of the volumes have, of their `codes` ('' for none)."""
    found = Counter(code for code in codes if code)
    return found.most_common(1)[0][0] if found else ""


def voxel_volume(path) -> float:
    """The volume of one voxel: |det| of the affine's 3x3 part (the product of the zooms but on a sheared grid, a
    gantry-tilted series', whose zooms overstate it)."""
    return float(abs(np.linalg.det(_open(path)[2].affine[:3, :3])))


def volume_unit(path) -> str:
    """The unit of the voxel spacing from the header: 'mm', 'um' or 'm'; 'mm' when the header leaves it unset (as
    ITK and most scanners' files mean it)."""
    unit = _open(path)[2].header.get_xyzt_units()[0]
    return {"micron": "um", "meter": "m"}.get(unit, "mm")


def read_volume(path, reference=None, channels: bool = False) -> tuple[np.ndarray, "nib.Nifti1Image"]:
    """A NIfTI volume as a 3D (X, Y, Z) array (stored dtype, float32 if scaled), with `channels` a 4D (X, Y, Z, C)
    one (see `volume_channels`), and the nibabel image; a DICOM SEG as the mask of the series `reference`.

    Raises ImageReadError for channels where none are asked for (a label volume), NaN or Inf values, and
    non-numeric (e.g. RGB) voxels.
    """
    path, fmt, image = _open(path, reference)
    shape, count = volume_shape(path, image.shape), volume_channels(image.shape)
    if count > 1 and not channels:
        raise ImageReadError(f"{path}: a 4D volume of shape {image.shape} where labels are read; store the labels "
                             f"as one 3D volume")
    shape = shape + (count,) if channels else shape
    dtype = _volume_dtype(image)
    if dtype.kind not in "iuf":
        raise ImageReadError(f"{path}: voxels of type {dtype} are not numbers; store one intensity per voxel")
    try:
        data = np.asarray(image.dataobj, dtype=dtype).reshape(shape)
    except ImageReadError:  # said by the reader of a DICOM series, naming the slice
        raise
    except _DECODE_ERRORS as error:
        raise decode_failed(path, fmt, error) from error
    if dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ImageReadError(f"{path}: {np.count_nonzero(~np.isfinite(data))} voxels are NaN or Inf; "
                             f"replace them (e.g. by the background value) before training")
    return data, image


def write_volume(path, labels: np.ndarray, like) -> None:
    """Write a 3D integer label volume in the stored shape, affine and header of the reference nibabel image
    `like`, without its intensity scaling, display range and description (which describe the image, not labels);
    as uint8 or uint16, or uint32 above 65535 (instance ids offset slice by slice)."""
    path = Path(path)
    format_of(path, VOLUME_SUFFIXES, "a volume")
    labels = np.asarray(labels)
    if labels.shape != volume_shape(path, like.shape):
        raise ValueError(f"{path}: labels of shape {labels.shape} do not match the reference volume {like.shape}")
    stored = like.shape[:3] if volume_channels(like.shape) > 1 else like.shape  # labels of an image of channels
    labels = labels.astype(label_dtype(path, labels, ID_LIMIT)).reshape(stored)
    image = type(like)(labels, like.affine, like.header)
    image.set_data_dtype(labels.dtype)
    image.header.set_slope_inter(1, 0)
    image.header["cal_min"] = image.header["cal_max"] = 0
    image.header["descrip"] = b""
    nib.save(image, path)


def write_label_volume(path, labels: np.ndarray, reference_path) -> None:
    """`write_volume` with the header of the NIfTI file (or DICOM series) at `reference_path` (the image the labels
    belong to)."""
    write_volume(path, labels, _open(reference_path)[2])


def write_image_volume(path, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3D array (an image or labels, in its own dtype) as a NIfTI volume with the voxel-to-world `affine`."""
    path = Path(path)
    format_of(path, VOLUME_SUFFIXES, "a volume")
    nib.save(nib.Nifti1Image(np.asarray(image), np.asarray(affine, float)), path)
    return path
