"""The stored case format: one uncompressed .npz per case with the normalised image (C, H, W) as float16 and
its class indices (H, W) as uint8 (IGNORE_INDEX = ignored pixel); in the instance mode also the object ids (H, W)
of the mask (key `instances`, uint16 or uint32) and, for the target `weight_map`, the per-pixel loss weights (H, W)
(key `weights`, float16)."""

from pathlib import Path

import numpy as np
import pandas as pd

CASE_IMAGE_DTYPE = np.float16  # half the memory of float32; consumers convert batches


def save_case(path, image: np.ndarray, labels: np.ndarray, instances: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> Path:
    """Write one case: the image (C, H, W) as CASE_IMAGE_DTYPE, the labels (H, W), object ids and weights as given."""
    extra = {key: value for key, value in (("instances", instances), ("weights", weights)) if value is not None}
    np.savez(path, image=image.astype(CASE_IMAGE_DTYPE), labels=labels, **extra)
    return Path(path)


def load_case(array_path: str) -> tuple[np.ndarray, np.ndarray]:
    """A stored case: image (C, H, W) float16 and labels (H, W) uint8."""
    with np.load(array_path) as arrays:
        return arrays["image"], arrays["labels"]


def load_instances(array_path: str) -> np.ndarray:
    """The object ids (H, W) of a case stored in the instance mode; KeyError naming the file otherwise."""
    with np.load(array_path) as arrays:
        if "instances" not in arrays:
            raise KeyError(f"{array_path}: no object ids stored; preprocess the data set with data.instances: true")
        return arrays["instances"]


def load_training_case(array_path: str) -> tuple[np.ndarray, ...]:
    """A stored case for training: (image, labels), or (image, labels, weights) when it has loss weights."""
    with np.load(array_path) as arrays:
        return (arrays["image"], arrays["labels"], *([arrays["weights"]] if "weights" in arrays else []))


def load_cases(preprocessed: pd.DataFrame, ids: list[str], weights: bool = False) -> list[tuple[np.ndarray, ...]]:
    """(image, labels) arrays of the given cases (`preprocessed`: the preprocess manifest with id, array_path), with
    `weights` (image, labels, weights) for cases stored with loss weights."""
    paths = preprocessed.set_index("id").loc[ids, "array_path"]
    return [load_training_case(path) if weights else load_case(path) for path in paths]


def off_file_grid(arrays: pd.DataFrame) -> pd.Series:
    """Which rows of a preprocess manifest preprocessing stored on another grid than their file's (a volume
    resampled or an image scaled); none for manifests without the original sizes."""
    if "original_height" not in arrays:
        return pd.Series(False, arrays.index)
    return (arrays["height"] != arrays["original_height"]) | (arrays["width"] != arrays["original_width"])
