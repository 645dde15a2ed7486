"""A source (one image file with its mask, a row of the ingest manifest) read as arrays in array order, and arrays
in array order written back in the file's own axis order.

Array order: (Z, Y, X) with channels first for images, (C, Z, Y, X). Z is the slice axis: the pages of a TIFF stack,
the axis `slice_axis` of a NIfTI volume (its other two axes follow in stored order), and length 1 for a 2D file.
Every array after reading is in this order, so nothing downstream asks what kind of file it came from.

A source's `kind` is 'image' (a 2D file), 'stack' (a multi-page TIFF: independent 2D pages, no spacing) or 'volume'
(a NIfTI file: one 3D image with a voxel spacing). Its units (`units`) are what is scored and summarised as one: a
2D file, each page of a stack, a volume as a whole.
"""

from pathlib import Path

import numpy as np

from unetflow.io.formats import is_object_folder, is_volume
from unetflow.io.images import is_lossy_mask, read_image, read_mask, read_mask_stack, read_stack
from unetflow.io.labels import ID_LIMIT, LABEL_LIMIT, LabelCoding, integer_labels, map_labels, mask_values
from unetflow.io.nifti import read_on_grid, read_volume, volume_grid, volume_spacing
from unetflow.io.object_masks import read_object_masks

KINDS = ("image", "stack", "volume")


def source_kind(image: Path, info: dict) -> str:
    """'volume' for NIfTI files, 'stack' for multi-page TIFFs (`info`: `image_info` of the file), else 'image'."""
    if is_volume(image):
        return "volume"
    return "stack" if info["depth"] > 1 else "image"


def volume_slice_axis(path, axis: int) -> int:
    """The axis a volume's slices are cut along: `axis`, unless the volume is one voxel thick along another axis (a 2D
    image stored as NIfTI), which is then its only slice."""
    thin = [index for index, length in enumerate(volume_grid(path)[0]) if length == 1]
    return axis if not thin or axis in thin else thin[-1]


def to_array_order(array: np.ndarray, axis: int) -> np.ndarray:
    """A volume's stored (X, Y, Z[, C]) array with its slice `axis` moved first: (Z, ...) in array order."""
    return np.moveaxis(array, axis, 0)


def to_file_order(array: np.ndarray, axis: int) -> np.ndarray:
    """An array in array order (Z, ...) back in a volume's stored axis order."""
    return np.moveaxis(array, 0, axis)


def array_spacing(file_spacing, axis: int) -> list[float]:
    """A per-axis list in the file's axis order (x, y, z of a NIfTI header) in array order: the slice `axis` first."""
    return [float(file_spacing[axis]), *(float(s) for a, s in enumerate(file_spacing) if a != axis)]


def file_spacing(spacing, axis: int) -> list[float]:
    """A per-axis list in array order back in the file's axis order (`array_spacing` inverted)."""
    rest = list(spacing[1:])
    return [float(spacing[0]) if a == axis else float(rest.pop(0)) for a in range(3)]


def slice_axis(row) -> int:
    """The slice axis of a row's volume (0 for 2D files and stacks, whose pages are the first axis)."""
    return int(row["slice_axis"]) if row["kind"] == "volume" else 0


def source_spacing(row) -> list[float] | None:
    """The voxel spacing of a row's volume in array order, from its header; None for 2D files and stacks."""
    if row["kind"] != "volume":
        return None
    return array_spacing(volume_spacing(row["image_path"]), slice_axis(row))


def read_source_image(row) -> np.ndarray:
    """The row's image as (C, Z, Y, X) in array order, in its stored dtype (uint8/uint16 or float32)."""
    kind, path = row["kind"], row["image_path"]
    if kind == "volume":
        channels = read_volume(path, channels=True)[0]
        return np.stack([to_array_order(channels[..., index], slice_axis(row)) for index in range(channels.shape[-1])])
    pages = read_stack(path) if kind == "stack" else read_image(path)[None]
    return np.ascontiguousarray(np.moveaxis(pages, -1, 0))


