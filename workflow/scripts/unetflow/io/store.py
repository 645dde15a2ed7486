"""The stored (preprocessed) sources: one folder per source holding its arrays in array order as .npy files, which
load whole or memory-mapped (read by region):

- `image.npy`: the normalised image (C, Z, Y, X) as float16 (half the memory of float32; consumers convert batches);
- `labels.npy`: its class indices (Z, Y, X) uint8 (IGNORE_INDEX = ignored voxel);
- instance mode: `instances.npy`, the object ids (Z, Y, X) uint16 or uint32, and for the target `weight_map`
  `weights.npy`, the per-voxel loss weights (Z, Y, X) float16;
- with a region of interest (`data.rois`): `roi.npy`, (Z, Y, X) bool, where validation scores (as evaluate does).

The preprocess table (`preprocess/manifest.parquet`) lists every stored source: id, kind, array_path (its folder),
slices, height, width (as stored: resampled or scaled), channels, original_slices, original_height, original_width
(the file's, in array order), spacing (array order, as stored; None for 2D files and stacks), class_voxels (per
class index) and foreground_fraction.
"""

from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_DTYPE = np.float16
KEYS = ("image", "labels", "instances", "weights", "roi")


def save_source(folder, source_id: str, image: np.ndarray, labels: np.ndarray, instances: np.ndarray | None = None,
                weights: np.ndarray | None = None, roi: np.ndarray | None = None) -> Path:
    """Write one source's arrays to folder/<source_id>/ (the image as IMAGE_DTYPE, the others as given); its path."""
    path = Path(folder, source_id)
    path.mkdir(parents=True, exist_ok=True)
    arrays = dict(image=image.astype(IMAGE_DTYPE), labels=labels, instances=instances, weights=weights, roi=roi)
    for key, array in arrays.items():
        if array is not None:
            np.save(path / f"{key}.npy", np.ascontiguousarray(array))
    return path


def has_array(path, key: str) -> bool:
    """Whether the stored source at `path` holds the array `key`."""
    return Path(path, f"{key}.npy").is_file()


def load_array(path, key: str, mmap: bool = False) -> np.ndarray:
    """One array of a stored source (memory-mapped read-only with `mmap`); KeyError naming the folder when absent."""
    file = Path(path, f"{key}.npy")
    if not file.is_file():
        raise KeyError(f"{path}: no stored '{key}' array (instance ids and loss weights are stored in the instance "
                       f"mode only); run the preprocess rule again")
    return np.load(file, mmap_mode="r" if mmap else None)


def load_training_arrays(path) -> tuple[np.ndarray, ...]:
    """A stored source for training: (image, labels), or (image, labels, weights) when it has loss weights."""
    keys = ("image", "labels", "weights") if has_array(path, "weights") else ("image", "labels")
    return tuple(load_array(path, key) for key in keys)


def stored_paths(table: pd.DataFrame, ids: list[str]) -> list[str]:
    """The folders of the stored sources `ids`, in that order (`table`: the preprocess table)."""
    return table.set_index("id").loc[list(ids), "array_path"].tolist()
