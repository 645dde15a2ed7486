"""Preprocessing: intensity normalisation and label mapping of every case into the stored case format."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from unetflow.cases import save_case
from unetflow.instances import instance_target, three_class_target
from unetflow.labels import IGNORE_INDEX
from unetflow.sources import case_instance_ids, case_labels, row_kind, source_images


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) image with `channels` channels: RGB to grey by luminance (ITU-R BT.601, as OpenCV), grey repeated
    into RGB, unchanged when it has them already."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, channels, axis=2)


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


def network_input(image: np.ndarray, channels: int, normalization: str, clip_percentiles) -> np.ndarray:
    """A read (H, W, C) image as the network sees it: `channels` channels, normalised, (C, H, W) float32."""
    return normalize(to_channels(image, channels), normalization, clip_percentiles)


def preprocess_source(rows: pd.DataFrame, classes: pd.DataFrame, out_dir: str, normalization: str,
                      clip_percentiles) -> list[dict]:
    """Preprocess every row of one source (a 2D file, a TIFF stack or a volume, read once); one case per row."""
    first = rows.iloc[0]
    images = source_images(first)
    results = []
    instances = case_instance_ids(rows) if instance_target(classes) else [None] * len(rows)
    labels_of_rows = [three_class_target(ids) for ids in instances] if instance_target(classes) else \
        case_labels(rows, classes)
    for (_, row), labels, ids in zip(rows.iterrows(), labels_of_rows, instances):
        image = images[int(row["slice"]) if row_kind(first) != "image" else 0]
        image = network_input(image, int(row.get("input_channels", image.shape[2])), normalization,
                              clip_percentiles)
        path = save_case(Path(out_dir, f"{row['id']}.npz"), image, labels, ids)
        results.append(dict(id=row["id"], array_path=str(path), height=labels.shape[0], width=labels.shape[1],
                            channels=image.shape[0],
                            foreground_fraction=float(((labels > 0) & (labels != IGNORE_INDEX)).mean())))
    return results


def preprocess_cases(manifest: pd.DataFrame, classes: pd.DataFrame, out_dir: str, cfg: dict,
                     threads: int = 1) -> pd.DataFrame:
    """Preprocess every case of the manifest into out_dir (cfg: normalization, clip_percentiles), each source in
    a thread of its own; the preprocess manifest (id, array_path, height, width, channels, foreground_fraction)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sources = [rows for _, rows in manifest.groupby("image_path", sort=False)]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        done = pool.map(lambda rows: preprocess_source(rows, classes, out_dir, cfg["normalization"],
                                                       cfg["clip_percentiles"]), sources)
        return pd.DataFrame([row for source_rows in done for row in source_rows])