def read_source_mask(row, colour: bool = False, ids: bool = False) -> np.ndarray:
    """The row's mask as stored values (Z, Y, X), or colours (Z, Y, X, 3) when `colour`; with `ids` (instance masks)
    values above 65535 are read as uint32. A label volume is read in its image's orientation (`read_on_grid`), a
    DICOM SEG mask on the grid of its series, the row's image; a folder of object masks as their ids with `ids`, else
    their union (`read_object_masks`)."""
    kind, path = row["kind"], row["mask_path"]
    limit = ID_LIMIT if ids else LABEL_LIMIT
    if kind == "volume":
        return to_array_order(integer_labels(path, read_on_grid(path, row["image_path"]), limit), slice_axis(row))
    if kind == "stack":
        return read_stack(path) if colour else read_mask_stack(path, limit)
    if is_object_folder(path):
        return read_object_masks(path, ids)[None]
    if colour:
        image = read_image(path)
        return np.repeat(image, 3, axis=2)[None] if image.shape[2] == 1 else image[None]
    return read_mask(path, limit)[None]


def read_source_roi(row) -> np.ndarray | None:
    """The row's region of interest (Z, Y, X) bool: the voxels of its `roi_path` file that are > 0 in any channel (in
    a lossy JPEG file, those above half its largest value); None without one."""
    path = row.get("roi_path")
    if path is None or path != path:  # no ROI (None or NaN)
        return None
    if is_volume(path):
        return to_array_order(read_on_grid(path, row["image_path"]) > 0, slice_axis(row))
    masks = read_source_mask(dict(row, mask_path=path))
    inside = masks > (masks.max() / 2 if is_lossy_mask(path) else 0)
    return inside.any(axis=-1) if inside.ndim == 4 else inside


def snapped(coding: LabelCoding, path) -> bool:
    """Whether the values of the mask file `path` are snapped to the nearest class: every mask with
    data.lossy_masks: snap (the coding's `snap`), lossy files (JPEG, JPEG-compressed TIFF) always."""
    return coding.snap or is_lossy_mask(path)


def source_labels(row, classes) -> tuple[np.ndarray, int]:
    """The row's mask as class indices (Z, Y, X) uint8 (ignored voxels IGNORE_INDEX), the ground truth as training
    and evaluation see it, and the number of lossy-mask pixels snapped to the nearest class."""
    coding = LabelCoding.of(classes)
    masks = read_source_mask(row, coding.colors is not None)
    mapped, changed = zip(*(mask_values(mask, coding, snapped(coding, row["mask_path"]), row["mask_path"])
                            for mask in masks))
    if coding.colors is None:
        mapped = [map_labels(values, coding.values, coding.ignored) for values in mapped]
    return np.stack(mapped), int(sum(changed))


def units(row) -> list[tuple[str, slice]]:
    """What is scored and summarised as one, as (name, slices of Z): a 2D file or a volume as a whole (the row's id),
    each page of a stack on its own (`<id>_s<page>`)."""
    if row["kind"] == "stack":
        return [(f"{row['id']}_s{page}", slice(page, page + 1)) for page in range(int(row["slices"]))]
    return [(str(row["id"]), slice(0, int(row["slices"])))]


def unit_spacing(row, unit: slice, pixel_spacing=None) -> list[float] | None:
    """The spacing a unit is scored with, one entry per axis of its array (`unit_array`): a volume's header spacing
    (in-plane only for a one-slice unit), else `pixel_spacing` (evaluate.spacing, [x, y]) as (y, x), or None."""
    spacing = source_spacing(row)
    if spacing is not None:
        return spacing if unit.stop - unit.start > 1 else spacing[1:]
    return None if pixel_spacing is None else [float(pixel_spacing[1]), float(pixel_spacing[0])]


def constant_channels(image: np.ndarray) -> list[int]:
    """The channels of a source image (C, ...) of several that hold a single value (a modality missing, all zeros)."""
    flat = image.reshape(len(image), -1)
    return [int(c) for c in np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))] if len(image) > 1 else []


def is_grey_colour(image: np.ndarray) -> bool:
    """Whether a read image (C, ...) is a colour image whose three channels are equal: a grey picture saved as RGB."""
    return len(image) == 3 and np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2])


def unit_array(array: np.ndarray, unit: slice) -> np.ndarray:
    """A unit's part of a source array (Z, Y, X, ...): 2D (Y, X, ...) for a one-slice unit, else 3D."""
    part = array[unit]
    return part[0] if len(part) == 1 else part
