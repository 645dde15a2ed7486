"""Multi-slice sources (multi-page TIFF stacks, NIfTI volumes): reading them as 2D slices and reassembling them.

A manifest row of a slice has `kind` 'stack' or 'volume', `slice` (its index along the slicing axis) and `volume`
(the source's stem). Volumes are sliced along `axis` (0, 1 or 2 of the stored X, Y, Z array); a slice keeps the
other two axes in order, so `stack_slices(slices, axis)` rebuilds the stored array exactly.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.io.formats import ImageReadError
from unetflow.io.labels import integer_labels
from unetflow.io.nifti import read_volume, volume_grid, volume_spacing, write_label_volume
from unetflow.io.resample import resampled_shape

GRID_TOLERANCE_VOXELS = 0.1  # how far (in voxels) a mask's voxel may lie from the image's and still match it


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


def volume_mask_slices(path, axis: int) -> np.ndarray:
    """A NIfTI label volume as (S, H, W) integer slices along `axis`."""
    data, _ = read_volume(path)
    return np.moveaxis(integer_labels(path, data), axis, 0)


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
    write_label_volume(path, stack_slices(labels_by_slice, axis), reference_path)


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


def prediction_units(cases: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """What is predicted and evaluated as one: each NIfTI volume (its slices in order), every other case alone."""
    single = cases.loc[~volume_rows(cases), "id"]
    return list(volume_slices(cases).items()) + [(case_id, cases[cases["id"] == case_id]) for case_id in single]


def slice_axis_target(settings: dict) -> list[float] | None:
    """The target spacing (X, Y, Z) along whose slice-axis entry 3D models see volumes (`settings`: preprocessing
    as applied): settings['spacing'], or None (each volume's own slices) for settings written before 3D training
    resampled the slice axis (`resample_slice_axis_3d`) and for spacing null."""
    return settings.get("spacing") if settings.get("resample_slice_axis_3d") else None


def target_slice_count(rows: pd.DataFrame, target_spacing) -> int:
    """How many slices a NIfTI volume (its manifest rows, one per slice) has on `target_spacing` (X, Y, Z) along
    its slice axis, from the voxel spacing of its image's header; its own count when `target_spacing` is None."""
    if target_spacing is None:
        return len(rows)
    first = rows.iloc[0]
    axis = int(first["slice_axis"])
    own = volume_spacing(first["image_path"])[axis]
    return resampled_shape((len(rows),), (own,), (target_spacing[axis],))[0]
