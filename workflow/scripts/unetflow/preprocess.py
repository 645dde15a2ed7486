"""Preprocessing: intensity normalisation and label mapping into compact per-case arrays."""

from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.io import read_image, read_mask


def normalize(image: np.ndarray, method: str = "zscore", clip_percentiles=None) -> np.ndarray:
    """(H, W, C) image of any dtype -> (C, H, W) float32, z-scored per channel, optionally percentile-clipped first."""
    channels = image.astype(np.float32).transpose(2, 0, 1)
    if clip_percentiles is not None:
        low, high = np.percentile(channels, clip_percentiles, axis=(1, 2), keepdims=True)
        channels = np.clip(channels, low, high)
    if method == "zscore":
        mean = channels.mean(axis=(1, 2), keepdims=True)
        std = channels.std(axis=(1, 2), keepdims=True)
        return (channels - mean) / np.maximum(std, 1e-8)
    if method == "minmax":
        low, high = channels.min(axis=(1, 2), keepdims=True), channels.max(axis=(1, 2), keepdims=True)
        return (channels - low) / np.maximum(high - low, 1e-8)
    raise ValueError(f"preprocess.normalization: unknown method '{method}' (zscore or minmax)")


def map_labels(mask: np.ndarray, values: list[int]) -> np.ndarray:
    """Stored mask values -> class indices 0..K-1 (values[k] becomes k), as uint8."""
    lookup = np.zeros(int(max(mask.max(), max(values))) + 1, np.uint8)
    lookup[np.asarray(values)] = np.arange(len(values))
    return lookup[mask]


def class_values(classes: pd.DataFrame) -> list[int]:
    """The stored mask value of each class index, in index order."""
    return classes.sort_values("index")["value"].astype(int).tolist()


def preprocess_case(row: pd.Series, values: list[int], out_dir: str, normalization: str,
                    clip_percentiles) -> dict:
    """Normalise one case's image, map its mask, save both to out_dir/<id>.npz; return its manifest row."""
    image = normalize(read_image(row["image_path"]), normalization, clip_percentiles)
    labels = map_labels(read_mask(row["mask_path"]), values)
    path = Path(out_dir, f"{row['id']}.npz")
    np.savez(path, image=image.astype(np.float16), labels=labels)
    return dict(id=row["id"], array_path=str(path), height=labels.shape[0], width=labels.shape[1],
                channels=image.shape[0], foreground_fraction=float((labels > 0).mean()))


def load_case(array_path: str) -> tuple[np.ndarray, np.ndarray]:
    """A preprocessed case: image (C, H, W) float32 and labels (H, W) uint8."""
    with np.load(array_path) as arrays:
        return arrays["image"].astype(np.float32), arrays["labels"]
