"""Multi-slice sources (multi-page TIFF stacks, NIfTI volumes): reading them as 2D slices and reassembling them.

A manifest row of a slice has `kind` 'stack' or 'volume', `slice` (its index along the slicing axis) and `volume`
(the source's stem). Volumes are sliced along `axis` (0, 1 or 2 of the stored X, Y, Z array); a slice keeps the
other two axes in order, so `stack_slices(slices, axis)` rebuilds the stored array exactly.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import tifffile

from unetflow.io import ImageReadError, VOLUME_SUFFIXES, read_stack, read_volume, volume_grid, write_volume

GRID_TOLERANCE_VOXELS = 0.1  # how far (in voxels) a mask's voxel may lie from the image's and still match it


def is_volume(path) -> bool:
    """True for NIfTI files (.nii, .nii.gz)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def grid_problem(image, other, what: str) -> str | None:
    """A problem when the NIfTI `other` (the mask or region of interest of the volume `image`) is not on the
    image's voxel grid: another shape, or an affine that puts a corner voxel more than GRID_TOLERANCE_VOXELS image
    voxels away from the image's voxel of the same index (small float differences between headers pass)."""
    try:
        (shape, affine), (other_shape, other_affine) = volume_grid(image), volume_grid(other)
    except ImageReadError as error:
        return str(error)
    if other_shape != shape:
        return f"{other}: the {what} has shape {other_shape} but its image {Path(image).name} has {shape}"
    corners = np.array([[*corner, 1] for corner in np.ndindex(2, 2, 2)]) * [*(np.array(shape) - 1), 1]
    moved = (np.linalg.inv(affine) @ other_affine @ corners.T).T[:, :3] - corners[:, :3]
    offset = float(np.abs(moved).max())
    if offset > GRID_TOLERANCE_VOXELS:
        return (f"{other}: the {what}'s voxel-to-world affine differs from its image {Path(image).name}'s: it puts "
                f"voxels up to {offset:.3g} voxels away (voxel sizes {voxel_sizes(other_affine)} vs "
                f"{voxel_sizes(affine)} mm); resample it onto the image's grid or fix its header")
    return None


def voxel_sizes(affine: np.ndarray) -> list[float]:
    """The voxel size along each array axis of a voxel-to-world affine, rounded to 4 significant digits."""
    return [float(f"{size:.4g}") for size in np.linalg.norm(affine[:3, :3], axis=0)]


def volume_slice_axis(path, axis: int) -> int:
    """The axis to cut a volume into slices along: `axis`, unless the volume is one voxel thick along another
    axis (a 2D image stored as NIfTI), which is then its only slice."""
    thin = [index for index, length in enumerate(volume_grid(path)[0]) if length == 1]
    return axis if not thin or axis in thin else thin[-1]


def volume_image_slices(path, axis: int) -> np.ndarray:
    """A NIfTI image volume as (S, H, W, 1) slices along `axis` (NaN/Inf and 4D refused by `read_volume`)."""
    data, _ = read_volume(path)
    return np.moveaxis(data, axis, 0)[..., None]


def whole_labels(path, values: np.ndarray) -> np.ndarray:
    """Label values as uint8/uint16, refusing fractional, negative or too large ones (float label volumes are fine
    when every value is a whole number)."""
    if values.dtype in (np.uint8, np.uint16):
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8)
    if values.size and (np.any(values != np.round(values)) or values.min() < 0 or values.max() > 65535):
        raise ImageReadError(f"{path}: labels must be whole numbers in 0..65535 ({values.dtype} values from "
                             f"{values.min()} to {values.max()} found); save the label volume as integers")
    return values.astype(np.uint8 if values.size == 0 or values.max() <= 255 else np.uint16)


def volume_mask_slices(path, axis: int) -> np.ndarray:
    """A NIfTI label volume as (S, H, W) integer slices along `axis`."""
    data, _ = read_volume(path)
    return np.moveaxis(whole_labels(path, data), axis, 0)


def stack_image_slices(path) -> np.ndarray:
    """A multi-page TIFF image as (S, H, W, C) slices."""
    return read_stack(path)


def stack_mask_slices(path) -> np.ndarray:
    """A multi-page TIFF mask as (S, H, W) label slices, or (S, H, W, 3) for RGB colour masks."""
    try:
        with tifffile.TiffFile(path) as tif:
            stored, axes = tif.series[0].asarray(), tif.series[0].axes
    except (ValueError, OSError, IndexError, tifffile.TiffFileError) as error:
        raise ImageReadError(f"{path}: the TIFF data cannot be decoded: the file is truncated or corrupt "
                             f"({type(error).__name__}: {error}); copy or export it again") from error
    if axes.endswith("S"):
        stored = stored[..., :3].reshape(-1, *stored.shape[-3:-1], min(3, stored.shape[-1]))
    else:
        stored = stored.reshape(-1, *stored.shape[-2:])
    return whole_labels(path, stored)


def stack_slices(labels_by_slice, axis: int = 2) -> np.ndarray:
    """Rebuild a volume from its 2D slices in slice order (a sequence of arrays, or a {slice index: array} dict)."""
    if isinstance(labels_by_slice, dict):
        indices = sorted(labels_by_slice)
        if indices != list(range(len(indices))):
            raise ValueError(f"slices {indices} are not the complete range 0..{len(indices) - 1}")
        labels_by_slice = [labels_by_slice[i] for i in indices]
    return np.stack(list(labels_by_slice), axis=axis)


def write_volume_labels(path, labels_by_slice, reference_path, axis: int = 2) -> None:
    """Write predicted slices as one NIfTI label volume with the affine and header of the input `reference_path`."""
    write_volume(path, stack_slices(labels_by_slice, axis), nib.load(reference_path))


def volume_rows(manifest: pd.DataFrame) -> pd.Series:
    """Which manifest rows are slices of a NIfTI volume (manifests without a `kind` column hold 2D cases)."""
    return manifest["kind"] == "volume" if "kind" in manifest else pd.Series(False, manifest.index)


def is_volume_unit(rows: pd.DataFrame) -> bool:
    """Whether a prediction unit (see `prediction_units`) is a NIfTI volume."""
    return bool(volume_rows(rows).iloc[0])


def volume_slices(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The manifest rows of every NIfTI volume, {volume stem: its rows sorted by slice}."""
    is_slice = volume_rows(manifest)
    if not is_slice.any():
        return {}
    return {name: rows.sort_values("slice") for name, rows in manifest[is_slice].groupby("volume")}


def volume_suffix(path) -> str:
    """'.nii.gz' or '.nii', the suffix a prediction of the volume at `path` is written with."""
    return ".nii.gz" if Path(path).name.lower().endswith(".nii.gz") else ".nii"


def prediction_units(cases: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """What is predicted and evaluated as one: each NIfTI volume (its slices in order), every other case alone."""
    single = cases.loc[~volume_rows(cases), "id"]
    return list(volume_slices(cases).items()) + [(case_id, cases[cases["id"] == case_id]) for case_id in single]


def prediction_path(out_dir, name: str, rows: pd.DataFrame) -> Path:
    """Where the prediction of a unit goes: <volume>.nii[.gz] for a volume, <id>.png otherwise."""
    suffix = volume_suffix(rows.iloc[0]["image_path"]) if is_volume_unit(rows) else ".png"
    return Path(out_dir, name + suffix)
