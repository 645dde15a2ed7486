"""Masks published as a folder of files, one binary mask per object, as the DSB 2018 nuclei (BBBC038) are:
`<case>/masks/<object>.png`. Read as one mask: object ids in file-name order (the instance mode), or their union."""

import numpy as np

from unetflow.io.formats import ImageReadError, object_files
from unetflow.io.images import is_lossy_mask, read_mask


def object_pixels(path) -> np.ndarray:
    """Where one object mask (H, W) marks its object: any nonzero value or colour; of a lossy (JPEG) file, values
    above half its largest."""
    values = read_mask(path)
    values = values.max(axis=-1) if values.ndim == 3 else values
    return values > (values.max() / 2 if is_lossy_mask(path) else 0)


def read_object_masks(folder, ids: bool) -> np.ndarray:
    """An object folder as one mask (H, W): with `ids` object k (1, 2, ... in file-name order; uint16, uint32 past
    65535 objects) where the k-th file marks its object, a later file over an earlier one where they overlap;
    else the objects' union as 0/255 (one foreground class). ImageReadError for files of another size."""
    files = object_files(folder)
    combined = None
    for index, path in enumerate(files, start=1):
        pixels = object_pixels(path)
        if combined is None:
            combined = np.zeros(pixels.shape, np.uint32 if len(files) > 65535 else np.uint16)
        if pixels.shape != combined.shape:
            raise ImageReadError(f"{path}: {pixels.shape[0]}x{pixels.shape[1]} px but {files[0].name} of the same "
                                 f"object folder is {combined.shape[0]}x{combined.shape[1]}; export every object "
                                 f"mask at its image's size")
        combined[pixels] = index
    return combined if ids else np.where(combined > 0, 255, 0).astype(np.uint8)
