"""Preprocessing: the settings as applied (`auto` resolved from the data-set fingerprint), intensity normalisation,
resampling of volumes to the target spacing and label mapping of every case into the stored case format."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from unetflow.data.normalization import normalize_together, normalize_with
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.nifti import volume_spacing
from unetflow.io.resample import (
    in_plane,
    resample_image,
    resample_labels,
    resample_nearest,
    resampled_shape,
    resize_image,
)
from unetflow.io.sources import case_targets, row_kind, source_images
from unetflow.io.store import save_case


def preprocess_settings(cfg: dict, fingerprint: dict) -> dict:
    """The preprocessing as applied (stored beside the cases and in model packages): the normalisation scheme with
    its statistics and the target voxel spacing, `auto` taken from the fingerprint, each with its source (cases are
    stored resampled in-plane; 3D training and prediction also resample the slice axis: `resample_slice_axis_3d`),
    and `weight_map`: w0 and sigma of the instance target's loss weights (the config's, only in that mode; else
    None); ValueError naming the key when the scheme needs statistics the training cases do not give."""
    scheme, scheme_source = applied_value(cfg, "normalization", fingerprint, "normalization")
    if scheme == "ct" and fingerprint["ct"] is None:
        raise ValueError("preprocess.normalization: ct needs the intensities of the training cases' foreground, but "
                         "their masks have no foreground voxels; use zscore or window")
    spacing, spacing_source = applied_value(cfg, "spacing", fingerprint, "target_spacing")
    scale, scale_source = applied_value(cfg, "scale", fingerprint, "scale")
    return dict(normalization=scheme, normalization_source=scheme_source, per_volume=True,
                clip_percentiles=cfg["clip_percentiles"] if scheme in ("zscore", "minmax") else None,
                ct=fingerprint["ct"] if scheme == "ct" else None, window=cfg["window"] if scheme == "window" else None,
                spacing=None if spacing is None else [float(size) for size in spacing], spacing_source=spacing_source,
                resample_slice_axis_3d=True,
                scale=float(scale), scale_source=scale_source, weight_map=cfg.get("weight_map"))


def applied_value(cfg: dict, key: str, fingerprint: dict, planned: str) -> tuple:
    """A preprocess setting and its source: the config's value, or for `auto` the fingerprint's `planned` value
    with its reason."""
    if cfg[key] != "auto":
        return cfg[key], "config"
    return fingerprint[planned], f"auto: {fingerprint[planned + '_reason']}"


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) image with `channels` channels: RGB to grey by luminance (ITU-R BT.601, as OpenCV), grey repeated
    into RGB, unchanged when it has them already."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)[..., None]
    return np.repeat(image, channels, axis=2)


def network_images(images: np.ndarray, channels: int, settings: dict, voxel_spacing=None,
                   axis: int = 2) -> list[np.ndarray]:
    """The read slices (S, H, W, C) of one source as the network sees them, (C, H', W') float32 each: `channels`
    channels, normalised (`settings`: see `preprocess_settings`); a NIfTI volume (`voxel_spacing` given, sliced
    along `axis`) normalised as one and resampled in-plane to settings['spacing'], other images resized by
    settings['scale']."""
    converted = [to_channels(image, channels) for image in images]
    if voxel_spacing is None or not settings.get("per_volume", False):  # packages before per-volume schemes
        normalised = [normalize_with(image, settings) for image in converted]
    else:
        normalised = normalize_together(np.stack(converted), settings)
    if voxel_spacing is None:
        shape = scaled_shape(normalised[0].shape[1:], settings.get("scale", 1.0))
        return [resize_image(image, shape) for image in normalised]
    if settings.get("spacing") is None:
        return normalised
    shape = resampled_shape(normalised[0].shape[1:], in_plane(voxel_spacing, axis), in_plane(settings["spacing"], axis))
    return [resample_image(image, shape) for image in normalised]


def scaled_shape(shape, scale: float) -> tuple[int, ...]:
    """A 2D image's (H, W) resized by `scale` (each side at least 1)."""
    return tuple(max(1, round(side * scale)) for side in shape)


def source_spacing(row) -> list[float] | None:
    """The voxel spacing of a row's source when it is a NIfTI volume, else None (2D files carry none)."""
    return list(volume_spacing(row["image_path"])) if row_kind(row) == "volume" else None


def preprocess_source(rows: pd.DataFrame, classes: pd.DataFrame, out_dir: str, settings: dict) -> list[dict]:
    """Preprocess every row of one source (a 2D file, a TIFF stack or a volume, read once); one case per row, with
    its stored and original slice size (`settings`: see `preprocess_settings`)."""
    first = rows.iloc[0]
    images, spacing = source_images(first), source_spacing(first)
    network = network_images(images, int(first.get("input_channels", images.shape[3])), settings, spacing,
                             int(first["slice_axis"]) if spacing is not None else 2)
    labels_of_rows, instances, weights_of_rows = case_targets(rows, classes, settings.get("weight_map"))
    instances, weights_of_rows = instances or [None] * len(rows), weights_of_rows or [None] * len(rows)
    results = []
    for (_, row), labels, ids, weights in zip(rows.iterrows(), labels_of_rows, instances, weights_of_rows):
        image = network[int(row["slice"]) if row_kind(first) != "image" else 0]
        original = labels.shape
        if image.shape[1:] != original:
            labels = resample_labels(labels, image.shape[1:])
            ids = None if ids is None else resample_nearest(ids, image.shape[1:])
            weights = None if weights is None else resample_nearest(weights, image.shape[1:])
        path = save_case(Path(out_dir, f"{row['id']}.npz"), image, labels, ids, weights)
        results.append(dict(id=row["id"], array_path=str(path), height=labels.shape[0], width=labels.shape[1],
                            channels=image.shape[0], original_height=original[0], original_width=original[1],
                            foreground_fraction=float(((labels > 0) & (labels != IGNORE_INDEX)).mean())))
    return results


def preprocess_cases(manifest: pd.DataFrame, classes: pd.DataFrame, out_dir: str, settings: dict,
                     threads: int = 1) -> pd.DataFrame:
    """Preprocess every case of the manifest into out_dir (`settings`: see `preprocess_settings`), each source in a
    thread of its own; the preprocess manifest (id, array_path, height, width, channels, original_height,
    original_width, foreground_fraction)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sources = [rows for _, rows in manifest.groupby("image_path", sort=False)]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        done = pool.map(lambda rows: preprocess_source(rows, classes, out_dir, settings), sources)
        return pd.DataFrame([row for source_rows in done for row in source_rows])
